"""Checkpoints and resume for the TRL-trainer stages (sft, reward, dpo).

Where checkpoints go. `training.save_strategy: steps` (every `training.save_steps`; `save_total_limit` keeps
the newest N) or `epoch` makes transformers write `checkpoint-N` folders (weights or adapter, optimizer,
scheduler, RNG states, trainer state) into the run while it is written:
`<runs_dir>/.<name>.partial-<pid>/checkpoints/checkpoint-N`. Once every process has written its part of one,
align adds `checkpoint.json` (stage, step, the settings and the hash of the examples it trained on) and a
copy of metrics.jsonl up to that step. A folder without `checkpoint.json` was cut while being written and is
never resumed from. When the run completes, `checkpoints/` is published with it (`keep_checkpoints`, the
default, as TRL keeps them in its output_dir) or deleted (`keep_checkpoints: false`).

A run that stops first keeps them. Killed outright (SIGKILL, out of memory), interrupted (Ctrl-C, a
scheduler's SIGTERM) or failed, a run whose partial directory holds a complete checkpoint leaves it behind:
still hidden (never mistaken for a finished run) and spared by the stale-partial sweep every later run does
in runs_dir, until a run resumed from it takes its checkpoints or you delete it. A partial directory without
a checkpoint is removed as before. Why not a separate checkpoint folder: one run's checkpoints stay with its
config and metrics, a completed run leaves nothing elsewhere, and `resume_from: latest` needs no path.

`resume_from: latest` looks in runs_dir for the partial directories of this stage's stopped runs, and takes
the furthest complete checkpoint written with the same settings and data (the same settings on the same data
retrace the same steps, so further is strictly more done). That run's `checkpoints/` (all of them, so
`save_total_limit` goes on counting them) and `tensorboard/` (TensorBoard drops the steps logged after the
checkpoint when a log restarts) move into the new run, whose metrics.jsonl starts with the lines logged up to
the checkpoint's step; the stopped run's directory is then removed. Nothing to resume is an error (exit 2),
not a fresh start: a run that silently started over would cost the hours the user meant to save and
look resumed. `resume_from: PATH` (a `checkpoint-N` folder of a stopped run, or of a completed run that kept
them) is read where it lies and left there.
Either way `Trainer.train(resume_from_checkpoint=...)` restores weights, optimizer, scheduler, RNG states and
the position in the data, so the later steps log the losses a run that never stopped logs. The manifest
records the checkpoint and its step (`inputs` role `resume_from`, `notes.resume`, `metrics.first_step`).

What must match, as `align ppo` checks for its checkpoints: every setting except those that only say where
and how to log, save and evaluate (`FREE_KEYS`, `FREE_TRAINING_KEYS`, and a stage's post-training evaluation
settings), the starting model's content hash, the training examples in order (after split, token budget and
sample), and the number of processes (it sets the batch). A difference is one line, exit 2, naming it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.core import distributed, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.partials import writer_gone

log = logging.getLogger(__name__)

METRICS_COPY = "metrics.jsonl"  # inside a checkpoint: the run's metrics up to its step
TENSORBOARD_DIR = "tensorboard"
# Top-level settings a resumed run may change: where the run goes and how it resumes.
FREE_KEYS = ("runs_dir", "name", "resume_from", "keep_checkpoints")
# Trainer arguments that do not change what is trained: logging, saving, evaluation (no dropout, no sampling),
# data loading workers, the hub, and those align or transformers set per run or process.
FREE_TRAINING_KEYS = (
    "logging_strategy",
    "logging_steps",
    "logging_first_step",
    "logging_nan_inf_filter",
    "logging_dir",
    "report_to",
    "run_name",
    "project",
    "trackio_space_id",
    "trackio_bucket_id",
    "trackio_static_space_id",
    "disable_tqdm",
    "log_level",
    "log_level_replica",
    "log_on_each_node",
    "include_num_input_tokens_seen",
    "skip_memory_metrics",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "save_on_each_node",
    "restore_callback_states_from_checkpoint",
    "eval_strategy",
    "eval_steps",
    "eval_delay",
    "eval_on_start",
    "eval_accumulation_steps",
    "eval_packing",
    "per_device_eval_batch_size",
    "eval_do_concat_batches",
    "eval_use_gather_object",
    "batch_eval_metrics",
    "prediction_loss_only",
    "bf16_full_eval",
    "fp16_full_eval",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_token",
    "hub_private_repo",
    "hub_always_push",
    "hub_revision",
    "output_dir",
    "resume_from_checkpoint",
    "local_rank",
    "do_train",
    "do_eval",
    "do_predict",
    "ddp_timeout",
)
LATEST = "latest"


def fingerprint(
    cfg, stage: str, args, rows: list[dict], models: list[dict[str, Any] | None], free: tuple[str, ...] = ()
) -> dict:
    """What a checkpoint records of its run and a resumed run must repeat: the settings that change what is
    trained (flattened to dotted keys; `training.*` are the trainer's arguments `args` as resolved, align's and
    TRL's defaults included, so leaving a value at its default and writing it out are the same), the content
    hashes of the models it starts from (`models`: input records, e.g. the policy and DPO's reference, None
    where there is none), and the training examples' hash.
    `free`: the stage's settings that do not change what is trained (top-level keys or sections)."""
    config = to_dict(cfg)
    config.pop("training", None)
    config["training"] = {k: v for k, v in args.to_dict().items() if k not in FREE_TRAINING_KEYS}
    settings = _flatten(json.loads(json.dumps(config, default=str)))
    dropped = {*FREE_KEYS, *free}
    settings = {k: v for k, v in settings.items() if k not in dropped and not any(k.startswith(f"{d}.") for d in free)}
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "stage": stage,
        "settings": settings,
        "model_sha256": [r.get("sha256") if r else None for r in models],
        "examples": len(rows),
        "examples_sha256": digest,
        "processes": distributed.world_size(),
    }


@dataclass
class Resume:
    """A checkpoint to continue from, found and checked before the run directory exists."""

    checkpoint: Path
    """Where the checkpoint lies now."""
    step: int
    """The optimizer step it was written after."""
    stopped_run: Path | None
    """`latest`: the stopped run's partial directory, whose checkpoints the new run takes over."""
    stopped_pid: int | None = None
    """The pid that wrote it (where it is set aside when a run of the same name starts, runs.set_aside_path)."""


def plan(cfg, fingerprint_now: dict) -> Resume | None:
    """The checkpoint `cfg.resume_from` names, checked against this run's fingerprint; None when not resuming."""
    if cfg.resume_from is None:
        return None
    if cfg.resume_from == LATEST:
        return _latest(cfg, fingerprint_now)
    path = Path(cfg.resume_from)
    inside = runs.resumable_checkpoints(path)
    if inside:  # a run or partial directory: its furthest checkpoint
        path = inside[-1]
    info = _read_info(path, cfg.resume_from)
    _check_same(info, fingerprint_now, f"resume_from={cfg.resume_from}")
    return Resume(path, info["step"], None)


def _latest(cfg, now: dict) -> Resume:
    runs_dir = Path(cfg.runs_dir)
    found = []  # (info, checkpoint, the stopped run's partial directory, its writer's pid)
    for partial in sorted(runs_dir.glob(".*.partial*")) if runs_dir.is_dir() else []:
        if not partial.is_dir() or writer_gone(partial) is None:
            continue
        for checkpoint in runs.resumable_checkpoints(partial):
            info = _read_info(checkpoint, str(checkpoint))
            if info.get("stage") == now["stage"]:
                found.append((info, checkpoint, partial, writer_gone(partial)))
    if not found:
        raise AlignError(
            f"resume_from=latest: no checkpoint of a stopped `align {now['stage']}` run in "
            f"runs_dir={cfg.runs_dir} (a run writes them with training.save_strategy=steps); "
            "remove resume_from to start from the beginning, or give a checkpoint directory"
        )
    same = [f for f in found if not _differences(f[0], now)]
    if not same:
        info, checkpoint, _, _ = max(found, key=lambda f: f[0].get("written", ""))
        _check_same(info, now, f"resume_from=latest: the newest checkpoint in runs_dir ({checkpoint})")
    info, checkpoint, partial, pid = max(same, key=lambda f: (f[0]["step"], f[0].get("written", "")))
    return Resume(checkpoint, info["step"], partial, pid)


def _read_info(path: Path, given: str) -> dict:
    try:
        info = json.loads((path / runs.CHECKPOINT_INFO).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AlignError(
            f"{given} is not a complete align checkpoint (no {runs.CHECKPOINT_INFO}); give a "
            f"`{runs.CHECKPOINTS_DIR}/checkpoint-N` directory of an sft, reward or dpo run, "
            "or latest"
        ) from None
    except (OSError, ValueError) as exc:
        raise AlignError(f"{path / runs.CHECKPOINT_INFO} cannot be read ({exc}); give another checkpoint") from None
    return info


def _check_same(info: dict, now: dict, what: str) -> None:
    differences = _differences(info, now)
    if differences:
        raise AlignError(
            f"{what} was written with {differences[0]}; resume with the same settings and data "
            f"({len(differences)} difference{'s' if len(differences) > 1 else ''}: "
            f"{', '.join(d.split('=')[0].split(' (')[0] for d in differences)})"
        )


def _differences(info: dict, now: dict) -> list[str]:
    """Each way the checkpoint's run differs from this one, as 'what=there, this run has here'."""
    out = []
    if info.get("stage") != now["stage"]:
        return [f"stage={info.get('stage')}, this is `align {now['stage']}`"]
    before, after = info.get("settings", {}), now["settings"]
    for key in sorted(set(before) | set(after)):
        if before.get(key, "<unset>") != after.get(key, "<unset>"):
            out.append(f"{key}={before.get(key, '<unset>')!r}, this run has {key}={after.get(key, '<unset>')!r}")
    if info.get("model_sha256") != now["model_sha256"]:
        out.append(
            f"models (content sha256 {_short(info.get('model_sha256'))}), this run starts from "
            f"{_short(now['model_sha256'])}: the model or reference changed"
        )
    if info.get("examples_sha256") != now["examples_sha256"]:
        out.append(
            f"training examples ({info.get('examples')} examples, sha256 "
            f"{str(info.get('examples_sha256'))[:12]}), this run has {now['examples']} (sha256 "
            f"{now['examples_sha256'][:12]}): the data file or its split changed"
        )
    if info.get("processes") != now["processes"]:
        out.append(f"processes ({info.get('processes')}), this run has {now['processes']}: the batch would change")
    return out


# -- inside the run ---------------------------------------------------------------------------------


def take_over(run, resume: Resume | None) -> str | None:
    """Make the run continue from `resume`: move a stopped run's checkpoints in (latest), start metrics.jsonl
    with the lines logged up to the checkpoint, record where it resumed. Returns the checkpoint path for
    `trainer.train(resume_from_checkpoint=...)`, or None."""
    if resume is None:
        return None
    checkpoint = resume.checkpoint
    if resume.stopped_run is not None:
        stopped = resume.stopped_run
        if stopped == Path(run.path):  # the same multi-process run name: opening this run set it aside
            stopped = runs.set_aside_path(stopped, resume.stopped_pid)
        checkpoint = Path(run.path) / runs.CHECKPOINTS_DIR / resume.checkpoint.name
        if run.is_main:
            _move_in(run, stopped)
        distributed.barrier(run.world_size)
    if run.is_main:
        copied = checkpoint / METRICS_COPY
        text = copied.read_text(encoding="utf-8") if copied.is_file() else ""
        if text:
            with open(Path(run.path) / runs.METRICS, "a", encoding="utf-8") as out:
                out.write(text if text.endswith("\n") else text + "\n")
    state = checkpoint / "trainer_state.json"
    run.add_input_record(
        "resume_from",
        {
            "kind": "checkpoint",
            "path": str(resume.checkpoint.resolve()),
            "step": resume.step,
            "sha256": runs.hash_file(state) if state.is_file() else None,
        },
    )
    run.notes["resume"] = {
        "checkpoint": str(resume.checkpoint.resolve()),
        "step": resume.step,
        "stopped_run": resume.stopped_run.name if resume.stopped_run is not None else None,
    }
    run.metrics["first_step"] = resume.step + 1
    log.info(
        "resuming from %s (step %d)%s",
        resume.checkpoint,
        resume.step,
        f"; its checkpoints moved into {run.path}" if resume.stopped_run is not None else "",
    )
    return str(checkpoint)


def _move_in(run, stopped: Path) -> None:
    """The stopped run's checkpoints (and TensorBoard logs) into the new run; then the stopped run goes."""
    target = Path(run.path)
    try:
        os.replace(stopped / runs.CHECKPOINTS_DIR, target / runs.CHECKPOINTS_DIR)
    except FileNotFoundError:
        raise AlignError(
            f"resume_from=latest: the checkpoints in {stopped} were taken by another run started at the "
            "same time; give resume_from a checkpoint directory, or start without resume_from"
        ) from None
    if (stopped / TENSORBOARD_DIR).is_dir():
        os.replace(stopped / TENSORBOARD_DIR, target / TENSORBOARD_DIR)
    complete = set(runs.resumable_checkpoints(target))
    for folder in (target / runs.CHECKPOINTS_DIR).glob("checkpoint-*"):
        if folder not in complete:  # cut while being written: the resumed run writes that step afresh
            shutil.rmtree(folder, ignore_errors=True)
    repoint(target / runs.CHECKPOINTS_DIR, stopped, target)
    shutil.rmtree(stopped, ignore_errors=True)


def repoint(checkpoints: Path, old_root: Path, new_root: Path) -> None:
    """transformers records the best checkpoint by absolute path in each trainer_state.json; follow a move."""
    for state_file in checkpoints.glob("checkpoint-*/trainer_state.json"):
        state = json.loads(state_file.read_text(encoding="utf-8"))
        best = state.get("best_model_checkpoint")
        if best and str(best).startswith(str(old_root)):
            state["best_model_checkpoint"] = str(new_root) + str(best)[len(str(old_root)) :]
            state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def attach(trainer, run, fingerprint_now: dict) -> None:
    """Complete each checkpoint the trainer writes (when `training.save_strategy` asks for them)."""
    if str(getattr(trainer.args.save_strategy, "value", trainer.args.save_strategy)) != "no":
        trainer.add_callback(completing_callback(run, fingerprint_now))


def completing_callback(run, fingerprint_now: dict):
    """A transformers callback: after the trainer has written a checkpoint (every file, every process), the main
    process adds the metrics so far and `checkpoint.json`, the last file, which marks it complete."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class CompleteCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            # Every rank writes its own RNG state into the checkpoint: wait for all of them.
            distributed.barrier(run.world_size)
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
                if (Path(run.path) / runs.METRICS).is_file():
                    shutil.copyfile(Path(run.path) / runs.METRICS, folder / METRICS_COPY)
                info = {
                    **fingerprint_now,
                    "step": state.global_step,
                    "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
                }
                partial = folder / f".{runs.CHECKPOINT_INFO}.partial"
                partial.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
                os.replace(partial, folder / runs.CHECKPOINT_INFO)
                log.info("checkpoint at step %d: %s", state.global_step, folder)
            distributed.barrier(run.world_size)

    return CompleteCheckpoint()


def conclude(run, keep: bool) -> None:
    """After training: publish the checkpoints with the run (paths pointed at its final place) or delete them;
    the manifest says which steps were saved and whether they were kept."""
    folder = Path(run.path) / runs.CHECKPOINTS_DIR
    if not run.is_main or not folder.is_dir():
        return
    steps = [int(p.name.rsplit("-", 1)[1]) for p in runs.resumable_checkpoints(run.path)]
    run.notes["checkpoints"] = {"path": runs.CHECKPOINTS_DIR if keep else None, "steps": steps, "kept": keep}
    if keep:
        # Not a manifest output: hashing optimizer states (tens of GB for a large model) costs minutes, and no
        # stage reads them by hash; resume_from checks checkpoint.json instead.
        repoint(folder, Path(run.path), Path(run.final_path))
    else:
        shutil.rmtree(folder, ignore_errors=True)


def _short(hashes) -> str:
    return " + ".join(str(h)[:12] for h in hashes) if isinstance(hashes, list) else str(hashes)[:12]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # an empty section adds no key: `training: {}` is no training settings
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
