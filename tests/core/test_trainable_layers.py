"""`trainable_layers`: only the last N blocks train, the gradients they get are the ones full training
would give them, and backpropagation does not reach below them."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from align.cli import main
from align.core import runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.core.layers import block_stack, freeze_below, lora_targets
from align.models import load_reward_model, load_tokenizer, resolve_model
from align.stages import reward


def _model(tiny_model):
    source = resolve_model(str(tiny_model))
    tokenizer = load_tokenizer(source)
    torch.manual_seed(0)
    return load_reward_model(source, pad_token_id=tokenizer.pad_token_id), tokenizer


def test_frozen_lower_blocks_leave_the_upper_gradients_unchanged(tiny_model):
    model, tokenizer = _model(tiny_model)
    batch = tokenizer(["a short reply", "a somewhat longer reply than that"], return_tensors="pt", padding=True)

    def grads():
        model.zero_grad()
        model(**batch).logits.sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    every = grads()
    assert block_stack(model) == ("model.layers", 2)
    note = freeze_below(model, 1)
    top = grads()
    assert note["blocks"] == "last 1 of 2" and note["frozen_parameters"] > 0
    assert set(top) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith("model.layers.1.") or n.startswith(("model.norm", "score")) for n in top), sorted(top)
    for name, grad in top.items():
        torch.testing.assert_close(grad, every[name])
    # The embeddings (tied to nothing here: a reward model has a score head) and block 0 get no gradient.
    assert (
        not model.model.embed_tokens.weight.requires_grad and model.model.layers[0].self_attn.q_proj.weight.grad is None
    )


def test_backpropagation_stops_at_the_lowest_trainable_block(tiny_model):
    model, tokenizer = _model(tiny_model)
    freeze_below(model, 1)
    seen = []
    model.model.layers[0].register_full_backward_hook(lambda *a: seen.append(0))
    model.model.layers[1].register_full_backward_hook(lambda *a: seen.append(1))
    model(**tokenizer(["hello there"], return_tensors="pt")).logits.sum().backward()
    assert seen == [1]


def test_lora_targets_only_the_last_blocks(tiny_model):
    model, _ = _model(tiny_model)
    names = lora_targets(model, 1, ["all-linear"])
    assert names and all(n.startswith("model.layers.1.") for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert lora_targets(model, 2, ["q_proj"]) == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    with pytest.raises(AlignError, match="trainable_layers=3 but the model has 2 transformer blocks"):
        lora_targets(model, 3, ["all-linear"])


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False])
def test_reward_stage_trains_only_the_top_block(tiny_model, easy_pairs, tmp_path, lora):
    m = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                f"runs_dir={tmp_path / 'runs'}",
                "trainable_layers=1",
                f"lora.enabled={str(lora).lower()}",
                "max_length=64",
                "training.max_steps=2",
                "training.logging_steps=1",
                "training.per_device_train_batch_size=4",
                "training.gradient_checkpointing=true",
            ],
        )
    )
    model_dir = runs.Path(m["path"]) / "model"
    if lora:
        weights = load_file(str(model_dir / "adapter_model.safetensors"))
        adapted = {k for k in weights if "lora_" in k}
        assert adapted and all(".layers.1." in k for k in adapted), sorted(adapted)
        assert m["notes"]["trainable_layers"] == {"lora_blocks": "last 1"}
    else:
        trained = load_file(str(model_dir / "model.safetensors"))
        start = load_file(str(tiny_model / "model.safetensors"))
        assert torch.equal(trained["model.layers.0.mlp.up_proj.weight"], start["model.layers.0.mlp.up_proj.weight"])
        assert torch.equal(trained["model.embed_tokens.weight"], start["model.embed_tokens.weight"])
        assert not torch.equal(trained["model.layers.1.mlp.up_proj.weight"], start["model.layers.1.mlp.up_proj.weight"])
        assert m["notes"]["trainable_layers"]["blocks"] == "last 1 of 2"


def test_too_many_layers_is_exit_2_with_no_run_directory(tiny_model, easy_pairs, tmp_path, capsys):
    code = main(
        [
            "reward",
            f"model={tiny_model}",
            f"data.train={easy_pairs}",
            f"runs_dir={tmp_path / 'runs'}",
            "trainable_layers=5",
            "max_length=64",
            "training.max_steps=1",
        ]
    )
    assert code == 2 and "trainable_layers=5 but the model has 2 transformer blocks" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*/manifest.json")) if (tmp_path / "runs").exists() else True


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_policy_stages_train_only_the_top_block(tiny_model, easy_pairs, tmp_path, stage):
    from align.stages import dpo, sft

    module, extra = {"sft": (sft, ["data.format=preference-chosen"]), "dpo": (dpo, [])}[stage]
    m = module.run(
        load_config(
            module.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                f"runs_dir={tmp_path / 'runs'}",
                "trainable_layers=1",
                "lora.enabled=false",
                "max_length=64",
                "training.max_steps=2",
                "training.logging_steps=1",
                "training.per_device_train_batch_size=4",
                "training.learning_rate=1e-3",
                *extra,
            ],
        )
    )
    trained = load_file(str(runs.Path(m["path"]) / "model" / "model.safetensors"))
    start = load_file(str(tiny_model / "model.safetensors"))
    assert torch.equal(
        trained["model.layers.0.self_attn.q_proj.weight"], start["model.layers.0.self_attn.q_proj.weight"]
    )
    assert not torch.equal(
        trained["model.layers.1.self_attn.q_proj.weight"], start["model.layers.1.self_attn.q_proj.weight"]
    )
    # The output head is tied to the input embeddings here, so both stay as they were.
    assert torch.equal(trained["model.embed_tokens.weight"], start["model.embed_tokens.weight"])
