"""Shared fixtures: tiny, randomly initialised models with the real tokenizer.

Tests train a 2-layer Llama (hidden 64) that shares SmolLM2's tokenizer and chat template, so every
code path (chat templates, padding, LoRA targets, saving, lineage) is the real one while a training
step takes milliseconds. The real embedded model is used only by tests marked `slow`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from align.model_cache import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A local Hugging Face directory with a tiny Llama and SmolLM2's tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def easy_pairs(tmp_path) -> Path:
    """Synthetic preference pairs with an easy rule: chosen is polite, rejected is curt."""
    topics = [
        "the weather",
        "my order",
        "the invoice",
        "a refund",
        "the schedule",
        "the meeting",
        "my password",
        "the delivery",
        "the report",
        "the booking",
        "my account",
        "the update",
    ]
    rows = []
    for i, topic in enumerate(topics * 4):
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Can you help me with {topic}? ({i})"}],
                "chosen": [{"role": "assistant", "content": "Of course, happy to help! Thank you for asking."}],
                "rejected": [{"role": "assistant", "content": "No. Figure it out yourself."}],
            }
        )
    return write_jsonl(tmp_path / "easy_pairs.jsonl", rows)


REPO_DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """The public data sets shipped in the repository (data/README.md lists them); never skipped."""
    return REPO_DATA


@pytest.fixture(scope="session")
def argilla(tmp_path_factory):
    """A real local Argilla (tests/annotate/conftest.py's LocalArgilla), one per test session."""
    from tests.annotate.conftest import LocalArgilla

    server = LocalArgilla(tmp_path_factory.mktemp("argilla-home"))
    server.start()
    yield server
    server.stop()
