"""DPO's NLL term on chosen replies (RPO; `rpo_alpha` in older TRL): in TRL 1.16 it is the `sft` loss
type weighted by `training.loss_weights`, which the DPO stage passes through. configs/dpo/rpo.yaml
ships it; this checks that the term is really in the trained loss, with its weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from align.cli import main
from align.core import runs
from align.core.config import load_config
from align.stages import dpo

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "max_length=64",
    "training.max_steps=1",
    "training.logging_steps=1",
    "training.per_device_train_batch_size=2",
    "training.learning_rate=1e-9",
    "lora.enabled=false",
]


def first_loss(tiny_model, pairs, runs_dir, *overrides) -> float:
    m = dpo.run(
        load_config(
            dpo.Config, None, [f"model={tiny_model}", f"data.train={pairs}", f"runs_dir={runs_dir}", *FAST, *overrides]
        )
    )
    return runs.read_manifest(m["path"])["metrics"]["train_loss"]


@pytest.mark.slow
def test_rpo_config_adds_the_chosen_nll_with_its_weight(tiny_model, easy_pairs, tmp_path):
    shipped = yaml.safe_load((ROOT / "configs" / "dpo" / "rpo.yaml").read_text())
    assert shipped["loss_type"] == ["sigmoid", "sft"] and len(shipped["training"]["loss_weights"]) == 2
    dpo_only = first_loss(tiny_model, easy_pairs, tmp_path / "a")
    with_nll = first_loss(
        tiny_model, easy_pairs, tmp_path / "b", "loss_type=[sigmoid,sft]", "training.loss_weights=[1.0,1.0]"
    )
    half_nll = first_loss(
        tiny_model, easy_pairs, tmp_path / "c", "loss_type=[sigmoid,sft]", "training.loss_weights=[1.0,0.5]"
    )
    # At the first step policy = reference, so the DPO term is log 2; the rest is alpha x the chosen replies'
    # per-token NLL under a random tiny model (about log of its 49k vocabulary).
    assert dpo_only == pytest.approx(0.6931, abs=1e-3)
    nll = with_nll - dpo_only
    assert nll > 5
    assert half_nll - dpo_only == pytest.approx(nll / 2, rel=1e-3)


def test_rpo_alpha_itself_is_refused_not_ignored(tiny_model, easy_pairs, tmp_path, capsys):
    code = main(
        [
            "dpo",
            f"model={tiny_model}",
            f"data.train={easy_pairs}",
            f"runs_dir={tmp_path / 'runs'}",
            *FAST,
            "training.rpo_alpha=1.0",
        ]
    )
    assert code == 2 and "training.rpo_alpha" in capsys.readouterr().err and not (tmp_path / "runs").exists()
