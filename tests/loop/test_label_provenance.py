"""The report's "annotated by" cell comes from a real pull's vote counts (simulated votes are known by user id).

Pairs are pushed to the real local Argilla, answered by `align annotate simulate` (and, in the mixed test, by a
person through the REST API as the web UI does), pulled with `align annotate pull`, and the report is built from
that pull run.
"""

from __future__ import annotations

import re

import pytest

from align.annotate import simulate
from align.loop.report import write_report
from align.loop.rounds import LabelSummary, RoundSummary
from tests.annotate.test_annotate_simulate import PAIRS, pull_run, push_pairs, server_responses, sim_config

pytestmark = pytest.mark.integration
# Usernames of this file only: the session's Argilla is shared, and a name another test's simulator made is refused.


def labels_cell(page: str, round_: int) -> str:
    """The last cell (annotated by) of the round's row in the labels table."""
    table = page[page.index("<h2>Labels per round</h2>") : page.index("<h2>Wall time per step</h2>")]
    row = re.search(rf"<tr><td class='num'>{round_}</td>(.*?)</tr>", table).group(1)
    return re.findall(r"<td>(.*?)</td>", row)[-1]


def report_from(tmp_path, pull_dir) -> str:
    rounds = [RoundSummary(0, "embedded"), RoundSummary(1, "runs/dpo", labels=LabelSummary.from_pull_run(pull_dir))]
    return write_report(tmp_path / "report.html", rounds, {"title": "labels"}).read_text()


def test_a_simulated_pull_is_reported_as_simulated(argilla, tmp_path):
    push_pairs(argilla, tmp_path, "prov-sim", PAIRS[:4], per_record=3)
    simulate.run(sim_config(argilla, tmp_path, "prov-sim", ["prov-pia", "prov-quin", "prov-rex"]))
    manifest, _ = pull_run(argilla, tmp_path, "prov-sim")
    assert (manifest["metrics"]["simulated_votes"], manifest["metrics"]["human_votes"]) == (12, 0)
    labels = LabelSummary.from_pull_run(manifest["path"])
    assert (labels.simulated_votes, labels.human_votes, labels.annotated_by) == (12, 0, "simulated")
    cell = labels_cell(report_from(tmp_path, manifest["path"]), 1)
    assert cell == "simulated (12 votes)"
    assert "people" not in cell


def test_a_round_with_a_person_and_simulated_annotators_shows_both(argilla, tmp_path):
    push_pairs(argilla, tmp_path, "prov-mixed", PAIRS[:3], per_record=2)
    record = next(iter(server_responses(argilla, "prov-mixed").values()))
    argilla.annotator("prov-pat").respond(record["id"], preference="A")
    simulate.run(sim_config(argilla, tmp_path, "prov-mixed", ["prov-sol", "prov-tom"]))
    manifest, _ = pull_run(argilla, tmp_path, "prov-mixed")
    assert (manifest["metrics"]["simulated_votes"], manifest["metrics"]["human_votes"]) == (5, 1)
    assert labels_cell(report_from(tmp_path, manifest["path"]), 1) == "both: 5 simulated, 1 by people"
