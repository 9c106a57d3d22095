"""The loop passes the label options through to its stages (pull.label_model, dpo/reward data.weighting and
data.ties), keeps what they need (p_chosen, tie rows) in the round's labels run, and the report shows the labels
each round spent: records pushed, votes, gold votes and how votes became labels."""

from __future__ import annotations

import json

import pytest

from align.core import runs
from align.core.errors import AlignError
from align.loop.config import stage_config
from align.loop.labels import write_labels_run
from align.loop.report import write_report
from align.loop.rounds import LabelSummary, RoundSummary

DPO_WIRING = {"model": "embedded", "data.train": "x", "runs_dir": ".", "name": "x"}


def test_pull_label_model_and_training_weighting_and_ties_reach_the_stage_configs():
    pull = stage_config("pull", {"label_model": "dawid_skene"}, {"dataset": "x", "runs_dir": ".", "name": "x"})
    assert pull.label_model == "dawid_skene"
    assert stage_config("pull", {}, {"dataset": "x", "runs_dir": ".", "name": "x"}).label_model == "majority"
    dpo = stage_config(
        "dpo",
        {"config": "configs/dpo/default.yaml", "data": {"weighting": "label_smoothing", "ties": "davidson"}},
        DPO_WIRING,
    )
    assert (dpo.data.weighting, dpo.data.ties) == ("label_smoothing", "davidson")
    reward = stage_config(
        "reward",
        {"config": "configs/reward/default.yaml", "data": {"weighting": "weight", "ties": "rao_kupper"}},
        {"data.train": "x", "runs_dir": ".", "name": "x"},
    )
    assert (reward.data.weighting, reward.data.ties) == ("weight", "rao_kupper")


def test_a_bad_label_option_in_a_loop_section_names_the_section():
    with pytest.raises(AlignError, match="loop section 'pull'"):
        stage_config("pull", {"label_model": "median"}, {"dataset": "x", "runs_dir": ".", "name": "x"})
    with pytest.raises(AlignError, match="loop section 'dpo'"):
        stage_config("dpo", {"config": "configs/dpo/default.yaml", "data": {"ties": "keep"}}, DPO_WIRING)


def _run(runs_dir, stage, name, metrics, notes=None, rows=None):
    with runs.new_run(stage, {}, runs_dir, name) as run:
        if rows is not None:
            (run.path / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            run.add_output("preferences", "preferences.jsonl", rows=len(rows))
        run.metrics.update(metrics)
        run.notes.update(notes or {})
        return runs.finish(run)["path"]


def _row(prompt, p_chosen, tie=False):
    turn = [{"role": "assistant", "content": prompt + " reply"}]
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": turn,
        "rejected": turn,
        "tie": tie,
        "p_chosen": p_chosen,
        "majority": "tie" if tie else "a",
        "label_model": "dawid_skene",
        "votes": [{"annotator": "sim-ana", "choice": "tie" if tie else "a"}, {"annotator": "sim-bad", "choice": "b"}],
    }


def test_the_labels_run_keeps_posteriors_and_ties_for_the_training_stage(tmp_path):
    rows = [_row("one", 0.93), _row("two", None, tie=True)]
    pull = _run(tmp_path, "annotate pull", "pull", {"records": 2, "votes": 4}, rows=rows)
    manifest = write_labels_run([(1, pull)], [], tmp_path, "labels", {})
    written = [json.loads(line) for line in (tmp_path / "labels" / "preferences.jsonl").read_text().splitlines()]
    assert [r["p_chosen"] for r in written] == [0.93, None] and [r["tie"] for r in written] == [False, True]
    assert manifest["metrics"]["records"] == 2


def test_the_report_shows_the_labels_each_round_spent(tmp_path):
    rows = [_row("one", 0.93), _row("two", None, tie=True)]
    pull = _run(
        tmp_path,
        "annotate pull",
        "pull",
        {"records": 2, "votes": 4, "gold_votes": 6, "gold_records": 2, "ties": 1},
        notes={"label_model": {"method": "dawid_skene"}},
        rows=rows,
    )
    push = _run(tmp_path, "annotate push", "push", {"records": 17, "gold_records": 2})
    lab = LabelSummary.from_pull_run(pull, push=push)
    assert (lab.records_pushed, lab.records, lab.votes, lab.gold_votes, lab.label_model) == (17, 2, 4, 6, "dawid_skene")
    old = LabelSummary.from_pull_run(_run(tmp_path, "annotate pull", "old", {"records": 2, "votes": 4}, rows=rows))
    assert (old.records_pushed, old.gold_votes, old.label_model) == (None, 0, None)  # a pull from before
    page = write_report(
        tmp_path / "report.html",
        [RoundSummary(0, "embedded"), RoundSummary(1, "runs/dpo", labels=lab)],
        {"title": "t", "recipe": "t", "loop_dir": str(tmp_path)},
    ).read_text()
    assert "<th>records pushed</th>" in page and "<th>gold votes</th>" in page and "<th>labels by</th>" in page
    assert "<td class='num'>17</td><td class='num'>2</td><td class='num'>4</td><td class='num'>6</td>" in page
    assert "<td>dawid_skene</td>" in page
