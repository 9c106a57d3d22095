"""QLoRA (`quantization: 4bit | 8bit`): the bitsandbytes config built from the setting, the clear
error on a machine without CUDA (before any run directory or weights), and the setting reaching the
model loader of each training stage."""

from __future__ import annotations

import pytest
import torch

from align import models
from align.cli import main
from align.core import device

STAGES = ["sft", "reward", "dpo"]


def test_4bit_follows_the_qlora_recipe():
    cfg = models.quantization_config("4bit")
    assert cfg.load_in_4bit and not cfg.load_in_8bit
    assert cfg.bnb_4bit_quant_type == "nf4"
    assert cfg.bnb_4bit_use_double_quant is True
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16
    assert cfg.llm_int8_skip_modules is None


def test_8bit_and_none():
    cfg = models.quantization_config("8bit", skip_modules=["score"])
    assert cfg.load_in_8bit and not cfg.load_in_4bit and cfg.llm_int8_skip_modules == ["score"]
    assert models.quantization_config("none") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_without_cuda_exits_2_with_one_line_and_no_run(stage, bits, tmp_path, capsys):
    runs = tmp_path / "runs"
    # A model path that does not exist: the quantization error must come before any model is looked at.
    rc = main(
        [
            stage,
            f"quantization={bits}",
            f"model={tmp_path / 'no-model'}",
            f"data.train={tmp_path / 'no.jsonl'}",
            f"runs_dir={runs}",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"align: error: 'quantization={bits}' needs a CUDA GPU (bitsandbytes quantizes on the GPU) and "
        "none is available here; set quantization=none to train unquantized on this machine"
    ]
    assert not runs.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the point is a machine without CUDA")
@pytest.mark.parametrize("stage", STAGES)
def test_dry_run_of_a_qlora_config_works_without_cuda(stage, tiny_model, easy_pairs, tmp_path, capsys):
    """Parsing and checking a QLoRA config needs no GPU (a CPU login node); only running it does."""
    runs = tmp_path / "runs"
    fmt = ["data.format=preference-chosen"] if stage == "sft" else []
    common = [
        f"model={tiny_model}",
        f"data.train={easy_pairs}",
        "quantization=4bit",
        f"runs_dir={runs}",
        "max_length=128",
        *fmt,
    ]
    assert main([stage, *common, "--dry-run"]) == 0
    capsys.readouterr()
    assert main([stage, *common]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not runs.exists()


@pytest.mark.parametrize("stage", STAGES)
def test_quantization_without_lora_is_an_error(stage, tmp_path, capsys):
    rc = main([stage, "quantization=4bit", "lora.enabled=false", f"runs_dir={tmp_path / 'runs'}"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trains a LoRA adapter on frozen quantized weights" in err[0]
    assert "lora.enabled=true or quantization=none" in err[0]


def test_unknown_quantization_is_an_error(capsys):
    assert main(["sft", "quantization=3bit", "--dry-run"]) == 2
    assert "quantization" in capsys.readouterr().err


class Loaded(Exception):
    """Raised by the stand-in from_pretrained once it has seen the loading arguments."""


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_loads_its_base_quantized(stage, tiny_model, easy_pairs, tmp_path, monkeypatch):
    """With CUDA and bitsandbytes assumed present, the stage hands a 4bit config to from_pretrained."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    monkeypatch.setattr(device, "check_quantization", lambda quantization: None)
    seen = {}

    def fake_from_pretrained(*args, **kwargs):
        seen.update(kwargs)
        raise Loaded

    cls = AutoModelForSequenceClassification if stage == "reward" else AutoModelForCausalLM
    monkeypatch.setattr(cls, "from_pretrained", fake_from_pretrained)
    from importlib import import_module

    from align.core.config import load_config

    module = import_module(f"align.stages.{stage}")
    fmt = ["data.format=preference-chosen"] if stage == "sft" else []
    cfg = load_config(
        module.Config,
        None,
        [
            f"model={tiny_model}",
            f"data.train={easy_pairs}",
            "quantization=4bit",
            f"runs_dir={tmp_path / 'runs'}",
            "max_length=128",
            *fmt,
        ],
    )
    with pytest.raises(Loaded):
        module.run(cfg)
    bnb = seen["quantization_config"]
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert bnb.llm_int8_skip_modules == (["score"] if stage == "reward" else None)
    assert seen["device_map"] == {"": 0}


def test_quantized_load_freezes_the_base_for_adapters(tiny_model, monkeypatch):
    """After the quantized load, peft's prepare_model_for_kbit_training leaves no base weight trainable.

    bitsandbytes needs CUDA, so the stand-in loads the tiny model unquantized; what is checked is what
    align does with the model it gets back.
    """
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained.__func__
    seen = {}

    def unquantized(cls, *args, **kwargs):
        seen["quantization_config"] = kwargs.pop("quantization_config", None)
        kwargs.pop("device_map", None)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(unquantized))
    source = models.resolve_model(str(tiny_model))
    plain = models.load_policy(source)
    assert all(p.requires_grad for p in plain.parameters()) and seen["quantization_config"] is None
    prepared = models.load_policy(source, quantization="4bit")
    assert seen["quantization_config"].load_in_4bit
    assert not any(p.requires_grad for p in prepared.parameters())
    assert all(p.dtype == torch.float32 for p in prepared.parameters())
