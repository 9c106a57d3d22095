"""A real Argilla round trip with `label_model=dawid_skene`: one annotator always answers against the two
careful ones; the pull's manifest gives them a low reliability, and the 1-1 splits (no majority) get the
careful annotator's label, which a majority pull leaves out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.annotate import pull, push
from tests.annotate.conftest import shown_orders

pytestmark = pytest.mark.integration


def test_dawid_skene_pull_labels_splits_by_reliability(argilla, tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Could you help me with booking {i}?"}],
            "response_a": f"Gladly: booking {i} is confirmed for Friday.",
            "response_b": "No.",
            "source": "label-model",
        }
        for i in range(6)
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="label-model",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
            journal_dir=str(tmp_path / "journal"),
        )
    )
    orders = shown_orders(tmp_path / "runs")
    with argilla.owner() as conn:
        records = conn.records(conn.dataset("label-model")["id"])
    # Names no other test uses: `annotate team` in the roundtrip tests creates "hana" with a generated password.
    careful1, careful2, contrary = (
        argilla.annotator("dscareful1"),
        argilla.annotator("dscareful2"),
        argilla.annotator("dscontrary"),
    )
    for i, rec in enumerate(records):
        helpful = "A" if orders[rec["external_id"]] == "a" else "B"  # candidate a is the helpful reply
        unhelpful = "B" if helpful == "A" else "A"
        careful1.respond(rec["id"], preference=helpful)
        if i < 4:
            careful2.respond(rec["id"], preference=helpful)
        contrary.respond(rec["id"], preference=unhelpful)  # records 4 and 5: a 1-1 split

    common = {
        "dataset": "label-model",
        "argilla": argilla.argilla_config(),
        "journal_dir": str(tmp_path / "journal"),
        "runs_dir": str(tmp_path / "pull-runs"),
    }
    majority = pull.run(pull.Config(**common, label_model="majority"))
    ds = pull.run(pull.Config(**common, label_model="dawid_skene", offline=True))
    assert majority["metrics"]["pairs"] == 4 and majority["metrics"]["no_majority"] == 2
    assert ds["metrics"]["pairs"] == 6 and ds["metrics"]["no_majority"] == 0
    reliability = ds["notes"]["label_model"]["reliability"]
    assert reliability["dscontrary"] < 0.3 < 0.7 < min(reliability["dscareful1"], reliability["dscareful2"])
    assert ds["notes"]["label_model"]["method"] == "dawid_skene"
    labelled = [json.loads(line) for line in (Path(ds["path"]) / "preferences.jsonl").read_text().splitlines()]
    assert all(r["chosen"][0]["content"].startswith("Gladly") and r["p_chosen"] > 0.8 for r in labelled)
    # the majority pull records the same reliabilities and keeps its own labels
    assert majority["notes"]["label_model"]["reliability"] == reliability
