"""Prefix sharing computes what TRL's two-rows-per-pair batches compute: same losses, rewards,
log-probs and gradients, for the reward model and DPO, with LoRA and full fine-tuning."""

from __future__ import annotations

import gzip

import pytest
import torch

from align.core.prefix_sharing import (
    CHOSEN,
    PAD,
    REJECTED,
    SHARED,
    common_prefix,
    dpo_trainer_class,
    pack_pairs,
    reward_trainer_class,
)


def test_packing_layout_by_hand():
    # Pair 0: prompt 1 2, chosen 3, rejected 4 5. Pair 1: prompt 6, chosen 7 8 9, rejected 7 0 (0 is pad id).
    ids = torch.tensor([[1, 2, 3, 0], [6, 7, 8, 9], [1, 2, 4, 5], [6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    shared = common_prefix(ids, mask)
    assert shared.tolist() == [2, 2]
    packed = pack_pairs(ids, mask, shared, pad_token_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 2, 3], [0, 1, 2, 3, 0]]
    assert packed.segment.tolist() == [
        [SHARED, SHARED, CHOSEN, REJECTED, REJECTED],
        [SHARED, SHARED, CHOSEN, CHOSEN, PAD],
    ]
    visible = packed.attention_mask(torch.float32)[:, 0] == 0
    # The rejected reply's tokens see the prompt and themselves, never the chosen reply.
    assert visible[0, 3].tolist() == [True, True, False, True, False]
    assert visible[0, 4].tolist() == [True, True, False, True, True]
    assert visible[0, 2].tolist() == [True, True, True, False, False]
    assert visible[1, 4].tolist() == [False, False, False, False, True]  # padding sees only itself
    # Where each token of TRL's rows sits in the packed rows.
    assert packed.index[2].tolist() == [0, 1, 3, 4] and packed.index[3, :2].tolist() == [0, 1]


def hh_rows(repo_data, tmp_path, n):
    from align.data.preferences import load_preference_pairs

    with gzip.open(repo_data / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz", "rt") as f:
        lines = [next(f) for _ in range(n)]
    (tmp_path / "pairs.jsonl").write_text("".join(lines))
    rows = load_preference_pairs(str(tmp_path / "pairs.jsonl")).rows
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def build_trainer(stage, model_dir, rows, lora, sharing, max_length, tmp_path, batch):
    from datasets import Dataset
    from transformers import set_seed

    from align.core.training import LoraConfig, training_arguments
    from align.models import ModelSource, load_policy, load_reward_model, load_tokenizer, peft_config

    source = ModelSource(str(model_dir), model_dir, [], {})
    tokenizer = load_tokenizer(source)
    common = {
        "output_dir": str(tmp_path / "scratch"),
        "per_device_train_batch_size": batch,
        "max_length": max_length,
        "seed": 0,
        "gradient_checkpointing": False,
    }
    set_seed(0)  # the same LoRA initialisation for the shared and the unshared trainer
    if stage == "reward":
        from trl import RewardConfig

        args = training_arguments(RewardConfig, {}, common)
        model = load_reward_model(source, pad_token_id=tokenizer.pad_token_id)
        cls = reward_trainer_class(sharing)
        trainer = cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config(LoraConfig(), "SEQ_CLS") if lora else None,
        )
    else:
        from trl import DPOConfig

        args = training_arguments(DPOConfig, {}, common)
        model = load_policy(source)
        ref = None if lora else load_policy(source)
        cls = dpo_trainer_class(sharing)
        trainer = cls(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config(LoraConfig(), "CAUSAL_LM") if lora else None,
        )
    return trainer


def loss_metrics_grads(trainer):
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    inputs = trainer._prepare_inputs(batch)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {
        n: p.grad.detach().clone()
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and p.grad is not None
    }
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    return loss.detach(), metrics, grads, inputs


def assert_same_computation(stage, model_dir, rows, lora, tmp_path, max_length=256, batch=4, rtol=1e-4, atol=1e-5):
    plain = build_trainer(stage, model_dir, rows, lora, "off", max_length, tmp_path, batch)
    shared = build_trainer(stage, model_dir, rows, lora, "on", max_length, tmp_path, batch)
    loss_a, metrics_a, grads_a, inputs = loss_metrics_grads(plain)
    loss_b, metrics_b, grads_b, _ = loss_metrics_grads(shared)
    assert shared.prefix_sharer.packed_batches >= 1, "the batch was not packed: the test would compare TRL with itself"
    assert torch.allclose(loss_a, loss_b, rtol=rtol, atol=atol), (loss_a, loss_b)
    # Reward model: min/mean/max reward, accuracy, margin. DPO: rewards/chosen, rewards/rejected, logps/chosen,
    # logps/rejected (the policy's log-probs), margins, entropy, mean logits and token accuracy.
    assert metrics_a.keys() == metrics_b.keys()
    for key in metrics_a:
        assert metrics_b[key] == pytest.approx(metrics_a[key], rel=rtol, abs=atol * 10), key
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        scale = grads_a[name].abs().max().item()
        assert torch.allclose(grads_a[name], grads_b[name], rtol=rtol * 10, atol=atol + 1e-4 * scale), name
    return inputs, metrics_a


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_shared_prefix_equals_unshared_on_tiny_model(stage, lora, tiny_model, repo_data, tmp_path):
    rows = hh_rows(repo_data, tmp_path, 24)
    _, metrics = assert_same_computation(stage, tiny_model, rows, lora, tmp_path)
    if stage == "dpo":
        assert metrics["logps/chosen"] != 0 and metrics["rewards/margins"] == metrics["rewards/margins"]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_shared_prefix_equals_unshared_on_embedded_model(stage, lora, repo_data, tmp_path):
    from align.model_cache import embedded_model_dir

    rows = hh_rows(repo_data, tmp_path, 12)
    assert_same_computation(stage, embedded_model_dir(), rows, lora, tmp_path, max_length=192, batch=2)


def test_auto_leaves_batches_alone_when_packing_would_not_save(tiny_model, tmp_path):
    # No shared prefix (plain text, no prompt) and replies of equal length: packing saves no position.
    rows = [{"chosen": "yes" + " yes" * 9, "rejected": "no" + " no" * 9} for _ in range(4)]
    trainer = build_trainer("reward", tiny_model, rows, True, "auto", 256, tmp_path, 4)
    loss_metrics_grads(trainer)
    assert trainer.prefix_sharer.packed_batches == 0 and trainer.prefix_sharer.unpacked_batches == 1


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_stage_trains_with_prefix_sharing_on(stage, tiny_model, repo_data, tmp_path):
    import math

    from align.core.config import load_config
    from align.stages import dpo, reward
    from tests.stages.test_training_stages import FAST, assert_complete_manifest, hh_sample, lora_b_changed

    module = {"reward": reward, "dpo": dpo}[stage]
    manifest = module.run(
        load_config(
            module.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={hh_sample(repo_data, tmp_path)}",
                "data.test_fraction=0.3",
                f"runs_dir={tmp_path / 'runs'}",
                "prefix_sharing=on",
                *FAST,
            ],
        )
    )
    on_disk = assert_complete_manifest(manifest, stage)
    sharing = on_disk["notes"]["prefix_sharing"]
    assert sharing["requested"] == "on" and sharing["mode"] == "on" and sharing["packed_batches"] >= 2
    assert sharing["positions_saved"] > 0
    assert math.isfinite(on_disk["metrics"]["train_loss"]) and lora_b_changed(manifest["path"])


def test_unknown_prefix_sharing_value_is_refused():
    from align.core.config import load_config
    from align.core.errors import AlignError
    from align.stages import reward

    with pytest.raises(AlignError, match="prefix_sharing"):
        load_config(reward.Config, None, ["prefix_sharing=maybe"])


@pytest.mark.parametrize("attention, window", [("flash_attention_2", None), ("sdpa", 64)])
def test_attention_the_mask_cannot_express_refuses_on_and_turns_auto_off(attention, window):
    from types import SimpleNamespace

    from transformers import MistralConfig

    from align.core.errors import AlignError
    from align.core.prefix_sharing import check_attention

    config = MistralConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, sliding_window=window)
    config._attn_implementation = attention
    model = SimpleNamespace(config=config)
    with pytest.raises(AlignError, match="prefix_sharing=true cannot be honoured"):
        check_attention(model, "on")
    assert check_attention(model, "auto") == "off"
    config._attn_implementation, config.sliding_window = "sdpa", None
    assert check_attention(model, "auto") == "auto"
