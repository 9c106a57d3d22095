"""Partial directories: written under a hidden name beside their target and renamed into place only
when complete, so nothing that looks finished is ever half-written.

Run directories (`align.core.runs`) and the checkpoints align keeps in its cache (the converted
embedded model, merged policies) are written this way. Each partial directory holds an owner file
(host, pid, the process's start time) while it is written, so one left by a process killed outright
(SIGKILL, out of memory), which could not clean up, is removed the next time a directory is written
beside it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

OWNER = ".align-owner.json"
_PARTIAL = re.compile(r"^\..+\.partial(?:-\d+)?$")  # single-process runs add -<pid>


def write_owner(path: Path) -> None:
    """Who is writing a partial directory: host, pid and the process's start time (pid reuse)."""
    owner = {"host": platform.node(), "pid": os.getpid(), "started": _process_start(os.getpid())}
    (path / OWNER).write_text(json.dumps(owner), encoding="utf-8")


def remove_stale_partials(parent: Path, keep: Callable[[Path], bool] | None = None) -> list[Path]:
    """Remove partial directories in `parent` whose writer is gone (killed, crashed without cleanup).

    A directory is removed only when its owner file says it was written on this host by a process
    that no longer runs: no such pid, a zombie, or a pid reused by a process started at another time.
    Partial directories without an owner file (another tool, a process that is only starting, runs
    by older versions, multi-process runs' rank 0 on another host) are left alone, and so are those
    `keep(path)` is true for (a killed training run's checkpoints, kept for `resume_from`).
    """
    removed = []
    for entry in sorted(parent.iterdir()):
        if not entry.is_dir() or not _PARTIAL.match(entry.name):
            continue
        pid = writer_gone(entry)
        if pid is None or (keep is not None and keep(entry)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("removed %s: left by process %d, which is no longer running", entry, pid)
        removed.append(entry)
    return removed


def writer_gone(path: Path) -> int | None:
    """The pid that wrote partial directory `path` if that process is gone (see `remove_stale_partials`) or
    gave the directory up (`mark_stopped`), else None: still running, this process, another host, or no
    readable owner file."""
    try:
        owner = json.loads((path / OWNER).read_text(encoding="utf-8"))
        pid, host, started = int(owner["pid"]), owner.get("host"), owner.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != platform.node():
        return None
    if owner.get("stopped"):
        return pid
    if pid == os.getpid() or _process_alive(pid, started):
        return None
    return pid


def mark_stopped(path: Path) -> None:
    """Record that the writer of partial directory `path` has given it up (a failed run that leaves it
    behind on purpose), so it counts as stale even while that process goes on to other work."""
    owner_file = path / OWNER
    try:
        owner = json.loads(owner_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    owner_file.write_text(json.dumps({**owner, "stopped": True}), encoding="utf-8")


def _process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    now = _process_start(pid)
    if now is None:
        return True  # no /proc: the pid is in use, so assume it is the writer
    return now != "zombie" and (started is None or now == started)


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (Linux /proc), "zombie", or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return "zombie" if fields[0] in ("Z", "X") else fields[19]


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a filesystem or platform without directory fsync
    finally:
        os.close(fd)


@contextmanager
def publishing(target: Path) -> Iterator[Path]:
    """A partial directory beside `target` to write into, renamed to `target` when the block completes.

    On any exception (or Ctrl-C) the partial directory is removed and `target` is untouched. Where
    another process published `target` first (the same checkpoint built from the same inputs), theirs
    is kept and ours removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        write_owner(partial)
        yield partial
        (partial / OWNER).unlink()
        try:
            os.replace(partial, target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
