"""Gold records, the annotator panel and annotation integrity against the real local Argilla.

A careful and a careless simulated annotator (answering by the brand-voice rubric through the REST API,
as people would in the UI) label a dataset with gold records mixed in: the panel flags the careless
one and not the careful one, gold votes never reach preferences.jsonl, and nothing on the server
tells a gold record or the A/B order apart. Two annotator users then check that GET /api/v1/records/{id}
shows each only their own response.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.annotate import pull, push, simulate, status
from align.annotate.votes import record_id
from align.core.errors import AlignError
from tests.annotate.test_annotate_simulate import (
    BAD,
    BARE,
    GOOD,
    RUBRIC,
    annotators_file,
)

pytestmark = pytest.mark.integration

SHORT = "Orders ship when they ship."  # rubric well below BARE and GOOD


def pair_rows(tag: str, n: int) -> list[dict]:
    better = [GOOD, BARE, GOOD]
    worse = [BAD, SHORT, BARE + " NOW."]
    rows = []
    for i in range(n):
        a, b = better[i % 3], worse[i % 3]
        if i % 2:  # the better reply is candidate b on every other pair
            a, b = b, a
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"When will my order ship? ({tag} {i})"}],
                "response_a": a,
                "response_b": b,
                "source": "customers.jsonl",
                "policy": "runs/sft",
            }
        )
    return rows


@pytest.fixture(scope="module")
def labelled(argilla, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in pair_rows("pair", 12)))
    gold = tmp / "gold.jsonl"
    gold_rows = []
    for i, r in enumerate(pair_rows("extra", 12)):
        better = "b" if i % 2 else "a"  # pair_rows puts the better reply at b on odd rows
        if i % 4 == 3:  # the other accepted form: chosen/rejected
            gold_rows.append(
                {
                    "prompt": r["prompt"][0]["content"],
                    "chosen": r[f"response_{better}"],
                    "rejected": r["response_b" if better == "a" else "response_a"],
                }
            )
        else:
            gold_rows.append({**r, "expected": better})
    gold.write_text("".join(json.dumps(r) + "\n" for r in gold_rows))
    journal = str(tmp / "journal")
    manifest = push.run(
        push.Config(
            pairs=str(pairs),
            dataset="integrity",
            guidelines="brand_voice",
            gold=push.GoldConfig(path=str(gold), rate=0.5),
            journal_dir=journal,
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp / "runs"),
        )
    )
    team = annotators_file(
        tmp / "team.yaml", [{"username": "sim-careful"}, {"username": "sim-careless", "bias_a": 0.9, "noise": 0.9}]
    )
    simulate.run(
        simulate.Config(
            dataset="integrity",
            annotators=team,
            judge="brand_voice",
            rubric=RUBRIC,
            journal_dir=journal,
            runs_dir=str(tmp / "runs"),
            argilla=argilla.argilla_config(),
        )
    )
    pulled = pull.run(
        pull.Config(
            dataset="integrity", journal_dir=journal, argilla=argilla.argilla_config(), runs_dir=str(tmp / "runs")
        )
    )
    return {"tmp": tmp, "push": manifest, "pull": pulled, "journal": journal, "gold_rows": gold_rows}


def test_gold_records_are_mixed_in_and_look_like_any_other(argilla, labelled):
    assert labelled["push"]["metrics"]["gold_records"] == 12  # rate 0.5 of 24 records
    records = [json.loads(line) for line in (Path(labelled["push"]["path"]) / "records.jsonl").read_text().splitlines()]
    gold_ids = {r["record_id"] for r in records if r["gold"]}
    assert len(records) == 24 and len(gold_ids) == 12
    on_server = argilla.records_by_id("integrity")
    assert set(on_server) == {r["record_id"] for r in records}
    for rec in on_server.values():
        # Nothing an annotator can read says gold or which candidate is A; gold copies a real record's metadata.
        assert set(rec["metadata"]) == {"round", "source", "policy"}, rec["metadata"]
        assert rec["metadata"]["source"] == "customers.jsonl"
        assert "gold" not in json.dumps(rec).lower()
    # The display order is balanced and kept off the server, in the run and the journal.
    assert sum(r["shown_as_a"] == "b" for r in records) == 12


def test_gold_votes_never_become_training_pairs(labelled):
    m = labelled["pull"]
    run = Path(m["path"])
    rows = [json.loads(line) for line in (run / "preferences.jsonl").read_text().splitlines()]
    gold = [json.loads(line) for line in (run / "gold.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and len(gold) == 12
    assert not {r["record_id"] for r in rows} & {g["record_id"] for g in gold}
    assert m["metrics"]["gold_records"] == 12 and m["metrics"]["gold_votes"] == 24
    assert m["outputs"]["gold"]
    # The careful annotator's gold answers are all right, the expected reply is the rubric's better one.
    careful = [v for g in gold for v in g["votes"] if v["annotator"] == "sim-careful"]
    assert len(careful) == 12 and all(v["correct"] for v in careful)
    for g in gold:
        expected_text = g["response_a"] if g["expected"] == "a" else g["response_b"]
        assert expected_text in (GOOD, BARE)


def test_the_panel_flags_the_careless_annotator_only(argilla, labelled, capsys):
    quality = labelled["pull"]["metrics"]["annotator_quality"]
    careful, careless = quality["annotators"]["sim-careful"], quality["annotators"]["sim-careless"]
    assert careful["votes"] == careless["votes"] == 24
    assert careful["gold"]["rate"] == 1.0 and careful["flags"] == []
    assert 0.25 <= careful["position_bias"]["rate"] <= 0.75
    assert careless["flags"], careless
    assert careless["position_bias"]["rate"] > 0.8 or careless["gold"]["rate"] < 0.7
    low, high = careless["position_bias"]["ci_low"], careless["position_bias"]["ci_high"]
    assert low <= careless["position_bias"]["rate"] <= high
    assert careful["median_seconds"] is not None  # simulated users answer in milliseconds

    report = status.run(
        status.Config(dataset="integrity", journal_dir=labelled["journal"], argilla=argilla.argilla_config())
    )
    assert report["gold_records"] == 12 and report["records_order_unknown"] == 0
    assert report["quality"]["annotators"]["sim-careless"]["flags"] == careless["flags"]
    assert report["quality"]["annotators"]["sim-careful"]["flags"] == []
    out = capsys.readouterr().out
    assert "FLAGGED" in out and "sim-careless" in out


def test_annotators_see_only_their_own_responses(argilla, labelled):
    recs = argilla.records_by_id("integrity")
    rid = sorted(recs)[0]
    alice, bob = argilla.annotator("alice"), argilla.annotator("bob")
    alice.respond(recs[rid]["id"], preference="A", reason="alice's reason")
    bob.respond(recs[rid]["id"], preference="B")
    for who, mine in ((alice, "A"), (bob, "B")):
        got = who.http.get(f"/api/v1/records/{recs[rid]['id']}")
        assert got.status_code == 200, got.text
        body = got.json()
        assert [r["values"]["preference"]["value"] for r in body["responses"]] == [mine]
        assert "policy" not in (body["metadata"] or {})  # hidden metadata stays hidden through the API too
        assert body["fields"] == recs[rid]["fields"]
    with argilla.owner() as owner:  # the owner still sees everyone's
        everyone = owner.get(f"/api/v1/records/{recs[rid]['id']}")
    assert len(everyone["responses"]) == 4 and everyone["metadata"]["policy"] == "runs/sft"


def test_record_ids_do_not_reveal_the_input_order(labelled):
    row = pair_rows("pair", 1)[0]
    assert record_id(row["prompt"], row["response_a"], row["response_b"], 1) == record_id(
        row["prompt"], row["response_b"], row["response_a"], 1
    )


def test_missing_dataset_error_names_only_this_workspace(argilla, labelled, tmp_path):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps(pair_rows("other", 1)[0]) + "\n")
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="other-team-secret",
            journal_dir=str(tmp_path / "j"),
            argilla=argilla.argilla_config(workspace="other-team"),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    with pytest.raises(AlignError) as err:
        status.run(status.Config(dataset="no-such", argilla=argilla.argilla_config()))
    assert "integrity" in str(err.value) and "other-team-secret" not in str(err.value)


def test_pull_without_the_order_says_how_to_get_it(argilla, labelled, tmp_path):
    with pytest.raises(AlignError, match="no A/B order .* push_runs="):
        pull.run(
            pull.Config(
                dataset="integrity",
                journal_dir=str(tmp_path / "elsewhere"),
                argilla=argilla.argilla_config(),
                runs_dir=str(tmp_path / "runs"),
            )
        )
    m = pull.run(
        pull.Config(
            dataset="integrity",
            journal_dir=str(tmp_path / "elsewhere"),
            push_runs=[labelled["push"]["path"]],
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert m["metrics"]["orders_from_push_runs"] == 24 and m["metrics"]["gold_records"] == 12


def test_the_loop_report_shows_the_panel_per_round(labelled, tmp_path):
    from align.loop.report import write_report
    from align.loop.rounds import LabelSummary, RoundSummary

    rounds = [
        RoundSummary(round=0, policy="base"),
        RoundSummary(round=1, policy="runs/dpo-1", labels=LabelSummary.from_pull_run(labelled["pull"]["path"])),
    ]
    page = write_report(tmp_path / "report.html", rounds, {"title": "panel"}).read_text()
    panel = page[page.index("Annotators per round") :]
    careless = panel[panel.index("<td>sim-careless</td>") :].split("</tr>")[0]
    careful = panel[panel.index("<td>sim-careful</td>") :].split("</tr>")[0]
    assert "FLAGGED" in careless and "FLAGGED" not in careful
    assert "12/12" in careful  # gold: all twelve right


def test_a_dataset_pushed_by_an_older_align_still_pushes_and_pulls(argilla, tmp_path):
    """Older pushes used ids over (a, b) in input order and kept `shown_as_a` in the metadata: pushing the same
    pairs again sends nothing twice, and pull reads the order from the metadata."""
    from align.annotate.connection import connect, sdk
    from align.annotate.votes import legacy_record_id, legacy_shown_as_a

    rows = pair_rows("legacy", 4)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    journal = str(tmp_path / "journal")
    cfg = push.Config(
        pairs=str(pairs),
        dataset="legacy",
        max_pairs=1,
        journal_dir=str(tmp_path / "other-journal"),
        argilla=argilla.argilla_config(),
        runs_dir=str(tmp_path / "runs"),
    )
    push.run(cfg)  # creates the dataset; its one record is then replaced by old-style ones below
    rg = sdk()
    old = {}
    with connect(argilla.argilla_config()) as conn:
        ds = conn.dataset("legacy", "align")
        ds.records.delete(list(ds.records))
        for r in rows:
            lid = legacy_record_id(r["prompt"], r["response_a"], r["response_b"], 1)
            first = legacy_shown_as_a(lid)
            shown = (r["response_a"], r["response_b"]) if first == "a" else (r["response_b"], r["response_a"])
            old[lid] = first
            ds.records.log(
                [
                    rg.Record(
                        id=lid,
                        fields={"prompt": r["prompt"], "response_a": shown[0], "response_b": shown[1]},
                        metadata={"round": 1, "source": "old", "shown_as_a": first},
                    )
                ]
            )
    again = push.run(
        push.Config(
            pairs=str(pairs),
            dataset="legacy",
            journal_dir=journal,
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert again["metrics"]["records_new"] == 0 and again["metrics"]["records_already_there"] == 4
    recs = argilla.records_by_id("legacy")
    assert set(recs) == set(old)
    lid = next(iter(old))
    argilla.annotator("alice").respond(recs[lid]["id"], preference="A")  # A: the candidate the old order put there
    m = pull.run(
        pull.Config(
            dataset="legacy", journal_dir=journal, argilla=argilla.argilla_config(), runs_dir=str(tmp_path / "runs")
        )
    )
    [row] = [json.loads(line) for line in (Path(m["path"]) / "preferences.jsonl").read_text().splitlines()]
    assert row["record_id"] == lid and row["majority"] == old[lid]
