"""What the training stages share: the common config fields, TRL arguments, and step logging.

Stages pass TRL/transformers arguments through the `training:` section untouched (checked against
the TRL config class before anything runs); align sets only what it owns: where to write, how to
log, and seeds. Checkpoints (`training.save_strategy`, `save_steps`, `save_total_limit`) go into the
run and resume with `resume_from` (align/core/checkpoints.py); evaluation during training
(`training.eval_strategy`, `eval_steps`) measures the stage's held-out split (`eval_split`).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from align.core import distributed, runs
from align.core.config import check_passthrough
from align.core.device import AttnImplementation, bf16_training
from align.core.errors import AlignError

log = logging.getLogger(__name__)

# Arguments align sets itself; a user setting them in `training:` gets an error, not a silent override.
RESERVED_TRAINING_ARGS = {"output_dir", "push_to_hub"}
# Arguments the trainers accept but align's stages cannot honour, with the reason given to the user.
UNSUPPORTED_TRAINING_ARGS = {
    "resume_from_checkpoint": "transformers' scripts read it, its Trainer does not; set `resume_from: latest` "
    "(or a checkpoint directory) at the top level of the config instead",
}
# Where TensorBoard's event files go inside a run (`training.report_to: [tensorboard]`).
TENSORBOARD_DIR = "tensorboard"

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Quantization = Literal["none", "4bit", "8bit"]


@dataclass
class LoraConfig:
    """LoRA settings (peft). LoRA is the default for every stage; `enabled: false` trains all weights."""

    enabled: bool = True
    """Train a LoRA adapter (true) or all weights (false)."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Modules to adapt; `all-linear` is every linear layer except the output head."""

    def __post_init__(self):
        if self.r < 1:
            raise AlignError(f"'lora.r' must be >= 1, got {self.r}")


@dataclass
class ModelLoading:
    """How models are loaded (every stage that loads one); resolved by align/core/device.py, and what they
    resolved to is recorded in the manifest's `notes.device`."""

    dtype: Dtype = "auto"
    """Weights dtype. auto: bfloat16 on CUDA GPUs that support it, float32 elsewhere (bf16 is ~5x slower on
    CPUs without bf16 units; float16 only when asked, since training it needs a loss scaler)."""
    attn_implementation: AttnImplementation = "auto"
    """Attention kernels: auto (flash_attention_2 on CUDA where flash_attn is installed and weights are
    half precision, else sdpa) | eager | sdpa | flash_attention_2."""
    trust_remote_code: bool = False
    """Run model code shipped with a checkpoint. Off unless you trust its source."""


@dataclass
class Checkpointing:
    """Checkpoints and resume of the TRL-trainer stages (sft, reward, dpo, kto): align/core/checkpoints.py.

    Checkpoints are written when `training.save_strategy` is `steps` (every `training.save_steps`) or
    `epoch`, into the run's own `checkpoints/` (`training.save_total_limit` keeps the newest N).
    """

    resume_from: str | None = None
    """Continue a run that stopped before it completed: `latest` (the furthest checkpoint of a killed,
    interrupted or failed run of this stage in runs_dir with the same settings and data; nothing found is an
    error, not a fresh start) or a checkpoint directory (`<run>/checkpoints/checkpoint-N`; a run directory: its
    furthest). Settings that change
    what is trained, the starting model and the training examples must be those the checkpoint was written
    with (a difference is an error naming it); logging, saving and evaluation settings may change."""
    keep_checkpoints: bool = True
    """Publish the checkpoints with the completed run (`checkpoints/`), as TRL keeps them in its output_dir:
    they let you resume to train on or pick an earlier step. false deletes them once the run is complete
    (a full 7B checkpoint with its optimizer state is ~80-100 GB; use it when they are only crash insurance)."""


@dataclass
class TrainStageConfig(runs.RunOutput, ModelLoading):
    """Fields every training stage has. Stages subclass this and add `data` and their own options."""

    model: str = "embedded"
    """Starting model: `embedded`, a local Hugging Face directory, an earlier run directory, or a hub id."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapter settings (`lora.enabled: false` for full fine-tuning)."""
    max_length: int = 512
    """Token budget per example (chat template included); longer examples are counted and left out."""
    training: dict[str, Any] = field(default_factory=dict)
    """Arguments passed to the TRL trainer config (learning_rate, max_steps, per_device_train_batch_size, ...)."""
    trainable_layers: int | None = None
    """Train only the last N transformer blocks (and the final norm and heads): with LoRA the adapter goes only
    there, without it everything below is frozen. Backpropagation then stops at those blocks, so a step costs
    less (align/core/layers.py); null trains all."""
    seed: int = 42
    """Seed for adapter initialisation, data order and dropout."""
    quantization: Quantization = "none"
    """QLoRA: load the frozen base in 4bit (NF4, double quantization, bf16 compute) or 8bit with bitsandbytes; CUDA and LoRA only."""

    def __post_init__(self):
        if self.max_length < 8:
            raise AlignError(f"'max_length' must be at least 8 tokens, got {self.max_length}")
        if self.trainable_layers is not None and self.trainable_layers < 1:
            raise AlignError(f"'trainable_layers' must be at least 1 (or null for all), got {self.trainable_layers}")
        if self.quantization != "none":
            check_quantization(self.quantization, self.lora.enabled)


def check_quantization(quantization: str, lora_enabled: bool) -> None:
    """Refuse a quantized config that cannot train (while parsing). Whether this machine can load it
    (CUDA, bitsandbytes) is checked when the stage runs (`align.core.device.check_quantization`), so a
    QLoRA config can be dry-run on a machine without a GPU."""
    if not lora_enabled:
        raise AlignError(
            f"'quantization={quantization}' trains a LoRA adapter on frozen quantized weights (QLoRA); "
            "it cannot train all weights: set lora.enabled=true or quantization=none"
        )


# TRL's configs require an output_dir, and transformers' Trainer creates it when constructed. Until the
# stage binds it into the run, it points under the system's temporary directory: a relative placeholder
# made an empty folder in the user's current directory whenever a trainer was built from unbound arguments.
UNBOUND_OUTPUT_DIR = str(Path(tempfile.gettempdir()) / f"align-output-dir-not-bound-{os.getpid()}")


def training_arguments(cls: type, section: dict[str, Any], defaults: dict[str, Any], dtype: str = "auto"):
    """`cls` (a TRL config) from align's defaults, then the user's `training:` section over them.

    Built before the run directory exists, so a rejected value fails before anything is written;
    the stage points `output_dir` into its run afterwards (`bind_output_dir`). TRL's config classes
    check only some values when constructed; others (a negative learning rate, an optimizer beta of
    2, a batch size of 0, scheduler arguments) fail only when the trainer builds its optimizer or
    starts its loop. So the user's values are type-checked against the config's annotations, and the
    optimizer and scheduler are built here once on a one-element parameter: whatever TRL or torch
    rejects becomes an AlignError naming the `training.` key that caused it. `bf16` follows the weights'
    resolved `dtype` (align.core.device.bf16_training) unless `training.bf16` says otherwise.
    """
    check_passthrough(section, cls, "training", RESERVED_TRAINING_ARGS)
    for key, reason in UNSUPPORTED_TRAINING_ARGS.items():
        if section.get(key, "no") not in ("no", None):
            raise AlignError(f"'training.{key}={section[key]}' is not supported: {reason}; remove it")
    _check_types(cls, section)

    def build(user: dict[str, Any]):
        # No tracker unless `training.report_to` names one; metrics.jsonl is written either way.
        # No checkpoints unless asked for (align saves the final model itself, into the run directory).
        kwargs = {
            "bf16": bf16_training(dtype),
            "report_to": [],
            "save_strategy": "no",
            **_device_defaults(),
            **defaults,
            **user,
        }
        kwargs.update(output_dir=UNBOUND_OUTPUT_DIR, include_num_input_tokens_seen="all")
        args = cls(**kwargs)
        _build_optimization(args)
        return args

    try:
        return build(section)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        key = _culprit(build, section)
        what = f"training.{key}={section[key]}" if key else "the training arguments"
        raise AlignError(
            f"{what} is not accepted by TRL's {cls.__name__} or the optimizer it sets up: {reason}"
        ) from None


# Counts TRL's configs accept out of range and the trainer then fails on inside its loop (the data
# loader, or a division by the accumulation steps): name -> smallest valid value.
_COUNT_MINIMUMS = {
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "dataloader_num_workers": 0,
}
# Optimizers built from torch/transformers alone; others (bitsandbytes, GaLore, ...) need packages
# or the real model to build, so they are left to the trainer.
_CHECKABLE_OPTIMIZERS = {"adamw_torch", "adamw_torch_fused", "sgd", "adagrad", "rmsprop", "adafactor"}


def _build_optimization(args) -> None:
    """Build the optimizer and LR scheduler the trainer will build, on a one-element parameter."""
    import torch
    from transformers import Trainer
    from transformers.optimization import get_scheduler

    for name, minimum in _COUNT_MINIMUMS.items():
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if str(getattr(args.optim, "value", args.optim)) not in _CHECKABLE_OPTIMIZERS:
        return
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    optimizer_kwargs.pop("fused", None)  # a device choice, not a value to check; the probe is on the CPU
    optimizer = optimizer_cls([torch.nn.Parameter(torch.zeros(1))], **optimizer_kwargs)
    steps = 100
    get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(steps),
        num_training_steps=steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )


def _culprit(build, section: dict[str, Any]) -> str | None:
    """The user key whose removal (back to align's or TRL's default) makes `build` succeed."""
    for key in section:
        try:
            build({k: v for k, v in section.items() if k != key})
        except Exception:
            continue
        return key
    return None


def _check_types(cls: type, section: dict[str, Any]) -> None:
    """Each user value against the config field's annotation (TRL's dataclasses do not check types)."""
    import typing

    from align.core.config import coerce

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: leave the values to TRL
        return
    for key, value in section.items():
        if key in hints:
            coerce(hints[key], value, f"training.{key}")


@contextmanager
def trainer_refusals(trainer_name: str, section: dict[str, Any], building: bool):
    """Settings a trainer accepts in its config but refuses later, as exit 2 instead of a traceback.

    `training_arguments` catches what can be checked before any run directory exists. Some settings
    fail only when the trainer is built (`torch_compile_backend=nonexistent` is a ValueError inside
    accelerate) or when training starts (`use_liger_kernel=true` without the liger-kernel package is an
    ImportError). Around construction (`building=True`) ValueError, TypeError and ImportError are the
    settings' fault; around `train()` only ImportError is: a ValueError there can be align's own bug
    and keeps its traceback. The run directory is discarded by `new_run` as for any failure.
    """
    errors: tuple[type[BaseException], ...] = (ValueError, TypeError, ImportError) if building else (ImportError,)
    try:
        yield
    except errors as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        named = [
            k
            for k, v in section.items()
            if k in message or (isinstance(v, str) and len(v) > 2 and v.lower() in message.lower())
        ]
        keys = named or list(section)
        where = (
            f"set by training.{', training.'.join(keys)}" if keys else "with align's defaults (no `training:` keys set)"
        )
        what = "a package it needs is not installed" if isinstance(exc, ImportError) else "it refused a setting"
        raise AlignError(f"{trainer_name}: {what} ({message}); {where}") from None


def _device_defaults() -> dict[str, Any]:
    """Launched as several processes on a machine without a GPU: data parallel on CPU over gloo.

    transformers sets up CPU data parallelism only when told the run is on CPU (`use_cpu`, or
    `accelerate launch --cpu`, which on one machine starts a single process). Without it, each
    process of `torchrun` / `accelerate launch --multi_gpu` trains its own copy on all the data.
    """
    if distributed.world_size() > 1 and not distributed.accelerator_available():
        return {"use_cpu": True}
    return {}


def bind_output_dir(args, run) -> None:
    """Point the trainer's output_dir into the run: its `checkpoints/` when checkpoints are written
    (transformers counts `save_total_limit` there), else a scratch folder discard_trainer_scratch removes."""
    saving = str(getattr(args.save_strategy, "value", args.save_strategy)) != "no"
    args.output_dir = str(Path(run.path) / (runs.CHECKPOINTS_DIR if saving else "trainer"))


def evaluating(args) -> bool:
    """Whether the trainer evaluates during training (`training.eval_strategy` other than no)."""
    return str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"


def eval_split(args, validation, test, what: str):
    """The held-out rows the trainer evaluates during training (`training.eval_strategy`), and their split name.

    The validation split (`data.validation_fraction`) where there is one, else the test split. A checkpoint is
    chosen by these figures only on a validation split: chosen on the test split, the run's test figures would be
    optimistic. None when evaluation during training is off.
    """
    if not evaluating(args):
        return None
    if validation:
        return "validation", validation
    if not test:
        raise AlignError(
            f"training.eval_strategy={getattr(args.eval_strategy, 'value', args.eval_strategy)} evaluates "
            f"held-out {what} during training, and this run has none; set data.test_fraction (e.g. 0.1) or "
            "data.test, or remove training.eval_strategy"
        )
    choosing = [k for k in ("load_best_model_at_end",) if getattr(args, k, False)]
    if choosing or str(getattr(args.save_strategy, "value", args.save_strategy)) == "best":
        key = f"training.{choosing[0]}=true" if choosing else "training.save_strategy=best"
        raise AlignError(
            f"{key} chooses a checkpoint by its evaluation, which here is the test split: its test figures "
            "would then be optimistic; hold out a validation split (data.validation_fraction, e.g. 0.1) "
            f"or remove {key.split('=')[0]}"
        )
    return "test", test


def eval_dataset(run, evaluation, to_rows=list):
    """The trainer's `eval_dataset` for `evaluation` (what `eval_split` returned), recorded in the manifest's
    notes; None when the trainer evaluates only after training."""
    if evaluation is None:
        return None
    from datasets import Dataset

    name, rows = evaluation
    run.notes["eval_during_training"] = {"split": name, "rows": len(rows)}
    return Dataset.from_list(to_rows(rows))


def step_logger(run, metric_names: dict[str, str], callbacks: list | None = None):
    """A transformers callback: one log line per logging step, and the same numbers in metrics.jsonl.

    `metric_names` maps a trainer log key to the short label shown in the line (e.g.
    {"rewards/accuracies": "acc"}). `callbacks` (the trainer's list) is searched for trackers when
    training begins, to record them in the manifest.
    """
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        def __init__(self):
            self.start = None
            self.last_time = None
            self.last_tokens = 0
            self.first_step = 0
            self.training = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_time = time.time()
            # A resumed run starts at its checkpoint's step: the ETA counts only this process's steps.
            self.first_step = state.global_step
            self.last_tokens = getattr(state, "num_input_tokens_seen", 0) or 0
            self.training = True
            # This callback comes after the trackers' own, so their runs exist by now.
            trackers = tracker_records(callbacks or [])
            if trackers:
                run.notes["trackers"] = trackers

        def on_train_end(self, args, state, control, **kwargs):
            self.training = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or self.start is None:
                return
            now = time.time()
            tokens = getattr(state, "num_input_tokens_seen", 0) or 0
            elapsed = now - self.start
            record = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            evaluation = any(k.startswith("eval_") for k in logs)
            if tokens and now > self.last_time and not evaluation:
                record["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
            # After an evaluation too, so the next step's tokens/s leaves the evaluation's time out.
            self.last_time, self.last_tokens = now, tokens
            run.log_metrics(record, step=state.global_step)
            if evaluation:
                if not self.training:
                    return  # an evaluation after training: the stage logs its own summary of it
                # An evaluation during training: its own line, the same labels on the held-out figures.
                parts = [f"eval at step {state.global_step}/{state.max_steps}"]
                for key, label in metric_names.items():
                    if isinstance(logs.get(f"eval_{key}"), (int, float)):
                        parts.append(f"{label} {logs[f'eval_{key}']:.4g}")
                if isinstance(logs.get("eval_runtime"), (int, float)):
                    parts.append(f"{logs['eval_runtime']:.1f} s")
                log.info(" | ".join(parts))
                return
            if state.global_step == 0 or "train_loss" in logs:
                return  # the end-of-training summary gets no step line
            parts = [f"step {state.global_step}/{state.max_steps}"]
            for key, label in metric_names.items():
                if key in logs and isinstance(logs[key], (int, float)):
                    parts.append(f"{label} {logs[key]:.4g}")
            if "tokens_per_s" in record:
                parts.append(f"{record['tokens_per_s']:.0f} tok/s")
            per_step = elapsed / max(state.global_step - self.first_step, 1)
            parts.append(f"{per_step:.2f} s/step")
            parts.append(f"ETA {format_seconds(per_step * (state.max_steps - state.global_step))}")
            log.info(" | ".join(parts))

    return StepLogger()


def attach_logging(trainer, run, metric_names: dict[str, str]) -> None:
    """Our one-line-per-step log instead of the trainer's printed dicts; its progress bar (ETA) stays.

    Trackers named in `training.report_to` keep their own callbacks; TensorBoard writes into the
    run (`tensorboard/`), and each tracker's name and run id or log dir go into the manifest's notes.
    """
    from transformers.trainer_callback import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer.remove_callback(ProgressCallback)
    if not trainer.args.disable_tqdm:
        trainer.add_callback(BarOnly)
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback":
            # transformers would write under output_dir, the trainer scratch align removes.
            callback.logging_dir = str(Path(run.path) / TENSORBOARD_DIR)
    trainer.add_callback(step_logger(run, metric_names, trainer.callback_handler.callbacks))


def tracker_records(callbacks) -> dict[str, dict[str, Any]]:
    """Name and run id or local directory of each tracker callback (TensorBoard, W&B, MLflow, ...)."""
    records: dict[str, dict[str, Any]] = {}
    for callback in callbacks:
        name = type(callback).__name__
        if not name.endswith("Callback") or name in _OWN_CALLBACKS:
            continue
        tracker = name.removesuffix("Callback").lower()
        if tracker == "tensorboard":
            records[tracker] = {"log_dir": TENSORBOARD_DIR}
        elif tracker == "wandb":
            import wandb

            records[tracker] = (
                {"run_id": wandb.run.id, "project": wandb.run.project, "url": wandb.run.url} if wandb.run else {}
            )
        elif tracker == "mlflow":
            import mlflow

            active = mlflow.active_run()
            records[tracker] = {
                "run_id": active.info.run_id if active else None,
                "tracking_uri": mlflow.get_tracking_uri(),
            }
        else:
            records[tracker] = {}
    return records


# The trainer's own callbacks (and align's); anything else in the list is a tracker from report_to.
_OWN_CALLBACKS = {
    "DefaultFlowCallback",
    "ProgressCallback",
    "PrinterCallback",
    "BarOnly",
    "StepLogger",
    "EarlyStoppingCallback",
}


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def final_train_metrics(trainer) -> dict[str, Any]:
    """The last value of each logged training metric, plus runtime figures."""
    out: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        for k, v in entry.items():
            if isinstance(v, (int, float)) and not k.startswith("eval_"):
                out[k] = v
    out["global_step"] = trainer.state.global_step
    return out


def count_trainable(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total}


def discard_trainer_scratch(run) -> None:
    """Remove the trainer's output_dir: align saves the model itself, so it only holds scratch."""
    import shutil

    shutil.rmtree(Path(run.path) / "trainer", ignore_errors=True)
