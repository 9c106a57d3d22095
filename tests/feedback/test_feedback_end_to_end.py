"""End to end on the tiny model: a feedback file imported, `align kto` trained on its thumbs (lineage from the
policy back to the feedback file), `align dpo` reading its corrections, and a loop round that trains KTO on the
feedback instead of generated pairs (no Argilla: no generate, push or pull)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from align.cli import main
from align.core import runs

EXAMPLE = Path(__file__).parent / "data" / "feedback_example.jsonl"


@pytest.mark.slow
def test_import_then_kto_on_thumbs_and_dpo_reads_corrections(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGN_FEEDBACK_SALT", "s")
    assert main(["feedback", "import", str(EXAMPLE), f"runs_dir={tmp_path}", "name=fb"]) == 0
    fb = tmp_path / "fb"
    weights = runs.read_manifest(fb)["notes"]["kto_weights"]
    code = main(
        [
            "kto",
            "--config",
            "configs/kto/default.yaml",
            f"model={tiny_model}",
            f"data.train={fb}",
            "data.test_fraction=0.0",
            "max_length=128",
            "training.max_steps=2",
            "training.per_device_train_batch_size=2",
            "training.gradient_accumulation_steps=1",
            "training.logging_steps=1",
            f"training.desirable_weight={weights['desirable_weight']}",
            f"training.undesirable_weight={weights['undesirable_weight']}",
            f"runs_dir={tmp_path}",
            "name=kto",
        ]
    )
    assert code == 0
    kto = runs.read_manifest(tmp_path / "kto")
    assert kto["notes"]["balance"]["desirable"] == 15 and kto["notes"]["balance"]["within_paper_range"] is True
    loss = kto["metrics"]["train_loss"]
    assert loss == loss and abs(loss) < 1e6  # finite
    lineage = "\n".join(runs.lineage(tmp_path / "kto"))
    assert "data.train: feedback import" in lineage and str(EXAMPLE.resolve()) in lineage
    capsys.readouterr()
    assert main(["dpo", "--dry-run", f"model={tiny_model}", f"data.train={fb}", "max_length=128"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out.split("# inputs, read and counted")[1].split("\n", 1)[1])
    assert printed["inputs"]["data"]["pairs"] == 6


@pytest.mark.slow
def test_a_loop_round_trains_kto_on_feedback_instead_of_generated_pairs(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_FEEDBACK_SALT", "s")
    gates = tmp_path / "gates.yaml"
    gates.write_text(
        yaml.safe_dump(
            {
                "gates": [
                    {
                        "name": "replies stay short",
                        "metric": "brand.length_words.policy.mean",
                        "op": "<=",
                        "value": 1000,
                    }
                ]
            }
        )
    )
    config = {
        "recipe": "fbloop",
        "loop_dir": str(tmp_path / "loop"),
        "rounds": 1,
        "policy": str(tiny_model),
        "gates": str(gates),
        "train": {"stages": ["kto"], "min_pairs": 2},
        "feedback": {"source": str(EXAMPLE), "mode": "kto", "use": "instead"},
        # Checked when the loop starts (a later round may generate), not run by a feedback-only round.
        "generate": {"prompts": "recipes/brand_voice/prompts_train.jsonl", "engine": "hf"},
        "kto": {
            "config": "configs/kto/default.yaml",
            "max_length": 128,
            "data": {"test_fraction": 0.0},
            "training": {
                "max_steps": 2,
                "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "logging_steps": 1,
            },
        },
        "evaluate": {
            "config": "configs/evaluate/policy.yaml",
            "engine": "hf",
            "sampling": {"max_tokens": 8},
            "harmful": {"max_prompts": 2},
            "safe": {"max_prompts": 2},
            "brand": {"max_prompts": 2},
            "bootstrap": {"resamples": 100},
        },
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["loop", "--config", str(path)]) == 0
    state = json.loads((tmp_path / "loop" / "loop.json").read_text())
    steps = state["rounds"][1]["steps"]
    assert "generate" not in steps and "pull" not in steps
    assert [s for s in ("feedback_import", "feedback", "kto", "evaluate") if steps[s]["status"] == "done"] == [
        "feedback_import",
        "feedback",
        "kto",
        "evaluate",
    ]
    kto = runs.read_manifest(tmp_path / "loop" / "round-1" / "kto")
    # The weights the loop set from the round's counts (15 up, 10 down): 1.0 and 1.5 / (7/6).
    assert kto["config"]["training"]["undesirable_weight"] == 1.2857
    report = (tmp_path / "loop" / "report.html").read_text()
    assert "Training data by origin" in report and "thumbs 25" in report
    assert "Users&#x27; ratings per policy run" in report or "Users' ratings per policy run" in report
