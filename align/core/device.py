"""Where align's own compute runs, in which precision and with which attention kernels: one resolver.

- `process_device()`: the device of this process, accelerate's `PartialState().device` (cuda:LOCAL_RANK
  under a multi-GPU launch, the GPU on a one-GPU machine, the CPU otherwise). Every model align runs
  itself (PPO's policy and value model, reward scoring, evaluation, the hf engine, drift, adapter merges)
  is placed there, and every batch goes to the device of the model that reads it (`model_device`).
  TRL's trainers place their own models; bitsandbytes loads place themselves (`device_map`).
- `resolve_dtype("auto")`: bfloat16 on a CUDA GPU that supports it, float32 everywhere else, float16
  never (see its docstring for why).
- `resolve_attn_implementation("auto")`: flash_attention_2 on CUDA with the flash_attn package and a
  half-precision dtype, else sdpa (PyTorch's fused attention, in every torch align supports).
- `record(run, ...)`: what was resolved, in `run.notes["device"]`. Its shape is a contract read by
  scripts/gpu_check.sh: {"type", "name", "dtype", "attn_implementation", "world_size"} and, on CUDA,
  "peak_memory_bytes". The resolved config keeps what was asked (`auto`); the notes say what ran.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Literal

from align.core import distributed
from align.core.errors import AlignError

if TYPE_CHECKING:
    import torch

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
AttnImplementation = Literal["auto", "eager", "sdpa", "flash_attention_2"]
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def process_device() -> torch.device:
    """This process's device: accelerate's `PartialState().device`.

    Through `distributed._process_group`, which asks accelerate for CPU explicitly on a machine without
    a GPU: otherwise `PartialState()` under a multi-process CPU launch reports a single process.
    """
    return distributed._process_group().device


def model_device(model) -> torch.device:
    """The device a model's weights are on (where its input batches must go)."""
    import torch

    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device | None = None) -> str:
    """The weights dtype `name` stands for on `device` (default: this process's), as a torch dtype name.

    `auto` is bfloat16 on CUDA GPUs with bf16 support (Ampere and later): half the memory of float32 (a 7B
    model's weights are 14 GB instead of 28), full float32 range, and training needs no loss scaler.
    On older CUDA GPUs (V100, T4) auto stays float32 rather than float16: float16 training without a
    gradient scaler under- and overflows, and align's own PPO loop has none; ask for `dtype: float16`
    explicitly to load half-precision weights there for inference. On CPUs auto is float32: on the AVX2
    CPUs align is developed on (no bf16 units) bfloat16 ran a reward model more than 5x slower
    (a plain TRL RewardTrainer on SmolLM2-135M, bf16=True against bf16=False).
    """
    if name in DTYPES:
        return name
    if name != "auto":
        raise AlignError(f"'dtype' must be auto, float32, bfloat16 or float16, got '{name}'")
    device = device if device is not None else process_device()
    if device.type == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "float32"


def torch_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    import torch

    return getattr(torch, resolve_dtype(name, device))


def resolve_attn_implementation(name: str, dtype: str = "auto", device: torch.device | None = None) -> str:
    """The attention implementation transformers is asked for.

    `auto`: flash_attention_2 where it can run (CUDA, the flash_attn package installed, bf16 or fp16
    weights), else sdpa. An explicit choice is honoured or refused, never swapped.
    """
    if name not in ("auto", *ATTN_IMPLEMENTATIONS):
        raise AlignError(f"'attn_implementation' must be auto, eager, sdpa or flash_attention_2, got '{name}'")
    device = device if device is not None else process_device()
    half = resolve_dtype(dtype, device) in ("bfloat16", "float16")
    flash_installed = importlib.util.find_spec("flash_attn") is not None
    if name == "auto":
        return "flash_attention_2" if device.type == "cuda" and flash_installed and half else "sdpa"
    if name == "flash_attention_2":
        if not flash_installed:
            raise AlignError(
                "attn_implementation=flash_attention_2 needs the flash_attn package, which is not "
                "installed: pip install flash-attn --no-build-isolation, or set attn_implementation=sdpa"
            )
        if device.type != "cuda":
            raise AlignError(
                f"attn_implementation=flash_attention_2 runs on CUDA GPUs only; this process runs on "
                f"{device.type}: set attn_implementation=sdpa (or auto)"
            )
        if not half:
            raise AlignError(
                f"attn_implementation=flash_attention_2 needs bfloat16 or float16 weights, got "
                f"dtype={dtype} ({resolve_dtype(dtype, device)}): set dtype=bfloat16 or attn_implementation=sdpa"
            )
    return name


def bf16_training(dtype: str) -> bool:
    """TRL's `bf16` (mixed precision) follows the weights: on where they resolve to bfloat16 (TRL's own
    default of bf16=True would run a CPU's matmuls in a slow path, ~5x slower on AVX2)."""
    return resolve_dtype(dtype) == "bfloat16"


def check_quantization(quantization: str) -> None:
    """Refuse a quantized (QLoRA) load this machine cannot do. Called by a stage right before it runs, not
    while its config is parsed, so `--dry-run` of a QLoRA config works on a CPU login node."""
    if quantization == "none":
        return
    import torch

    if not torch.cuda.is_available():
        raise AlignError(
            f"'quantization={quantization}' needs a CUDA GPU (bitsandbytes quantizes on the GPU) and "
            "none is available here; set quantization=none to train unquantized on this machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise AlignError(
            f"'quantization={quantization}' needs the bitsandbytes package: pip install 'align[qlora]' "
            "(or pip install bitsandbytes)"
        )


def describe(model=None, dtype: str = "auto", attn_implementation: str = "auto") -> dict[str, Any]:
    """What ran: the device of `model` (or this process's without one), the resolved dtype and attention
    implementation (the model's own setting where it has one), the process count and, on CUDA, the peak
    memory torch allocated on that device so far."""
    device = model_device(model) if model is not None else process_device()
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None) if model is not None else None
    described: dict[str, Any] = {
        "type": device.type,
        "name": _device_name(device),
        "dtype": resolve_dtype(dtype, device),
        "attn_implementation": attn or resolve_attn_implementation(attn_implementation, dtype, device),
        "world_size": distributed.world_size(),
    }
    if device.type == "cuda":
        import torch

        described["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return described


def _device_name(device) -> str:
    if device.type == "cuda" and device.index is None:
        import torch

        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def record(run, cfg=None, model=None, dtype: str | None = None, attn_implementation: str | None = None) -> None:
    """`run.notes["device"] = describe(...)`, with dtype and attention taken from `cfg` (a ModelLoading)
    unless given. Call it once the stage's models have run, so the peak memory covers them."""
    dtype = dtype or getattr(cfg, "dtype", "auto")
    attn_implementation = attn_implementation or getattr(cfg, "attn_implementation", "auto")
    run.notes["device"] = describe(model, dtype, attn_implementation)
