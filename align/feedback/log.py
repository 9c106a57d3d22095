"""The feedback log `align serve` writes: one JSON line per event, append-only, readable by its owner only.

Two kinds of line, joined by `reply_id` when the log is imported (align/feedback/rows.py):

    {"event": "reply", "reply_id", "time", "policy_run", "model", "messages": [...], "reply": "...",
     "finish_reason", "usage": {...}, "latency_s", "user"?}
    {"event": "rating", "reply_id", "time", "rating": "up"|"down"|null, "flag": {"reason"}|null,
     "correction": "..."|null, "user"?}

Why a log of events rather than rows updated in place: a rating arrives long after its reply, from
another process (`align feedback rate`) or the proxy, and nothing already written is ever rewritten, so
a crash can cost at most the line being written. Each line is one `write` on a file opened with
O_APPEND under an exclusive `flock`, so the proxy and the CLI never interleave lines; a cut last line
(power loss) is skipped with a warning on import, as the annotation journal heals its own.

User and session ids are never stored raw: `hash_id` turns them into `sha256:<hex>` with a keyed
hash (HMAC-SHA256) under a salt the team keeps (`ALIGN_FEEDBACK_SALT` by default). Without a salt
the id is left out and counted, never written.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from align.core.errors import AlignError

FEEDBACK_LOG = "feedback.jsonl"
SALT_ENV = "ALIGN_FEEDBACK_SALT"
HASHED_PREFIX = "sha256:"
RATINGS = ("up", "down")


def now() -> str:
    """UTC time, ISO 8601 to the millisecond (what every line's `time` holds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def new_reply_id() -> str:
    """An id a client can rate a reply by: random, so it says nothing about the conversation."""
    return f"r-{secrets.token_hex(8)}"


def salt_from_env(name: str = SALT_ENV) -> str | None:
    value = os.environ.get(name, "")
    return value or None


def is_hashed(value: str) -> bool:
    return (
        value.startswith(HASHED_PREFIX)
        and len(value) == len(HASHED_PREFIX) + 64
        and all(c in "0123456789abcdef" for c in value[len(HASHED_PREFIX) :])
    )


def hash_id(value: Any, salt: str | None) -> str | None:
    """`sha256:<hmac hex>` of a raw user or session id; an id already in that form is kept; None without
    a salt (the raw id is then dropped, never stored)."""
    if value is None or value == "":
        return None
    text = str(value)
    if is_hashed(text):
        return text
    if not salt:
        return None
    return HASHED_PREFIX + hmac.new(salt.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def check_rating(value: Any, where: str) -> str | None:
    """`up`, `down` or None, from up/down, thumbs 1/0, true/false (as CSV files and products hold it)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "up" if value else "down"
    if isinstance(value, (int, float)) and value in (0, 1):
        return "up" if value == 1 else "down"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("up", "1", "true", "thumbs_up", "+1", "good"):
            return "up"
        if text in ("down", "0", "false", "thumbs_down", "-1", "bad"):
            return "down"
    raise AlignError(f"{where}: rating {value!r} is not up or down (or 1/0, true/false)")


class FeedbackLog:
    """Append JSON lines to a feedback log file (created 0600)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def reply_ids(self) -> set[str]:
        """The reply ids logged so far (a rating must name one of them)."""
        ids = set()
        for record in read_events(self.path, heal=True):
            if record.get("event") == "reply" and record.get("reply_id"):
                ids.add(record["reply_id"])
        return ids


def read_events(path: str | Path, heal: bool = False) -> list[dict[str, Any]]:
    """The lines of a feedback log. `heal`: a cut last line (no newline, not JSON) is skipped."""
    path = Path(path)
    if not path.is_file():
        raise AlignError(f"feedback log not found: {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if heal and i == len(lines):
                continue  # the last line, cut while being written
            raise AlignError(f"{path}:{i}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    return out


def rating_event(
    reply_id: str,
    rating: Any = None,
    flag: str | None = None,
    correction: str | None = None,
    user: Any = None,
    salt: str | None = None,
    where: str = "rating",
) -> dict[str, Any]:
    """A validated rating line: at least one of rating, flag, correction."""
    if not isinstance(reply_id, str) or not reply_id:
        raise AlignError(f"{where}: 'reply_id' is required (the id returned with the reply)")
    rating = check_rating(rating, where)
    if flag is not None and (not isinstance(flag, str) or not flag.strip()):
        raise AlignError(f"{where}: 'flag' must be the reason, a non-empty string")
    if correction is not None and (not isinstance(correction, str) or not correction.strip()):
        raise AlignError(f"{where}: 'correction' must be the corrected reply, a non-empty string")
    if rating is None and flag is None and correction is None:
        raise AlignError(f"{where}: give a rating (up|down), a flag reason or a correction")
    event: dict[str, Any] = {
        "event": "rating",
        "reply_id": reply_id,
        "time": now(),
        "rating": rating,
        "flag": {"reason": flag.strip()} if flag else None,
        "correction": correction,
    }
    hashed = hash_id(user, salt)
    if hashed:
        event["user"] = hashed
    return event
