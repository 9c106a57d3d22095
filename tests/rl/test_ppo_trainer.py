"""align's PPO trainer on tiny models: it learns a scripted reward with bounded KL, and the reward
read through the value model (adapter off) is the reward model's own score."""

from __future__ import annotations

import pytest
import torch

from align.rl.ppo import PPOSettings, PPOTrainer, reward_model_scorer
from align.rollout import encode_prompts

# Trains or samples the tiny model (make test runs it; make test-fast does not).
pytestmark = pytest.mark.slow

TARGET = " happy"


def lora(task):
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type=task)


@pytest.fixture(scope="module")
def boosted_model(tiny_model, tmp_path_factory):
    """The tiny model with the target token's embedding scaled up (norm 8), so a LoRA adapter can make
    it likely; on the plain random model no token can rise far above 1/49152 through an adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("boosted")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    target = tokenizer.encode(TARGET, add_special_tokens=False)
    assert len(target) == 1
    with torch.no_grad():
        row = model.get_input_embeddings().weight[target[0]]
        row.mul_(8.0 / row.norm())
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build(path, reward_fn, kl_coef, seed=0, **settings):
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(path), lora("CAUSAL_LM"))
    value = get_peft_model(AutoModelForSequenceClassification.from_pretrained(path, num_labels=1), lora("SEQ_CLS"))
    value.config.pad_token_id = tokenizer.pad_token_id
    trainer = PPOTrainer(
        policy,
        value,
        tokenizer,
        reward_fn,
        PPOSettings(**settings),
        kl_coef=kl_coef,
        learning_rate=2e-3,
        max_new_tokens=6,
        temperature=1.0,
    )
    return trainer, tokenizer


def test_ppo_raises_a_scripted_reward_with_bounded_kl(boosted_model):
    """+1 per occurrence of the target word: reward must rise clearly; the KL to the reference must
    stay within what the reward gain can pay for at this kl_coef (the KL-regularised objective
    never trades more than gain / kl_coef nats of KL)."""
    kl_coef = 0.2
    trainer, tokenizer = build(
        boosted_model,
        lambda prompts, texts: [float(t.count(TARGET.strip())) for t in texts],
        kl_coef,
        ppo_epochs=2,
        minibatch_size=4,
    )
    prompts = [[{"role": "user", "content": f"Say something nice {i}"}] for i in range(4)]
    ids = encode_prompts(tokenizer, prompts)
    history = [trainer.step(prompts, ids) for _ in range(6)]
    first, last = history[0]["reward"], max(h["reward"] for h in history[-2:])
    assert last >= first + 2.0, [round(h["reward"], 2) for h in history]
    gain = max(h["reward"] for h in history) - first
    assert all(0 <= h["kl"] <= gain / kl_coef + 1.0 for h in history[1:]), [round(h["kl"], 2) for h in history]
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the adapter starts at zero: policy = reference


def test_first_minibatch_ratio_is_one(boosted_model):
    # Learning rate 0: every recomputed log-prob must equal the rollout's, so nothing is clipped and the
    # approximate KL is 0. A mismatch (positions, padding, temperature) would show here.
    trainer, tokenizer = build(boosted_model, lambda p, t: [0.0] * len(t), 0.1, ppo_epochs=1, minibatch_size=2)
    for group in trainer.optimizer.param_groups:
        group["lr"] = 0.0
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A much longer prompt than that"}]]
    metrics = trainer.step(prompts, encode_prompts(tokenizer, prompts))
    assert metrics["clip_fraction"] == 0.0 and metrics["approx_kl"] < 1e-8


def test_reward_through_the_value_model_is_the_reward_models_score(tiny_model):
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    plain.config.pad_token_id = tokenizer.pad_token_id
    shared = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    shared.config.pad_token_id = tokenizer.pad_token_id
    shared.load_state_dict(plain.state_dict())
    value = get_peft_model(shared, lora("SEQ_CLS"))
    with torch.no_grad():  # a trained value adapter and value head
        for p in value.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    prompts = [[{"role": "user", "content": "Hello"}], [{"role": "user", "content": "How are you today?"}]]
    replies = ["Hi there.", "Fine, thanks for asking!"]
    expected = reward_model_scorer(plain, tokenizer, 128, 2)(prompts, replies)
    through_value = reward_model_scorer(value, tokenizer, 128, 2, adapter_off=value.disable_adapter)(prompts, replies)
    with_adapter = reward_model_scorer(value, tokenizer, 128, 2)(prompts, replies)
    assert through_value == pytest.approx(expected, abs=1e-5)
    assert with_adapter != pytest.approx(expected, abs=1e-3)
