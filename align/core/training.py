"""What the training stages share: the common config fields, TRL arguments, and step logging.

Stages pass TRL/transformers arguments through the `training:` section untouched (checked against
the TRL config class before anything runs); align sets only what it owns: where to write, how to
log, and seeds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from align.core.config import check_passthrough
from align.core.errors import AlignError
from align.models import Dtype

log = logging.getLogger(__name__)

# Arguments align sets itself; a user setting them in `training:` gets an error, not a silent override.
RESERVED_TRAINING_ARGS = {"output_dir", "logging_dir", "report_to", "save_strategy", "push_to_hub"}


@dataclass
class ModelSettings:
    """How the model is loaded (shared by every training stage)."""

    dtype: Dtype = "float32"
    """Weights dtype. float32 on CPUs without bf16 units; bfloat16 on recent GPUs."""
    trust_remote_code: bool = False
    """Run model code shipped with a checkpoint. Off unless you trust its source."""


def training_arguments(cls: type, section: dict[str, Any], output_dir: str, defaults: dict[str, Any]):
    """`cls` (a TRL config) from align's defaults, then the user's `training:` section over them."""
    check_passthrough(section, cls, "training", RESERVED_TRAINING_ARGS)
    kwargs = {**defaults, **section}
    kwargs.update(
        output_dir=output_dir,
        report_to=[],
        save_strategy="no",  # align saves the final model itself, into the run directory
        include_num_input_tokens_seen="all",
    )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise AlignError(f"training arguments rejected by {cls.__name__}: {str(exc).splitlines()[0]}") from None


def check_training_section(cls_path: str, section: dict[str, Any]) -> None:
    """Check `training:` keys early (before a run directory is created)."""
    module, name = cls_path.rsplit(".", 1)
    import importlib

    cls = getattr(importlib.import_module(module), name)
    check_passthrough(section, cls, "training", RESERVED_TRAINING_ARGS)


def step_logger(run, metric_names: dict[str, str]):
    """A transformers callback: one log line per logging step, and the same numbers in metrics.jsonl.

    `metric_names` maps a trainer log key to the short label shown in the line (e.g.
    {"rewards/accuracies": "acc"}).
    """
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        def __init__(self):
            self.start = None
            self.last_time = None
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_time = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or self.start is None:
                return
            now = time.time()
            tokens = getattr(state, "num_input_tokens_seen", 0) or 0
            elapsed = now - self.start
            record = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            if tokens and now > self.last_time:
                record["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
            self.last_time, self.last_tokens = now, tokens
            run.log_metrics(record, step=state.global_step)
            if state.global_step == 0 or "train_runtime" in logs:
                return
            parts = [f"step {state.global_step}/{state.max_steps}"]
            for key, label in metric_names.items():
                if key in logs and isinstance(logs[key], (int, float)):
                    parts.append(f"{label} {logs[key]:.4g}")
            if "tokens_per_s" in record:
                parts.append(f"{record['tokens_per_s']:.0f} tok/s")
            per_step = elapsed / max(state.global_step, 1)
            parts.append(f"{per_step:.2f} s/step")
            parts.append(f"ETA {format_seconds(per_step * (state.max_steps - state.global_step))}")
            log.info(" | ".join(parts))

    return StepLogger()


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

