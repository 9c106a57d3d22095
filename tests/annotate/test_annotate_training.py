"""A pull run goes straight into the reward and DPO stages, with agreement used as documented:
`data.min_agreement` filters (here 1.0 keeps the 2 unanimous of 4 majority pairs), the reward stage's `margin=agreement` feeds TRL's margin term, DPO reads
each pair's p_chosen as per-pair label smoothing (`data.weighting=label_smoothing`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.annotate import pull, push
from align.core import runs
from align.core.config import load_config
from tests.annotate.conftest import shown_orders

pytestmark = pytest.mark.integration

FAST = ["max_length=128", "training.max_steps=1", "training.logging_steps=1", "training.per_device_train_batch_size=2"]


@pytest.fixture(scope="module")
def pulled(argilla, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-on-labels")
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Please help me plan day {i} of a trip."}],
            "response_a": f"Gladly: start with breakfast near the station on day {i}.",
            "response_b": "No.",
            "source": "training-test",
        }
        for i in range(4)
    ]
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="train-on-labels",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp / "runs"),
            journal_dir=str(tmp / "journal"),
        )
    )
    orders = shown_orders(tmp / "runs")
    with argilla.owner() as conn:
        records = conn.records(conn.dataset("train-on-labels")["id"])
    erin, frank, gina = argilla.annotator("erin"), argilla.annotator("frank"), argilla.annotator("gina")
    for i, rec in enumerate(records):
        polite = "A" if orders[rec["external_id"]] == "a" else "B"
        curt = "B" if polite == "A" else "A"
        erin.respond(rec["id"], preference=polite, strength=3)
        frank.respond(rec["id"], preference=polite, strength=2)
        gina.respond(rec["id"], preference=polite if i < 2 else curt, strength=1)  # two pairs at 2 of 3
    m = pull.run(
        pull.Config(
            dataset="train-on-labels",
            argilla=argilla.argilla_config(),
            journal_dir=str(tmp / "journal"),
            runs_dir=str(tmp / "runs"),
        )
    )
    assert m["metrics"]["pairs"] == 4
    rows = [json.loads(line) for line in (Path(m["path"]) / "preferences.jsonl").read_text().splitlines()]
    assert sorted((r["counts"]["a"], r["counts"]["b"], r["n_votes"]) for r in rows) == [
        (2, 1, 3),
        (2, 1, 3),
        (3, 0, 3),
        (3, 0, 3),
    ]
    assert sorted(r["p_chosen"] for r in rows) == [
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
        1.0,
        1.0,
    ]  # share of a/b votes
    return m["path"], tmp


def test_reward_stage_trains_on_a_pull_run_with_agreement_margin(pulled, tiny_model):
    from align.stages import reward

    path, tmp = pulled
    m = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={path}",
                "data.min_agreement=1.0",
                "margin=agreement",
                f"runs_dir={tmp / 'reward-runs'}",
                *FAST,
            ],
        )
    )
    on_disk = runs.read_manifest(m["path"])
    assert on_disk["notes"]["data"]["pairs_trained"] == 2  # the two unanimous pairs; 4 without the filter
    assert any(i.get("kind") == "run" and i.get("stage") == "annotate pull" for i in on_disk["inputs"])


def test_dpo_stage_trains_on_a_pull_run(pulled, tiny_model):
    from align.stages import dpo

    path, tmp = pulled
    m = dpo.run(
        load_config(
            dpo.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={path}",
                "data.weighting=label_smoothing",
                f"runs_dir={tmp / 'dpo-runs'}",
                *FAST,
            ],
        )
    )
    on_disk = runs.read_manifest(m["path"])
    assert on_disk["stage"] == "dpo" and on_disk["notes"]["data"]["pairs_without_p_chosen"] == 0
