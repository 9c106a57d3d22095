"""The main job's recipe end to end on the tiny model: three chained runs, a summary, lineage, resume."""

from __future__ import annotations

import json
import shutil

import pytest

from align.core import runs
from recipes.hh_harmless import run as recipe

SMALL = [
    "all.max_length=128",
    "all.training.max_steps=2",
    "all.training.logging_steps=1",
    "sft.data.max_examples=8",
    "reward.data.max_train_pairs=8",
    "reward.data.max_test_pairs=6",
    "dpo.data.max_train_pairs=8",
    "dpo.data.max_test_pairs=4",
    "dpo.reward_eval.prompts=2",
    "dpo.reward_eval.max_new_tokens=4",
    "reward.trainable_layers=1",  # the recipe trains the last 10 of the embedded model's 30 blocks; tiny has 2
]


@pytest.mark.slow
def test_recipe_runs_sft_reward_dpo_and_resumes(tiny_model, repo_data, tmp_path, capsys):
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
    capsys.readouterr()

    # A changed setting is not answered with the old run: exit 2 naming the key and both values.
    code = recipe.main(["--resume", str(pipeline), f"all.model={tiny_model}", *SMALL, "reward.training.max_steps=3"])
    err = capsys.readouterr().err
    assert code == 2 and "reward in" in err and "training.max_steps=2 in the run, 3 now" in err, err
    assert len(err.strip().splitlines()) == 1

    # A moved pipeline resumes from its new place (paths inside it compare relative to it).
    moved = tmp_path / "moved" / pipeline.name
    shutil.copytree(pipeline, moved)
    assert recipe.main(["--resume", str(moved), f"all.model={tiny_model}", *SMALL]) == 0
    assert json.loads((moved / "summary.json").read_text())["wall_time_s"] == summary["wall_time_s"]

    # A stage trained on an earlier run that was replaced since is not reused.
    sft_manifest = moved / "1-sft" / runs.MANIFEST
    sft_manifest.write_text(sft_manifest.read_text().replace('"stage": "sft"', '"stage": "sft", "edited": true'))
    assert recipe.main(["--resume", str(moved), f"all.model={tiny_model}", *SMALL]) == 2
    assert "reward in" in capsys.readouterr().err

    # Nor is one downstream of a stage that would be trained again; nothing trains.
    shutil.rmtree(pipeline / "2-reward")
    assert recipe.main(["--resume", str(pipeline), f"all.model={tiny_model}", *SMALL]) == 2
    assert "dpo in" in capsys.readouterr().err and not (pipeline / "2-reward").exists()


def test_recipe_rejects_an_override_without_a_stage(capsys):
    assert recipe.main(["beta=0.2"]) == 2
    assert "must start with a stage" in capsys.readouterr().err


def test_recipe_checks_every_config_before_training(tmp_path, capsys):
    assert recipe.main(["--runs-dir", str(tmp_path), "dpo.betta=0.2"]) == 2
    assert "unknown config key 'betta'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
