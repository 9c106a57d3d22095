"""reward and dpo stages with data.weighting and data.ties on a tiny model: they train on pulled-style rows
with p_chosen and ties, count the ties in the manifest, and refuse settings whose effect would be lost."""

from __future__ import annotations

import json
import math

import pytest

from align.core import runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.stages import dpo, reward

FAST = ["max_length=128", "training.max_steps=2", "training.logging_steps=1", "training.per_device_train_batch_size=2"]


@pytest.fixture
def pulled(tmp_path):
    rows = []
    for i in range(8):
        tie = i % 4 == 3
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Can you help me with order {i}?"}],
                "response_a": "Of course, happy to help!",
                "response_b": "No.",
                "chosen": None if tie else [{"role": "assistant", "content": "Of course, happy to help!"}],
                "rejected": None if tie else [{"role": "assistant", "content": "No."}],
                "majority": "tie" if tie else "a",
                "p_chosen": None if tie else 0.6 + 0.05 * i,
            }
        )
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stage, ties", [(reward, "rao_kupper"), (dpo, "davidson")], ids=["reward", "dpo"])
def test_stage_trains_with_soft_labels_and_ties(stage, ties, pulled, tiny_model, tmp_path):
    m = stage.run(
        load_config(
            stage.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={pulled}",
                "data.weighting=label_smoothing",
                f"data.ties={ties}",
                "data.test_fraction=0.3",
                f"runs_dir={tmp_path / 'runs'}",
                *FAST,
            ],
        )
    )
    on_disk = runs.read_manifest(m["path"])
    data, test = on_disk["notes"]["data"], on_disk["notes"]["test_data"]
    assert data["ties_kept"] == 2 and data["pairs_without_p_chosen"] == 0
    # Every tie is trained on or held out (and then not scored); every read pair is on one side.
    assert data["ties_trained"] + test.get("ties_not_scored", 0) == 2
    assert data["pairs_trained"] + on_disk["metrics"]["test_pairs"] + test.get("ties_not_scored", 0) == 8
    assert math.isfinite(on_disk["metrics"]["train_loss"])
    held_out = "test_loss" if stage is dpo else "test_accuracy"  # DPO's held-out loss runs through the same loss
    assert math.isfinite(on_disk["metrics"][held_out])


def test_refusals(pulled, tiny_model, tmp_path):
    common = [f"model={tiny_model}", f"data.train={pulled}", f"runs_dir={tmp_path / 'runs'}", *FAST]
    with pytest.raises(AlignError, match="ignores it"):
        dpo.check(load_config(dpo.Config, None, [*common, "training.label_smoothing=0.1"]))
    with pytest.raises(AlignError, match="loss_type"):
        dpo.check(load_config(dpo.Config, None, [*common, "data.weighting=weight", "loss_type=[ipo]"]))
    with pytest.raises(AlignError, match="margin"):
        reward.check(load_config(reward.Config, None, [*common, "data.ties=davidson", "margin=agreement"]))
    # robust reads TRL's label_smoothing: allowed
    assert dpo.check(load_config(dpo.Config, None, [*common, "training.label_smoothing=0.1", "loss_type=[robust]"]))
