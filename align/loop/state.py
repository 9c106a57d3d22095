"""The loop's state on disk: `<loop_dir>/loop.json`, written before and after every step.

It says which round and step the loop is at, which policy is current (the last promoted one), and
for every step of every round: started or done, its run directory, its wall time. Each write goes
to a temporary file that is fsynced and renamed over the old one, so a kill -9 at any moment leaves
either the state before or the state after a write, never a torn file.

The run directories are the truth about what finished: a step whose run directory is complete but
whose `done` never reached loop.json (killed between the rename and the state write) is recognised
as done from its manifest; a step marked `started` without a complete run directory is run again
(its partial directory is removed by align.core.runs).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from align.core.errors import AlignError

STATE = "loop.json"
LOOP_PREFIX = "<loop>/"
VERSION = 1


class LoopState:
    def __init__(self, loop_dir: Path, data: dict[str, Any]):
        self.loop_dir = loop_dir
        self.data = data

    @classmethod
    def load(cls, loop_dir: Path) -> LoopState | None:
        path = loop_dir / STATE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AlignError(
                f"{path}: the loop state cannot be read ({exc}); it is written atomically, so this "
                "file was changed by hand or by another tool"
            ) from None
        if data.get("version") != VERSION:
            raise AlignError(f"{path}: loop state version {data.get('version')!r}, this align writes {VERSION}")
        return cls(loop_dir, data)

    def save(self) -> None:
        self.data["updated"] = time.time()
        text = json.dumps(self.data, indent=2, default=str) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{STATE}.", suffix=".tmp", dir=self.loop_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.loop_dir / STATE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.loop_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- rounds ---------------------------------------------------------------------------------
    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.data["rounds"]

    def round(self, n: int) -> dict[str, Any]:
        while len(self.rounds) <= n:
            self.rounds.append({"round": len(self.rounds), "steps": {}, "promoted": None, "reasons": []})
        return self.rounds[n]

    @property
    def current(self) -> dict[str, Any]:
        """The policy the next round starts from, its evaluation run, and the newest reward model."""
        return self.data["current"]

    def rel(self, path: str | Path | None) -> str | None:
        """A path inside the loop directory as relative to it (so a moved loop still resumes)."""
        if path is None:
            return None
        p = Path(path)
        try:
            return LOOP_PREFIX + str(p.resolve().relative_to(self.loop_dir.resolve()))
        except ValueError:
            return str(path)

    def abs(self, path: str | None) -> str | None:
        """Back from `rel`: model references like `embedded` stay as they are."""
        if path is None:
            return None
        if path.startswith(LOOP_PREFIX):
            return str(self.loop_dir / path[len(LOOP_PREFIX) :])
        return path
