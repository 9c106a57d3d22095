"""`align generate` with the hf engine on the tiny model: output contract, manifest, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.cli import main
from align.core import runs
from tests.conftest import write_jsonl

PROMPTS = [
    "Name a colour.",
    "What is two plus two?",
    "Say hello in French, please, in one short word.",
    {"messages": [{"role": "user", "content": "Tell me a fact."}]},
]


def generate(tmp_path: Path, tiny_model: Path, name: str, *overrides: str) -> dict:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    code = main(
        [
            "generate",
            f"prompts={prompts}",
            f"policy={tiny_model}",
            "engine=hf",
            "sampling.n=3",
            "sampling.max_tokens=6",
            "batch_size=4",
            f"runs_dir={tmp_path / 'runs'}",
            f"name={name}",
            *overrides,
        ]
    )
    assert code == 0
    return runs.read_manifest(tmp_path / "runs" / name)


def rows(manifest: dict) -> list[dict]:
    path = runs.output_path(manifest["path"], manifest, "generations")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_generate_writes_the_contract(tmp_path, tiny_model):
    manifest = generate(tmp_path, tiny_model, "gen")
    out = rows(manifest)
    assert len(out) == len(PROMPTS)
    assert out[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert out[0]["source"].endswith("prompts.jsonl:1") and out[3]["source"].endswith("prompts.jsonl:4")
    for row in out:
        assert len(row["responses"]) == 3 and all(isinstance(r, str) for r in row["responses"])
        assert all(1 <= t <= 6 for t in row["response_tokens"])
        assert set(row["finish_reasons"]) <= {"stop", "length"}
    metrics = manifest["metrics"]
    assert metrics["prompts"] == 4 and metrics["responses"] == 12
    assert metrics["new_tokens"] == sum(sum(r["response_tokens"]) for r in out)
    assert metrics["tokens_per_s"] > 0 and metrics["prompts_per_s"] > 0
    assert manifest["notes"]["engine"] == "hf"
    assert manifest["notes"]["sampling"]["n"] == 3 and manifest["notes"]["sampling"]["max_tokens"] == 6
    assert manifest["notes"]["policy"] == str(tiny_model.resolve())
    assert {i["role"] for i in manifest["inputs"]} == {"prompts", "policy"}


@pytest.mark.slow
def test_same_seed_same_outputs_other_seed_differs(tmp_path, tiny_model):
    first = rows(generate(tmp_path, tiny_model, "a", "sampling.seed=3", "sampling.temperature=1.0"))
    again = rows(generate(tmp_path, tiny_model, "b", "sampling.seed=3", "sampling.temperature=1.0"))
    other = rows(generate(tmp_path, tiny_model, "c", "sampling.seed=4", "sampling.temperature=1.0"))
    assert [r["responses"] for r in first] == [r["responses"] for r in again]
    assert [r["responses"] for r in first] != [r["responses"] for r in other]


@pytest.mark.slow
def test_greedy_ignores_batching(tmp_path, tiny_model):
    """Greedy decoding with left padding gives the same text whatever the batch: padding is masked."""
    one = rows(generate(tmp_path, tiny_model, "g1", "sampling.temperature=0", "sampling.n=1", "batch_size=1"))
    many = rows(generate(tmp_path, tiny_model, "g4", "sampling.temperature=0", "sampling.n=1", "batch_size=4"))
    assert [r["responses"] for r in one] == [r["responses"] for r in many]


@pytest.mark.slow
def test_top_k_is_what_the_config_says(tiny_model):
    """top_k=0 samples from the whole vocabulary (transformers' default top_k=50 is not applied)."""
    import torch

    from align.models import load_tokenizer, resolve_model
    from align.rollout import SamplingSettings, encode_prompts
    from align.rollout.hf_engine import HFEngine

    source = resolve_model(str(tiny_model))
    tokenizer = load_tokenizer(source)
    engine = HFEngine(source, tokenizer, batch_size=64)
    ids = encode_prompts(tokenizer, [[{"role": "user", "content": "Pick a word."}]])
    with torch.inference_mode():
        logits = engine.model(torch.tensor(ids)).logits[0, -1]
    top50 = set(logits.topk(50).indices.tolist())

    def first_tokens(top_k):
        engine.eos_ids = []  # keep every sampled first token, end of turn included
        out = engine.generate(ids, SamplingSettings(n=64, temperature=1.0, top_p=1.0, top_k=top_k, max_tokens=1))
        return [tokenizer.encode(c.text, add_special_tokens=False) for c in out[0]]

    # The random tiny model's next-token distribution is nearly flat over ~49k tokens.
    unrestricted = [t[0] for t in first_tokens(0) if t]
    assert sum(t not in top50 for t in unrestricted) > len(unrestricted) // 2
    restricted = [t[0] for t in first_tokens(50) if t]
    assert restricted and all(t in top50 for t in restricted)


def test_auto_falls_back_to_hf_without_vllm(monkeypatch, caplog):
    import logging
    import sys

    import pytest

    from align.core.errors import AlignError
    from align.rollout.engines import choose_engine

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vllm were not installed
    with caplog.at_level(logging.INFO, logger="align"):
        assert choose_engine("auto") == "hf"
    assert "using hf because the vllm package is not installed" in caplog.text
    with pytest.raises(AlignError, match="engine 'vllm' requested but"):
        choose_engine("vllm")


@pytest.mark.slow
def test_checkpoint_generation_defaults_are_not_applied(tmp_path, tiny_model):
    """A generation_config.json with repetition_penalty / no_repeat_ngram_size the config never set
    must not change the outputs: they equal those of the same weights without that file."""
    import shutil

    from align.models import load_tokenizer, resolve_model
    from align.rollout import SamplingSettings, encode_prompts
    from align.rollout.hf_engine import HFEngine

    with_defaults = tmp_path / "with-defaults"
    shutil.copytree(tiny_model, with_defaults)
    (with_defaults / "generation_config.json").unlink(missing_ok=True)
    without = tmp_path / "without"
    shutil.copytree(with_defaults, without)
    defaults = json.loads((tiny_model / "config.json").read_text())
    (with_defaults / "generation_config.json").write_text(
        json.dumps(
            {
                "eos_token_id": defaults["eos_token_id"],
                "pad_token_id": defaults["pad_token_id"],
                "repetition_penalty": 5.0,
                "no_repeat_ngram_size": 1,
            }
        )
    )

    conversations = [[{"role": "user", "content": p}] for p in PROMPTS[:3]]
    outputs = {}
    for settings in (
        SamplingSettings(n=1, temperature=0, max_tokens=12),
        SamplingSettings(n=2, temperature=1.0, max_tokens=12, seed=4),
    ):
        for path in (with_defaults, without):
            source = resolve_model(str(path))
            tokenizer = load_tokenizer(source)
            engine = HFEngine(source, tokenizer, batch_size=4)
            outputs[path.name] = [
                [c.text for c in outs] for outs in engine.generate(encode_prompts(tokenizer, conversations), settings)
            ]
            if path is with_defaults:
                # The file is really there and would change greedy decoding if it were applied.
                assert engine.model.generation_config.no_repeat_ngram_size == 1
        assert outputs["with-defaults"] == outputs["without"]
    # Without the fix the file would matter: transformers' own merge gives other outputs.
    import torch

    engine = HFEngine(resolve_model(str(with_defaults)), tokenizer, batch_size=4)
    ids = torch.tensor([encode_prompts(tokenizer, conversations[:1])[0]])
    merged = engine.model.generate(input_ids=ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :].tolist()
    plain = (
        HFEngine(resolve_model(str(without)), tokenizer, batch_size=4)
        .model.generate(input_ids=ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
        .tolist()
    )
    assert merged != plain
