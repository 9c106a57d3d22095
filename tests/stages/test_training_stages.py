"""Smoke tests per stage on a tiny local model: finite loss, trained parameters changed, complete
manifest, runs chained by path (SFT -> reward -> DPO) with lineage back to the model and data."""

from __future__ import annotations

import json
import math

import pytest
from safetensors.torch import load_file

from align.core import runs
from align.core.config import load_config
from align.stages import dpo, reward, sft
from tests.conftest import write_jsonl

# Trains or samples the tiny model (make test runs it; make test-fast does not).
pytestmark = pytest.mark.slow

FAST = ["max_length=128", "training.max_steps=2", "training.logging_steps=1", "training.per_device_train_batch_size=2"]


def hh_sample(repo_data, tmp_path, n=40):
    import gzip

    with gzip.open(repo_data / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz", "rt") as f:
        lines = [next(f) for _ in range(n)]
    path = tmp_path / "hh_sample.jsonl"
    path.write_text("".join(lines))
    return path


def assert_complete_manifest(manifest, stage):
    on_disk = runs.read_manifest(manifest["path"])
    assert on_disk["stage"] == stage
    for key in ("config", "versions", "inputs", "outputs", "metrics", "wall_time_s"):
        assert on_disk[key] is not None
    assert on_disk["outputs"]["model"]["sha256"]
    lines = (runs.Path(manifest["path"]) / runs.METRICS).read_text().splitlines()
    assert lines, "metrics.jsonl has no logging step"
    return on_disk


def lora_b_changed(run_path):
    # peft initialises every lora_B to zero: any non-zero value means the adapter trained.
    weights = load_file(str(runs.Path(run_path) / "model" / "adapter_model.safetensors"))
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    return bool(lora_b) and any(t.abs().sum() > 0 for t in lora_b)


@pytest.fixture(scope="module")
def chain(tiny_model, repo_data, tmp_path_factory):
    """SFT -> reward -> DPO on the tiny model and 40 real HH-RLHF pairs."""
    tmp = tmp_path_factory.mktemp("chain")
    data = hh_sample(repo_data, tmp)
    out = {"data": data, "runs": tmp / "runs"}
    common = [f"runs_dir={out['runs']}", f"data.train={data}", *FAST]
    out["sft"] = sft.run(
        load_config(
            sft.Config,
            None,
            [f"model={tiny_model}", "data.format=preference-chosen", "data.test_fraction=0.3", *common],
        )
    )
    out["reward"] = reward.run(
        load_config(reward.Config, None, [f"model={out['sft']['path']}", "data.test_fraction=0.3", *common])
    )
    out["dpo"] = dpo.run(
        load_config(
            dpo.Config,
            None,
            [
                f"model={out['sft']['path']}",
                f"reward_model={out['reward']['path']}",
                "data.test_fraction=0.3",
                "reward_eval.prompts=2",
                "reward_eval.max_new_tokens=4",
                *common,
            ],
        )
    )
    return out


def test_sft_smoke(chain):
    m = assert_complete_manifest(chain["sft"], "sft")
    assert math.isfinite(m["metrics"]["train_loss"])
    assert lora_b_changed(chain["sft"]["path"])
    assert m["outputs"]["model"]["format"] == "adapter"
    assert m["notes"]["data"]["examples_trained"] > 0


def test_reward_smoke_reports_held_out_accuracy(chain):
    m = assert_complete_manifest(chain["reward"], "reward")
    assert math.isfinite(m["metrics"]["train_loss"])
    # The accuracy's value is checked where it can be wrong: tests/stages/test_reward_learning.py.
    assert math.isfinite(m["metrics"]["test_accuracy"]) and m["metrics"]["test_pairs"] > 0
    assert lora_b_changed(chain["reward"]["path"])
    assert m["outputs"]["model"]["task"] == "reward"
    # The score head is trained and saved with the adapter (peft modules_to_save).
    weights = load_file(str(runs.Path(chain["reward"]["path"]) / "model" / "adapter_model.safetensors"))
    assert any("score" in k for k in weights)


def test_dpo_smoke_and_reward_model_evaluation(chain):
    m = assert_complete_manifest(chain["dpo"], "dpo")
    assert math.isfinite(m["metrics"]["train_loss"])
    assert lora_b_changed(chain["dpo"]["path"])
    assert "test_rewards/accuracies" in m["metrics"]
    assert m["metrics"]["rm_eval_prompts"] == 2 and math.isfinite(m["metrics"]["rm_policy_mean_reward"])
    replies = (runs.Path(chain["dpo"]["path"]) / m["outputs"]["held_out_replies"]["path"]).read_text().splitlines()
    assert len(replies) == 2 and {"prompt", "policy", "reference", "policy_reward", "reference_reward"} <= set(
        json.loads(replies[0])
    )


def test_lineage_dpo_to_reward_to_sft_to_model_and_data(chain, tiny_model):
    lines = runs.lineage(chain["dpo"]["path"])
    text = "\n".join(lines)
    assert lines[0].startswith("dpo")
    assert "reward_model: reward" in text and "model: sft" in text
    assert str(tiny_model) in text
    assert runs.hash_file(chain["data"])[:12] in text
    # The reward run's own parent is the SFT run, nested one level deeper.
    reward_line = next(i for i, l in enumerate(lines) if "reward_model: reward" in l)
    assert "model: sft" in lines[reward_line + 1]


def test_full_fine_tuning_changes_base_weights(tiny_model, easy_pairs, tmp_path):
    m = sft.run(
        load_config(
            sft.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                "lora.enabled=false",
                f"runs_dir={tmp_path}",
                "training.learning_rate=1e-3",
                *FAST,
            ],
        )
    )
    assert m["outputs"]["model"]["format"] == "full"
    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(runs.Path(m["path"]) / "model" / "model.safetensors"))
    changed = [k for k in before if k in after and not (before[k] == after[k]).all()]
    assert changed, "full fine-tuning saved unchanged weights"
    assert not (runs.Path(m["path"]) / "model" / "training_args.bin").exists()


def test_dpo_learns_an_easy_preference(tiny_model, tmp_path):
    """Held-out implicit reward accuracy must rise clearly above chance on an easy rule."""
    topics = [f"topic {i}" for i in range(60)]
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Tell me about {t}."}],
            "chosen": [{"role": "assistant", "content": "Gladly! Here is a kind and helpful answer."}],
            "rejected": [{"role": "assistant", "content": "Go away, I will not help you."}],
        }
        for t in topics
    ]
    data = write_jsonl(tmp_path / "easy.jsonl", rows)
    m = dpo.run(
        load_config(
            dpo.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={data}",
                "data.test_fraction=0.25",
                f"runs_dir={tmp_path / 'runs'}",
                "data.validation_fraction=0.2",
                "max_length=64",
                "beta=0.1",
                "training.learning_rate=5e-3",
                "training.max_steps=25",
                "training.per_device_train_batch_size=4",
                "training.logging_steps=5",
            ],
        )
    )
    acc = m["metrics"]["test_rewards/accuracies"]
    assert acc >= 0.9, f"held-out DPO reward accuracy {acc} on an easy preference"
    assert m["metrics"]["test_rewards/margins"] > 0
    # Validation pairs come from the training side, are scored the same way, and are not trained on.
    set_aside = m["notes"]["data"]["validation_pairs_set_aside"]
    assert m["metrics"]["validation_pairs"] == set_aside > 0
    assert m["notes"]["data"]["pairs_trained"] == 60 - m["metrics"]["test_pairs"] - set_aside
    assert m["metrics"]["validation_rewards/accuracies"] >= 0.9


def test_full_fine_tuning_from_an_adapter_run_trains_every_weight(chain, tmp_path):
    """A model with an earlier stage's adapter merged in must come back trainable (peft freezes it)."""
    m = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={chain['sft']['path']}",
                f"data.train={chain['data']}",
                "lora.enabled=false",
                f"runs_dir={tmp_path}",
                *FAST,
            ],
        )
    )
    params = m["notes"]["parameters"]
    assert params["trainable_params"] == params["total_params"] > 0
