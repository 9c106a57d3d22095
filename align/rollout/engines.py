"""Which rollout engine runs, and building it: the one place the hf/vLLM choice is written.

`align generate`, `align evaluate policy` and `align evaluate retention` all take `engine: auto | vllm | hf`
and the same engine settings; they resolve the name with `choose_engine` (once, so the manifest records
the engine that ran) and load it with `make_engine`. The engines themselves live in `hf_engine` and
`vllm_engine`, imported here only when chosen, so `import align.rollout.engines` needs no vLLM.

Kept out of the package's `__init__` on purpose: the engines import their shared types (`Completion`,
`SamplingSettings`, `VllmSettings`) from `align.rollout`, so the package itself must not import them.
"""

from __future__ import annotations

import logging
from typing import Protocol

from align.core.errors import AlignError
from align.models import ModelSource
from align.rollout import Engine, VllmSettings

log = logging.getLogger(__name__)


class EngineConfig(Protocol):
    """What `make_engine` reads from a stage's config (`ModelLoading` plus the engine settings)."""

    dtype: str
    trust_remote_code: bool
    attn_implementation: str
    batch_size: int
    """hf engine: prompts per `generate` call."""
    vllm: VllmSettings


def vllm_available() -> tuple[bool, str]:
    """Whether vLLM imports here, and if not, why (for the `auto` engine's log line)."""
    from align.rollout.vllm_engine import importable

    return importable()


def choose_engine(name: str) -> str:
    """`hf` or `vllm` for a config's `engine: auto | vllm | hf` (auto: vLLM when it imports, with a log line)."""
    if name not in ("auto", "vllm", "hf"):
        raise AlignError(f"'engine' must be auto, vllm or hf; got {name!r}")
    if name == "hf":
        return "hf"
    ok, why = vllm_available()
    if name == "vllm":
        if not ok:
            raise AlignError(f"engine 'vllm' requested but {why}; or set engine=hf")
        return "vllm"
    if ok:
        log.info("engine auto: using vllm (it imports)")
        return "vllm"
    log.info("engine auto: using hf because %s", why)
    return "hf"


def make_engine(name: str, source: ModelSource, tokenizer, cfg: EngineConfig, max_model_len: int, seed: int) -> Engine:
    """The engine `name` (`hf` or `vllm`, from `choose_engine`) loaded with the policy `source`.

    `max_model_len`: the longest prompt plus its reply budget (vLLM sizes its KV blocks for it rather
    than the model's full context; hf ignores it). `seed`: vLLM's engine seed (hf seeds per `generate` call
    from the sampling settings).
    """
    if name == "hf":
        from align.rollout.hf_engine import HFEngine

        return HFEngine(
            source,
            tokenizer,
            cfg.dtype,
            cfg.batch_size,
            cfg.trust_remote_code,
            attn_implementation=cfg.attn_implementation,
        )
    if name == "vllm":
        from align.rollout.vllm_engine import VllmEngine

        return VllmEngine(source, tokenizer, cfg.dtype, cfg.vllm, max_model_len, seed, cfg.trust_remote_code)
    raise AlignError(f"no rollout engine {name!r}: resolve the config's engine with choose_engine first (hf or vllm)")
