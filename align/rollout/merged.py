"""Policies with their adapters merged into full weights, cached for the rollout engines.

vLLM on a CPU serves plain weights ~5x faster than base + LoRA (35 new tokens/s against 180), so a
training run's adapters are merged once and kept in the align cache under `merged/` (see
`align.model_cache` for the cache itself). Published whole or not at all
(`align.core.partials.publishing`). This lives in rollout, its only user, because merging loads the
policy through align.models: in align.model_cache (which align.models imports for the embedded
model) it made the two modules import each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from align.core import runs
from align.core.errors import AlignError
from align.core.partials import publishing
from align.model_cache import cache_dir
from align.models import ModelSource, load_policy

log = logging.getLogger(__name__)

MERGED_DIR = "merged"
MERGED_KEEP = 4
"""Merged checkpoints kept in the cache (most recently used first); older ones are removed."""


def merged_policy_dir(source: ModelSource, dtype: str = "auto", trust_remote_code: bool = False) -> tuple[Path, bool]:
    """A full-weight safetensors checkpoint of `source` with all its adapters merged in, and whether it
    came from the cache.

    For engines that serve plain weights faster than base + adapter (vLLM on a CPU: its LoRA kernels
    made 35 new tokens/s against 180 for the base). Cached under `cache_dir()/merged/<key>`, the key a
    hash of the adapters' content, the base's weight files (path, size, mtime) and the dtype, so
    generating from the same policy again skips the merge; the `MERGED_KEEP` most recently used are kept.
    The merge runs on this process's device (align.core.device); `dtype: auto` is keyed by what it resolves to.
    """
    from align.core.device import resolve_dtype

    if not source.adapters:
        raise AlignError(f"{source.ref} has no adapters to merge")
    dtype = resolve_dtype(dtype)
    root = cache_dir() / MERGED_DIR
    target = root / merge_key(source, dtype)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        os.utime(target)  # most recently used: kept by the pruning below
        log.info("merged %d adapter(s) found in the cache: %s", len(source.adapters), target)
        return target, True
    from transformers import AutoTokenizer

    log.info("merging %d adapter(s) into a full-weight checkpoint (cached): %s", len(source.adapters), target)
    with publishing(target) as partial:
        # Merged on the device; save_pretrained copies the weights to the host as it writes.
        load_policy(source, dtype, trust_remote_code, place=True).save_pretrained(partial, safe_serialization=True)
        AutoTokenizer.from_pretrained(source.tokenizer_dir).save_pretrained(partial)
    _prune_merged(root, keep=target)
    return target, False


def merge_key(source: ModelSource, dtype: str) -> str:
    """Content key of a merged policy: adapters by content hash, the base by its weight files' stats
    (hashing 0.5 GB of base weights on every call would cost more than the merge saves)."""
    base_files = sorted(p for p in source.base_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    payload = {
        "base": str(source.base_dir.resolve()),
        "base_files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in base_files],
        "adapters": [runs.hash_path(a) for a in source.adapters],
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _prune_merged(root: Path, keep: Path) -> None:
    entries = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in [p for p in entries if p != keep][MERGED_KEEP - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
