"""Checkpoints in the align cache are published whole or not at all: a conversion or merge that fails
part-way (here: the disk fills while the tokenizer is written, after the weights) leaves nothing
behind that a later run could take for a usable checkpoint, and nothing that piles up in the cache."""

from __future__ import annotations

import json
import os
import platform
import subprocess

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from align import model_cache
from align.core.partials import OWNER
from align.models import ModelSource
from align.rollout import merged


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def written(monkeypatch):
    """The partial checkpoint's files at the moment the write fails (so the test knows it was half-written)."""
    seen: list[str] = []
    load_tokenizer = AutoTokenizer.from_pretrained

    def disk_full(*args, **kwargs):
        for partial in model_cache.cache_dir().rglob(f".*.partial-{os.getpid()}"):
            seen.extend(p.name for p in partial.iterdir())
        raise OSError(28, "No space left on device")

    def tokenizer_that_cannot_be_saved(path, *args, **kwargs):
        tokenizer = load_tokenizer(path)
        tokenizer.save_pretrained = disk_full
        return tokenizer

    return seen, tokenizer_that_cannot_be_saved


def dead_writers_partial(parent):
    """A partial directory whose writer was killed before it could clean up."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    partial = parent / f".leftover.partial-{proc.pid}"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"half")
    (partial / OWNER).write_text(json.dumps({"host": platform.node(), "pid": proc.pid, "started": "1"}))
    return partial


def test_a_failed_merge_leaves_no_checkpoint_behind(tiny_model, cache, written, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    adapter = tmp_path / "adapter"
    get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=2, task_type="CAUSAL_LM")
    ).save_pretrained(adapter)
    source = ModelSource(str(adapter), tiny_model, [adapter], {})
    stale = dead_writers_partial(cache / merged.MERGED_DIR)
    seen, tokenizer = written
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tokenizer)

    with pytest.raises(OSError, match="No space left"):
        merged.merged_policy_dir(source)
    assert "model.safetensors" in seen  # the weights were written before the failure
    assert list((cache / merged.MERGED_DIR).iterdir()) == []  # nor ours, nor the killed writer's
    assert not stale.exists()

    # With room on the disk the same merge is published whole, without the partial's owner file.
    monkeypatch.undo()
    monkeypatch.setenv("ALIGN_CACHE", str(cache))
    path, cached = merged.merged_policy_dir(source)
    assert not cached and path.parent == cache / merged.MERGED_DIR
    assert (path / "model.safetensors").exists() and (path / "tokenizer_config.json").exists()
    assert not (path / OWNER).exists() and [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_failed_conversion_of_the_embedded_model_leaves_no_checkpoint_behind(tiny_model, cache, written, monkeypatch):
    # The tiny model stands in for the dequantised GGUF (35 s); what is under test is the publishing.
    load_model = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: load_model(tiny_model))
    seen, tokenizer = written
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer(tiny_model))

    with pytest.raises(OSError, match="No space left"):
        model_cache.embedded_model_dir()
    assert "model.safetensors" in seen
    assert list((cache / "models").iterdir()) == []
