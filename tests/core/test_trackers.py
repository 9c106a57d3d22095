"""`training.report_to` reaches the trainer; TensorBoard's files land in the run and the manifest says so."""

from __future__ import annotations

import json

import pytest

from align.cli import main
from align.core import runs


@pytest.mark.slow
def test_tensorboard_events_are_written_inside_the_run(tiny_model, easy_pairs, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert (
        main(
            [
                "sft",
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                "data.format=preference-chosen",
                "max_length=64",
                "training.max_steps=3",
                "training.logging_steps=1",
                "training.report_to=[tensorboard]",
                f"runs_dir={tmp_path}",
                "name=tb",
            ]
        )
        == 0
    )
    run = tmp_path / "tb"
    manifest = runs.read_manifest(run)
    assert manifest["notes"]["trackers"] == {"tensorboard": {"log_dir": "tensorboard"}}
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file in the run"
    accumulator = EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    losses = [e.value for e in accumulator.Scalars("train/loss")]
    assert len(losses) == 3 and all(v == v for v in losses)
    # align's own metrics.jsonl stays, with the same losses.
    logged = [json.loads(line) for line in (run / runs.METRICS).read_text().splitlines()]
    assert [round(r["loss"], 4) for r in logged if "loss" in r] == [round(v, 4) for v in losses]
    assert not (run / "trainer").exists()


@pytest.mark.slow
def test_no_tracker_unless_asked(tiny_model, easy_pairs, tmp_path):
    assert (
        main(
            [
                "sft",
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                "data.format=preference-chosen",
                "max_length=64",
                "training.max_steps=1",
                f"runs_dir={tmp_path}",
                "name=plain",
            ]
        )
        == 0
    )
    assert "trackers" not in runs.read_manifest(tmp_path / "plain")["notes"]
    assert not (tmp_path / "plain" / "tensorboard").exists()
