"""Training arguments TRL, transformers or torch would reject fail before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.cli import main


@pytest.mark.parametrize(
    "stage, override, key",
    [
        ("sft", "training.learning_rate=-1", "training.learning_rate"),
        ("reward", "training.learning_rate=-1", "training.learning_rate"),
        ("dpo", "training.learning_rate=-1", "training.learning_rate"),
        ("sft", "training.lr_scheduler_type=cosin", "training.lr_scheduler_type"),
        ("reward", "training.warmup_steps=-3", "training.warmup_steps"),
        ("dpo", "training.adam_beta1=2", "training.adam_beta1"),
        ("sft", "training.adam_epsilon=-1", "training.adam_epsilon"),
        ("reward", "training.per_device_train_batch_size=0", "training.per_device_train_batch_size"),
        ("dpo", "training.gradient_accumulation_steps=0", "training.gradient_accumulation_steps"),
        ("sft", "training.max_steps=abc", "training.max_steps"),
        ("reward", "training.lr_scheduler_kwargs={foo: 1}", "training.lr_scheduler_kwargs"),
        ("reward", "training.resume_from_checkpoint=somewhere", "training.resume_from_checkpoint"),
        ("sft", "training.dataloader_num_workers=-1", "training.dataloader_num_workers"),
    ],
)
def test_rejected_training_values_exit_2_naming_the_key(stage, override, key, tiny_model, easy_pairs, tmp_path, capsys):
    data = [f"data.train={easy_pairs}"] + (["data.format=preference-chosen"] if stage == "sft" else [])
    code = main(
        [
            stage,
            f"model={tiny_model}",
            *data,
            "max_length=64",
            "training.max_steps=1",
            override,
            f"runs_dir={tmp_path / 'runs'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("align: error: ") and key in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_valid_non_default_optimizer_settings_still_pass():
    from trl import SFTConfig

    from align.core.training import training_arguments

    args = training_arguments(
        SFTConfig,
        {"optim": "sgd", "learning_rate": 0.1, "lr_scheduler_type": "constant", "warmup_steps": 0.1, "max_steps": 3},
        {},
    )
    assert args.optim == "sgd" and args.learning_rate == 0.1


def _liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


@pytest.mark.parametrize(
    "stage, override, key",
    [
        # Accepted by the config, refused by accelerate while the trainer is built (a ValueError).
        ("reward", "training.torch_compile_backend=nonexistent", "training.torch_compile_backend"),
        ("dpo", "training.torch_compile_backend=nonexistent", "training.torch_compile_backend"),
        # Accepted by the config and the trainer, refused when training starts (an ImportError).
        pytest.param(
            "sft",
            "training.use_liger_kernel=true",
            "training.use_liger_kernel",
            marks=pytest.mark.skipif(_liger_installed(), reason="liger-kernel is installed here"),
        ),
    ],
)
def test_settings_refused_by_the_trainer_itself_exit_2(stage, override, key, tiny_model, easy_pairs, tmp_path, capsys):
    data = [f"data.train={easy_pairs}"] + (["data.format=preference-chosen"] if stage == "sft" else [])
    code = main(
        [
            stage,
            f"model={tiny_model}",
            *data,
            "max_length=64",
            "training.max_steps=1",
            override,
            f"runs_dir={tmp_path / 'runs'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    # These fail after the stage has started logging: the error is the one `align: error:` line, last.
    errors = [line for line in err.splitlines() if line.startswith("align: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and key in errors[0], err
    assert "Traceback" not in err
    assert "training.max_steps" not in errors[0]  # the key at fault is named, not every key set
    runs_dir = tmp_path / "runs"
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_building_training_arguments_and_a_trainer_from_them_leaves_the_cwd_unchanged(
    tmp_path, monkeypatch, tiny_model
):
    """The arguments exist before the run directory does; whatever they point at until the stage binds them
    must not land in the user's current directory (transformers' Trainer creates output_dir when built)."""
    from transformers import AutoModelForCausalLM, Trainer
    from trl import DPOConfig

    from align.core.training import training_arguments

    monkeypatch.chdir(tmp_path)
    args = training_arguments(DPOConfig, {"max_steps": 1}, {})
    assert list(tmp_path.iterdir()) == []
    Trainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args)
    assert list(tmp_path.iterdir()) == []
    assert not Path(args.output_dir).resolve().is_relative_to(tmp_path.resolve())
