"""Per-GPU memory and step time of a training stage, estimated from the model's shape alone.

For `--dry-run` and recipe READMEs: the shape comes from a config.json (a local model directory, the
base of a run, the Hugging Face cache) or, failing that, from a small table of known architectures;
no weights are read and nothing is downloaded. Where no shape is found the estimate says "unknown"
instead of failing the dry run.

Every figure is computed by formula, not measured. The formulas follow how align loads and trains:
- weights in the stage's `dtype`; QLoRA keeps the blocks' linear layers in NF4 (0.5 byte/param plus
  ~0.127 bit/param of double-quantized scales, Dettmers et al. 2023) or int8, and
  `peft.prepare_model_for_kbit_training` casts everything else (embeddings, head, norms) to fp32;
- LoRA adapters in fp32 (peft's `autocast_adapter_dtype`): weight, gradient and AdamW's two states,
  16 bytes per trainable parameter; full fine-tuning keeps gradient and AdamW states in the weights'
  dtype (torch's AdamW allocates its states like the parameter), so 3x the weights on top of them;
- activations per token in 16 bits: with gradient checkpointing (TRL's default) each block's input is
  kept plus one block's working set while it is recomputed; the working set of a Llama/Qwen block is
  8H + 3*kv + 4I values (norms, q/k/v/o, rotary copies, SwiGLU), and LoRA keeps a dropout copy of each
  adapted layer's input (6H + I); SDPA/flash attention keeps no seq x seq scores;
- logits: tokens x vocab x 10 bytes (bf16 logits, the fp32 copy the loss takes, its gradient);
- every sequence padded to `max_length`, so token counts, memory and time are upper bounds;
- ZeRO-3 / FSDP full sharding divides weights, gradients and optimizer states by the GPU count, not
  activations; DDP and QLoRA (one quantized copy per process) divide nothing;
- CUDA context and allocator slack: 0.8 GB plus 10% of the rest;
- time: FLOPs per token 2N forward, 2N backward through activations, 2N more for weight gradients
  (full fine-tuning only), 2N recomputation with checkpointing, 2N for DPO's reference forward,
  at an assumed model-FLOPs utilisation of an H100's dense bf16 peak.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1e9
H100_BF16_FLOPS = 989e12
"""Dense bf16 peak of an H100 SXM (NVIDIA's data sheet, without sparsity)."""
ASSUMED_MFU = 0.35
"""Model-FLOPs utilisation assumed for step times (an assumption, not a measurement)."""
H100_MEMORY_GB = 80.0
CONTEXT_GB = 0.8
FRAGMENTATION = 0.10
NF4_BYTES = 0.5 + 0.127 / 8
INT8_BYTES = 1.0 + 4 / 64  # int8 weights plus a fp32 scale per row of 64-ish values (approximate)
VLLM_RESERVE_GB = 3.0
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Sequences each training example puts through the model: a pair is chosen + rejected.
SEQUENCES_PER_EXAMPLE = {"sft": 1, "reward": 2, "dpo": 2}
# Published config.json values, for dry runs of a hub id that is not in the local cache.
KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-7B-Instruct": dict(
        hidden_size=3584,
        num_hidden_layers=28,
        vocab_size=152064,
        intermediate_size=18944,
        num_attention_heads=28,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        model_type="qwen2",
    ),
    "meta-llama/Llama-3.1-8B-Instruct": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        vocab_size=128256,
        intermediate_size=14336,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
        model_type="llama",
    ),
    "mistralai/Mistral-7B-Instruct-v0.3": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        vocab_size=32768,
        intermediate_size=14336,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
        model_type="mistral",
    ),
    "embedded": dict(
        hidden_size=576,
        num_hidden_layers=30,
        vocab_size=49152,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
        model_type="llama",
    ),
}
KNOWN_ARCHITECTURES["Qwen/Qwen2.5-7B"] = KNOWN_ARCHITECTURES["Qwen/Qwen2.5-7B-Instruct"]
KNOWN_ARCHITECTURES["meta-llama/Llama-3.1-8B"] = KNOWN_ARCHITECTURES["meta-llama/Llama-3.1-8B-Instruct"]


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer's shape (Llama, Qwen2, Mistral families), as config.json gives it."""

    hidden_size: int
    num_layers: int
    vocab_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    attention_bias: bool
    """q/k/v projections with biases (Qwen2)."""
    source: str
    """Where the shape came from, for the printed estimate."""

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str) -> Architecture:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        return cls(
            hidden_size=hidden,
            num_layers=int(config["num_hidden_layers"]),
            vocab_size=int(config["vocab_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            source=source,
        )

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def block_linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one block, by module name."""
        h, kv, i = self.hidden_size, self.kv_size, self.intermediate_size
        q = self.num_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def block_linear_params(self) -> int:
        """Weights of all blocks' linear layers: what QLoRA quantizes."""
        return self.num_layers * sum(a * b for a, b in self.block_linears().values())

    @property
    def other_params(self) -> int:
        """Embeddings, norms and biases (the causal-LM head is counted by `params`)."""
        h = self.hidden_size
        bias = (self.num_heads * self.head_dim + 2 * self.kv_size) if self.attention_bias else 0
        return self.vocab_size * h + self.num_layers * (2 * h + bias) + h

    def head_params(self, head: str) -> int:
        """`lm`: the vocabulary head (none of its own when tied); `score`: a reward model's one output."""
        if head == "score":
            return self.hidden_size
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def params(self, head: str = "lm") -> int:
        return self.block_linear_params + self.other_params + self.head_params(head)

    def lora_params(self, r: int, target_modules: list[str]) -> int:
        """Adapter parameters: r x (in + out) per adapted linear layer of every block."""
        linears = self.block_linears()
        names = list(linears) if "all-linear" in target_modules else [n for n in linears if n in target_modules]
        return self.num_layers * sum(r * (linears[n][0] + linears[n][1]) for n in names)


def find_architecture(ref: str) -> Architecture | None:
    """The shape of model `ref` without loading or downloading it; None where nothing says it."""
    path = Path(ref).expanduser()
    from align.core import runs

    if runs.is_run(path):
        from align.models import base_of

        base = base_of(str(path))
        return find_architecture(base) if base != str(path) else None
    if (path / "config.json").is_file():
        return Architecture.from_config(_read_json(path / "config.json"), f"{path}/config.json")
    cached = _hub_cached_config(ref)
    if cached is not None:
        return Architecture.from_config(_read_json(cached), f"{ref}'s config.json in the Hugging Face cache")
    if ref in KNOWN_ARCHITECTURES:
        return Architecture.from_config(KNOWN_ARCHITECTURES[ref], f"align's table of known architectures ({ref})")
    return None


def _read_json(path: Path) -> dict[str, Any]:
    config = json.loads(path.read_text(encoding="utf-8"))
    return config.get("text_config", config)  # multimodal configs nest the language model's


def _hub_cached_config(ref: str) -> Path | None:
    parts = ref.split("/")
    if len(parts) != 2 or not all(parts) or ref.startswith((".", "~", "/")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(ref, "config.json")  # cache only: never the network
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


@dataclass
class Estimate:
    """Per-GPU bytes of one training stage, by part, and the time of one optimizer step."""

    stage: str
    params: int
    trainable: int
    tokens_per_micro_batch: int
    tokens_per_step: int
    parts: dict[str, float]
    """Bytes per GPU: weights, reference, trainable (+ gradients and optimizer), activations, logits, overhead."""
    gpus: int
    sharded: bool
    step_seconds: float

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def estimate(
    stage: str,
    arch: Architecture,
    *,
    dtype: str,
    quantization: str,
    lora_enabled: bool,
    lora_r: int,
    lora_targets: list[str],
    max_length: int,
    batch_size: int,
    accumulation: int,
    gradient_checkpointing: bool,
    gpus: int = 1,
    sharded: bool = False,
    separate_reference: bool = False,
) -> Estimate:
    """Per-GPU memory of `stage` (sft, reward or dpo) training `arch` on `gpus` GPUs.

    `sharded`: ZeRO-3 / FSDP full sharding (weights, gradients, optimizer states divided by `gpus`).
    `separate_reference`: DPO holds a second, frozen copy of the policy as its reference (full
    fine-tuning, or `reference` set to another model); with LoRA the reference is the base with the
    adapter disabled and costs nothing.
    """
    head = "score" if stage == "reward" else "lm"
    weight_bytes = DTYPE_BYTES.get(dtype, 2)  # `auto` (and anything unknown) taken as a GPU's bfloat16
    params = arch.params(head)
    shards = gpus if sharded and quantization == "none" else 1

    if quantization == "none":
        weights = params * weight_bytes
    else:
        per_linear = NF4_BYTES if quantization == "4bit" else INT8_BYTES
        weights = arch.block_linear_params * per_linear + (params - arch.block_linear_params) * 4
    if lora_enabled:
        trainable = arch.lora_params(lora_r, lora_targets) + (arch.head_params("score") if stage == "reward" else 0)
        trainable_bytes = trainable * 16
    else:
        trainable = params
        trainable_bytes = params * weight_bytes * 3  # gradient + AdamW's two states, in the weights' dtype
    reference = weights if stage == "dpo" and separate_reference else 0.0

    tokens = batch_size * SEQUENCES_PER_EXAMPLE[stage] * max_length
    h, i = arch.hidden_size, arch.intermediate_size
    working = 8 * h + 3 * arch.kv_size + 4 * i + ((6 * h + i) if lora_enabled else 0)
    per_token_values = (arch.num_layers * h + working) if gradient_checkpointing else arch.num_layers * working
    activations = tokens * per_token_values * 2
    logits = tokens * arch.vocab_size * 10 if head == "lm" else 0.0

    parts = {
        "weights": weights / shards,
        "reference": reference / shards,
        "trainable": trainable_bytes / shards,
        "activations": activations,
        "logits": logits,
    }
    parts["overhead"] = CONTEXT_GB * GB + FRAGMENTATION * sum(parts.values())

    flops_per_token = params * (
        2 + 2 + (0 if lora_enabled else 2) + (2 if gradient_checkpointing else 0) + (2 if stage == "dpo" else 0)
    )
    tokens_per_step = tokens * accumulation * gpus
    step_seconds = tokens_per_step * flops_per_token / (gpus * H100_BF16_FLOPS * ASSUMED_MFU)
    return Estimate(stage, params, trainable, tokens, tokens_per_step, parts, gpus, shards > 1, step_seconds)


def kv_cache_bytes_per_token(arch: Architecture, dtype_bytes: int = 2) -> int:
    """vLLM's KV cache for one token: keys and values of every layer."""
    return 2 * arch.num_layers * arch.kv_size * dtype_bytes


# -- the dry run's printout -------------------------------------------------------------------------


def launch_layout() -> tuple[int, bool]:
    """GPU count and sharding of the current launch, from what `accelerate launch` / torchrun set."""
    gpus = int(os.environ.get("WORLD_SIZE", "1") or 1)
    sharded = (
        os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )
    return gpus, sharded


def dry_run_report(stage: str, cfg, default_training: dict[str, Any]) -> str:
    """The lines `--dry-run` prints for a training stage (or vLLM generation): estimated memory per GPU,
    or why it is unknown."""
    if stage not in SEQUENCES_PER_EXAMPLE and not (stage == "generate" and cfg.engine in ("vllm", "auto")):
        return ""
    head = "# memory per GPU, estimated (computed from the model's shape, not measured; align/memory.py):\n"
    ref = cfg.policy if stage == "generate" else cfg.model
    arch = find_architecture(ref)
    if arch is None:
        return (
            head + f"memory_estimate: unknown (no config.json for '{ref}' in a local directory, a run's base "
            "or the Hugging Face cache, and not in align's table of known architectures)\n"
        )
    if stage == "generate":
        return head + _vllm_report(ref, arch, cfg)
    training = {**default_training, **cfg.training}
    batch = int(training.get("per_device_train_batch_size", 8))
    accumulation = int(training.get("gradient_accumulation_steps", 1))
    checkpointing = bool(training.get("gradient_checkpointing", True))  # TRL's configs default it on
    common = dict(
        dtype=cfg.dtype,
        quantization=cfg.quantization,
        lora_enabled=cfg.lora.enabled,
        lora_r=cfg.lora.r,
        lora_targets=list(cfg.lora.target_modules),
        max_length=cfg.max_length,
        batch_size=batch,
        accumulation=accumulation,
        gradient_checkpointing=checkpointing,
        separate_reference=stage == "dpo" and (not cfg.lora.enabled or getattr(cfg, "reference", None) is not None),
    )
    gpus, sharded = launch_layout()
    here = estimate(stage, arch, gpus=gpus, sharded=sharded, **common)
    lines = {
        "model": cfg.model,
        "shape_from": arch.source,
        "parameters": f"{here.params / 1e9:.2f}B",
        "weights_dtype": cfg.dtype
        if cfg.dtype in DTYPE_BYTES
        else f"{cfg.dtype} (taken as bfloat16, what a bf16 GPU resolves it to)",
        "trainable": _trainable_text(here, cfg),
        "tokens_per_micro_batch": here.tokens_per_micro_batch,
        "launch": f"{gpus} GPU(s), {'sharded (ZeRO-3/FSDP)' if here.sharded else 'one full copy per GPU'}",
        "per_gpu_gb": {k: round(v / GB, 2) for k, v in here.parts.items()},
        "total_per_gpu_gb": round(here.total / GB, 1),
        "fits_80gb_h100": here.total <= H100_MEMORY_GB * GB,
        "optimizer_step_s": f"{here.step_seconds:.2f} ({here.tokens_per_step} tokens at an assumed "
        f"{ASSUMED_MFU:.0%} MFU of an H100)",
    }
    if cfg.quantization == "none" and not (gpus == 8 and sharded):
        eight = estimate(stage, arch, gpus=8, sharded=True, **common)
        lines["if_sharded_over_8_gpus_gb"] = round(eight.total / GB, 1)
    import yaml

    return head + yaml.safe_dump({"memory_estimate": lines}, sort_keys=False, width=200)


def _vllm_report(ref: str, arch: Architecture, cfg) -> str:
    """vLLM on an 80 GB H100: weights split over tensor-parallel GPUs, the rest of its memory share as KV cache."""
    import yaml

    tp = int(getattr(cfg.vllm, "tensor_parallel_size", 1) or 1)
    max_model_len = getattr(cfg.vllm, "max_model_len", None)
    weight_bytes = DTYPE_BYTES.get(cfg.dtype, 2)
    weights = arch.params("lm") * weight_bytes / tp
    budget = cfg.vllm.gpu_memory_utilization * H100_MEMORY_GB * GB
    kv_per_token = kv_cache_bytes_per_token(arch, weight_bytes) / tp
    # vLLM keeps room for one forward of its largest batch and CUDA graphs: ~2-4 GB at 7B (assumed 3).
    kv_tokens = max(0.0, budget - weights - VLLM_RESERVE_GB * GB) / kv_per_token
    lines: dict[str, Any] = {
        "model": ref,
        "shape_from": arch.source,
        "parameters": f"{arch.params('lm') / 1e9:.2f}B",
        "tensor_parallel_size": tp,
        "weights_gb": round(weights / GB, 2),
        "kv_cache_kib_per_token": round(kv_per_token / 1024, 1),
        "kv_cache_gb": round(max(0.0, budget - weights - VLLM_RESERVE_GB * GB) / GB, 1),
        "kv_cache_tokens": int(kv_tokens),
    }
    if max_model_len:
        lines["full_length_sequences_at_once"] = int(kv_tokens // max_model_len)
    lines["assumes"] = (
        f"an 80 GB GPU, vllm.gpu_memory_utilization={cfg.vllm.gpu_memory_utilization}, "
        f"{VLLM_RESERVE_GB:.0f} GB for activations and CUDA graphs"
    )
    return yaml.safe_dump({"memory_estimate": lines}, sort_keys=False, width=200)


def _trainable_text(est: Estimate, cfg) -> str:
    if not cfg.lora.enabled:
        return f"{est.trainable / 1e9:.2f}B (all weights)"
    quant = {"4bit": ", QLoRA 4bit base", "8bit": ", QLoRA 8bit base"}.get(cfg.quantization, "")
    return f"{est.trainable / 1e6:.1f}M (LoRA r{cfg.lora.r}{quant})"
