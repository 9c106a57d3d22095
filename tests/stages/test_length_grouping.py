"""Reward and DPO batches grouped by length: less padding than TRL's random order, recorded in the
manifest; a setting that would break the sampler mid-training is refused up front."""

from __future__ import annotations

import pytest

from align.core.config import load_config
from align.core.errors import AlignError
from align.stages import dpo, reward
from tests.conftest import write_jsonl

FAST = [
    "max_length=256",
    "training.max_steps=8",
    "training.logging_steps=4",
    "training.per_device_train_batch_size=2",
    "lora.r=2",
]


@pytest.fixture(scope="module")
def two_lengths(tmp_path_factory):
    """64 pairs, half a few tokens long, half ~150: a random batch of two mixes them half the time."""
    rows = []
    for i in range(64):
        filler = "please explain it again in full detail " * 15 if i % 2 else ""
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Question {i}? {filler}"}],
                "chosen": [{"role": "assistant", "content": "Sure, here it is."}],
                "rejected": [{"role": "assistant", "content": "No, not again."}],
            }
        )
    return write_jsonl(tmp_path_factory.mktemp("two-lengths") / "pairs.jsonl", rows)


def run(stage, tiny_model, data, tmp_path, *extra):
    cfg = load_config(
        stage.Config,
        None,
        [
            f"model={tiny_model}",
            f"data.train={data}",
            f"runs_dir={tmp_path}",
            "name=" + "-".join(["run", *[e.split("=")[-1] for e in extra]]),
            *FAST,
            *extra,
        ],
    )
    return stage.run(cfg)


@pytest.mark.slow
def test_reward_batches_grouped_by_length_carry_less_padding(tiny_model, two_lengths, tmp_path):
    grouped = run(reward, tiny_model, two_lengths, tmp_path)
    shuffled = run(reward, tiny_model, two_lengths, tmp_path, "training.train_sampling_strategy=random")
    g, s = grouped["metrics"]["train_padding_fraction"], shuffled["metrics"]["train_padding_fraction"]
    batches = grouped["notes"]["batches"]
    assert batches["sampling"] == "group_by_length" and batches["padding_fraction"] == g
    assert batches["examples"] >= 16 and 0 < batches["tokens"] < batches["token_positions"]
    assert shuffled["notes"]["batches"]["sampling"] == "random"
    # Random order pads a short pair to ~150 tokens in about half the batches; grouped batches almost never.
    assert s > 0.2 and g < 0.1, (g, s)


@pytest.mark.slow
def test_dpo_batches_are_grouped_and_their_padding_recorded(tiny_model, two_lengths, tmp_path):
    m = run(dpo, tiny_model, two_lengths, tmp_path, "reward_eval.prompts=0")
    assert m["notes"]["batches"]["sampling"] == "group_by_length"
    assert 0 <= m["metrics"]["train_padding_fraction"] < 0.1


def test_grouping_without_its_length_column_is_refused_before_any_run(tiny_model, two_lengths, tmp_path):
    cfg = load_config(
        reward.Config,
        None,
        [
            f"model={tiny_model}",
            f"data.train={two_lengths}",
            f"runs_dir={tmp_path}",
            *FAST,
            "training.remove_unused_columns=true",
        ],
    )
    with pytest.raises(AlignError, match="remove_unused_columns=false"):
        reward.check(cfg)
    assert not list(tmp_path.iterdir())
