"""The local, append-only journal of everything pulled from one Argilla dataset.

    <journal_dir>/<workspace>/<dataset>/journal.jsonl

Lines are `{"kind": "record", ...}` (a record's content and metadata, once) and
`{"kind": "response", ...}` (one annotator's submitted or discarded response, each time it changes).
`annotate pull` appends what it reads before doing anything else with it and fsyncs each page, so a
label once pulled survives the server stopping mid-pull and the dataset being deleted; the run is
built from the journal, never from one server answer. Drafts are not journaled: they are unfinished.
The latest journaled response of each (record, annotator) is the one that counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from align.core.errors import AlignError


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self.responses: dict[tuple[str, str], dict[str, Any]] = {}
        self._seen: set[tuple] = set()
        if path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    # Only the last line can be cut (a crash mid-write); anything else is damage.
                    if f.readline():
                        raise AlignError(f"{self.path}:{lineno}: journal line is not JSON; restore it from a backup") from None
                    break
                self._index(entry)

    def _index(self, entry: dict[str, Any]) -> None:
        if entry["kind"] == "record":
            self.records[entry["record_id"]] = entry
        else:
            key = (entry["record_id"], entry["user_id"])
            self._seen.add(_response_key(entry))
            current = self.responses.get(key)
            if current is None or entry["updated_at"] >= current["updated_at"]:
                self.responses[key] = entry

    def is_new_response(self, entry: dict[str, Any]) -> bool:
        return _response_key(entry) not in self._seen

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Append and fsync: when this returns, the entries are on disk."""
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for entry in entries:
            self._index(entry)


def _response_key(entry: dict[str, Any]) -> tuple:
    return (entry["record_id"], entry["user_id"], entry["updated_at"], entry["status"])


def journal_path(journal_dir: Path, workspace: str, dataset: str) -> Path:
    for part, what in ((workspace, "workspace"), (dataset, "dataset")):
        if not part or "/" in part or part.startswith("."):
            raise AlignError(f"{what} name {part!r} cannot name a journal folder (no '/', not starting with '.')")
    return journal_dir / workspace / dataset / "journal.jsonl"
