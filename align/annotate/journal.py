"""The local, append-only journal of everything pulled from one Argilla dataset.

    <journal_dir>/<host>_<port>-<hash of api_url>/<workspace>/<dataset>-<dataset id>/journal.jsonl

Keyed by the server (its URL) and the dataset's id, with the readable names kept in the path: two
servers holding a dataset of the same name, or a dataset deleted and created again under its old
name, never share a journal. The journal holds annotators' names and reasons, so its folders are
created 0700 and the file 0600.

Lines are `{"kind": "push", ...}` (written by `annotate push` before it sends a record: the record's
A/B order `shown_as_a` and, for a gold record, the expected candidate `gold`; both are kept out of
the server, where annotators could read them), `{"kind": "record", ...}` (a record's content and
metadata, once) and `{"kind": "response", ...}` (one annotator's response each time its state
changes: `submitted`, `discarded`, or `withdrawn` when a journaled response is back to draft or
deleted on the server).
The latest line of each (record, annotator) is its current state, so the journal keeps the history
and the current state at once. `annotate pull` appends what it reads before doing anything else with
it and fsyncs each batch, so a label once pulled survives the server stopping mid-pull and the
dataset being deleted; the run is built from the journal, never from one server answer.

A crash mid-write can leave the last line cut. Loading ignores such a tail; the next append first
cuts the file back to its last complete line (logging what it removed), so later lines never merge
into a torn one. Drafts are not journaled: they are unfinished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from align.annotate.local import private_dirs
from align.core.errors import AlignError

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
ACTIVE = ("submitted", "discarded")  # states that count; `withdrawn` ends them


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self.pushed: dict[str, dict[str, Any]] = {}  # record id -> its push line (A/B order, gold)
        self.responses: dict[tuple[str, str], dict[str, Any]] = {}
        self._complete_bytes = 0  # length of the file up to its last complete line
        self._torn = b""  # a last line without its newline (cut by a crash)
        if path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        self._complete_bytes, self._torn = end, data[end:]
        for lineno, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise AlignError(
                    f"{self.path}:{lineno}: journal line is not JSON; restore the journal from a backup "
                    "(only a cut last line is repaired automatically)"
                ) from None
            self._index(entry)
        if self._torn:
            try:  # complete but for its newline: keep it, the next append ends the line
                self._index(json.loads(self._torn))
                self._complete_bytes, self._torn = len(data), b"\n"
                return
            except json.JSONDecodeError:
                pass
            log.warning(
                "%s: the last line is cut (%d bytes, a crash mid-write); it is ignored and will be removed "
                "before the next append",
                self.path,
                len(self._torn),
            )

    def _index(self, entry: dict[str, Any]) -> None:
        if entry["kind"] == "record":
            self.records[entry["record_id"]] = entry
        elif entry["kind"] == "push":
            self.pushed[entry["record_id"]] = entry
        else:  # appended in the order the server's states were seen: the latest line is the current state
            self.responses[(entry["record_id"], entry["user_id"])] = entry

    def is_new_response(self, entry: dict[str, Any]) -> bool:
        """Whether `entry` differs from the journaled current state of its (record, annotator)."""
        current = self.responses.get((entry["record_id"], entry["user_id"]))
        return current is None or any(current.get(k) != entry.get(k) for k in ("status", "updated_at", "values"))

    def shown_as_a(self, rid: str) -> str | None:
        """Which candidate ('a' or 'b') record `rid` shows as A: from its push line, else from the record's
        metadata (datasets pushed before the order was kept off the server); None when neither says."""
        if rid in self.pushed:
            return self.pushed[rid]["shown_as_a"]
        return ((self.records.get(rid) or {}).get("metadata") or {}).get("shown_as_a")

    def gold(self, rid: str) -> str | None:
        """The expected candidate of a gold record; None for every other record."""
        return (self.pushed.get(rid) or {}).get("gold")

    def active(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Responses whose current state counts (submitted or discarded)."""
        return {key: resp for key, resp in self.responses.items() if resp["status"] in ACTIVE}

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Append and fsync: when this returns, the entries are on disk."""
        if not entries:
            return
        private_dirs(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as f:
            os.fchmod(f.fileno(), 0o600)
            if self._torn:
                self._heal(f)
            text = "".join(json.dumps(entry, ensure_ascii=False, default=str) + "\n" for entry in entries)
            self._write(f, text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
            self._complete_bytes = os.fstat(f.fileno()).st_size
        for entry in entries:
            self._index(entry)

    def _heal(self, f) -> None:
        """Cut a torn last line so the next line starts on a line of its own."""
        if self._torn == b"\n":  # the last entry was whole, only its newline is missing
            self._write(f, b"\n")
            self._torn = b""
            return
        preview = self._torn[:120].decode("utf-8", "replace")
        log.warning(
            "%s: removing a cut last line (%d bytes, left by a crash mid-write): %s",
            self.path,
            len(self._torn),
            preview,
        )
        f.truncate(self._complete_bytes)
        f.flush()
        os.fsync(f.fileno())
        self._torn = b""

    def _write(self, f, data: bytes) -> None:
        f.write(data)


def server_folder(api_url: str) -> str:
    """A folder name for a server: readable host and port, plus a hash of the whole URL."""
    parts = urlsplit(api_url)
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{parts.hostname or 'server'}_{parts.port or parts.scheme}")
    return f"{readable}-{hashlib.sha256(api_url.rstrip('/').encode()).hexdigest()[:8]}"


def _check_name(part: str, what: str) -> None:
    if not part or "/" in part or part.startswith("."):
        raise AlignError(f"{what} name {part!r} cannot name a journal folder (no '/', not starting with '.')")


def journal_path(journal_dir: Path, api_url: str, workspace: str, dataset: str, dataset_id: str) -> Path:
    for part, what in ((workspace, "workspace"), (dataset, "dataset")):
        _check_name(part, what)
    return journal_dir / server_folder(api_url) / workspace / f"{dataset}-{dataset_id}" / JOURNAL


def find_journals(journal_dir: Path, api_url: str, workspace: str, dataset: str) -> list[Path]:
    """Journals of every dataset named `dataset` that this server has had (offline pulls use them)."""
    for part, what in ((workspace, "workspace"), (dataset, "dataset")):
        _check_name(part, what)
    folder = journal_dir / server_folder(api_url) / workspace
    pattern = re.compile(re.escape(dataset) + r"-[0-9a-f-]{36}")
    if not folder.is_dir():
        return []
    return sorted(p / JOURNAL for p in folder.iterdir() if pattern.fullmatch(p.name) and (p / JOURNAL).exists())
