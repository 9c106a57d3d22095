"""The main job's recipe end to end on the tiny model: three chained runs, a summary, lineage, resume."""

from __future__ import annotations

import json

from align.core import runs
from recipes.hh_harmless import run as recipe

SMALL = [
    "all.max_length=128", "all.training.max_steps=2", "all.training.logging_steps=1",
    "sft.data.max_examples=8", "reward.data.max_train_pairs=8", "reward.data.max_test_pairs=6",
    "dpo.data.max_train_pairs=8", "dpo.data.max_test_pairs=4", "dpo.reward_eval.prompts=2",
    "dpo.reward_eval.max_new_tokens=4",
]


def test_recipe_runs_sft_reward_dpo_and_resumes(tiny_model, shared_data, tmp_path, capsys):
    code = recipe.main(["--runs-dir", str(tmp_path), f"all.model={tiny_model}", *SMALL])
    out = capsys.readouterr().out
    assert code == 0, out
    (pipeline,) = tmp_path.iterdir()
    summary = json.loads((pipeline / "summary.json").read_text())
    assert set(summary["runs"]) == {"sft", "reward", "dpo"}
    assert "test_accuracy" in summary["reward_model"] and "test_rewards/accuracies" in summary["dpo"]
    assert "Reward model, 6 held-out pairs: accuracy" in out
    lineage = "\n".join(runs.lineage(summary["runs"]["dpo"]))
    assert "reward_model: reward" in lineage and "model: sft" in lineage
    assert "hh_rlhf_harmless_base_test.jsonl.gz" in lineage

    # Resuming a complete pipeline trains nothing and gives the same runs.
    code = recipe.main(["--resume", str(pipeline), f"all.model={tiny_model}", *SMALL])
    assert code == 0
    again = json.loads((pipeline / "summary.json").read_text())
    assert again["runs"] == summary["runs"] and again["wall_time_s"] == summary["wall_time_s"]


def test_recipe_rejects_an_override_without_a_stage(capsys):
    assert recipe.main(["beta=0.2"]) == 2
    assert "must start with a stage" in capsys.readouterr().err


def test_recipe_checks_every_config_before_training(tmp_path, capsys):
    assert recipe.main(["--runs-dir", str(tmp_path), "dpo.betta=0.2"]) == 2
    assert "unknown config key 'betta'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
