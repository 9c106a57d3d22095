"""The feedback format: read, validate, hash, redact and dedupe; and the training data made from it.

A feedback row (JSONL, JSON, Parquet, CSV/TSV, a datasets directory; column names configurable with
`columns`, as the preference readers' are):

    messages | prompt   the conversation up to the reply: a list of {role, content} or one user string
    reply               the policy's reply (or leave it out and end `messages` with the assistant's turn)
    policy_run          the run id of the policy that replied (what drift is measured per)
    rating              up | down (also 1/0, true/false, thumbs_up/thumbs_down); optional
    flag                a reason string, or {"reason": ...}; optional
    correction          a corrected reply; optional
    user, session       ids: hashed here with the team's salt if given raw; `sha256:<hex>` kept as is
    time                ISO 8601 or Unix seconds; optional
    reply_id            the product's id of the reply; optional

`align serve`'s own log (lines with `event`, align/feedback/log.py) reads too: its ratings are joined to
their replies by `reply_id`, one row per user (a user's later rating, flag or correction of the same reply
completes their earlier one).

Deduplication: rows with the same conversation, reply, policy run, rating, flag reason and correction are
one row (a product that logs a thumbs twice, or a file imported twice); the count is reported. The policy
run is part of it: two policies giving the same reply to the same conversation are two observations.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from align.core.errors import AlignError
from align.data.preference_formats import as_messages
from align.data.records import read_records
from align.feedback.log import check_rating, hash_id, is_hashed

log = logging.getLogger(__name__)

FIELDS = (
    "messages",
    "prompt",
    "reply",
    "policy_run",
    "rating",
    "flag",
    "correction",
    "user",
    "session",
    "time",
    "reply_id",
)
MAX_ERRORS_SHOWN = 5


@dataclass
class FeedbackRow:
    prompt: list[dict[str, str]]
    reply: str
    policy_run: str | None = None
    rating: str | None = None
    flag: str | None = None
    correction: str | None = None
    user: str | None = None
    session: str | None = None
    time: str | None = None
    reply_id: str | None = None
    source: str = ""
    """file:line the row was read from."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "reply": self.reply,
            "policy_run": self.policy_run,
            "rating": self.rating,
            "flag": {"reason": self.flag} if self.flag else None,
            "correction": self.correction,
            "user": self.user,
            "session": self.session,
            "time": self.time,
            "reply_id": self.reply_id,
            "source": self.source,
        }

    def key(self) -> str:
        """What makes two rows the same feedback (see the module docstring)."""
        payload = json.dumps(
            [self.prompt, self.reply, self.policy_run, self.rating, self.flag, self.correction],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class FeedbackColumns:
    """Column names in your files, for each field of the feedback format (defaults: the field's own name)."""

    messages: str = "messages"
    """The conversation as a message list (or a user string)."""
    prompt: str = "prompt"
    """Read when `messages` is absent: the conversation, or the user's text."""
    reply: str = "reply"
    """The policy's reply text."""
    policy_run: str = "policy_run"
    """The run id (or name) of the policy that replied."""
    rating: str = "rating"
    """up | down, 1 | 0, true | false."""
    flag: str = "flag"
    """A reason string or {reason}."""
    correction: str = "correction"
    """A corrected reply."""
    user: str = "user"
    """User id (hashed on import)."""
    session: str = "session"
    """Session id (hashed on import)."""
    time: str = "time"
    """ISO 8601 time or Unix seconds."""
    reply_id: str = "reply_id"
    """The product's reply id."""


@dataclass
class ReadResult:
    rows: list[FeedbackRow] = field(default_factory=list)
    report: Counter = field(default_factory=Counter)


def read_feedback(paths: list[str], columns: FeedbackColumns, salt: str | None) -> ReadResult:
    """Every row of every file, validated; all bad rows reported at once as `file:line: what`."""
    result = ReadResult()
    errors: list[str] = []
    for path in paths:
        records = list(read_records(path))
        if not records:
            raise AlignError(f"{path}: no feedback rows (the file is empty)")
        if isinstance(records[0][1], dict) and "event" in records[0][1]:
            items = serve_log_rows(records, errors, result.report)
        else:
            items = records
        for where, rec in items:
            result.report["rows_read"] += 1
            try:
                result.rows.append(parse_row(rec, where, columns, salt))
            except AlignError as exc:
                errors.append(str(exc))
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise AlignError(f"{len(errors)} bad feedback row(s), nothing written: {shown}{more}")
    return result


def parse_row(rec: Any, where: str, cols: FeedbackColumns, salt: str | None) -> FeedbackRow:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a feedback row must be an object with fields, got {type(rec).__name__}")
    convo_key = cols.messages if _present(rec, cols.messages) else cols.prompt
    if not _present(rec, convo_key):
        raise AlignError(
            f"{where}: no conversation: field '{cols.messages}' or '{cols.prompt}' is missing "
            "(set columns.messages or columns.prompt if yours has another name)"
        )
    messages = as_messages(rec[convo_key], where, convo_key, default_role="user")
    reply = rec.get(cols.reply)
    if not _present(rec, cols.reply):
        if messages and messages[-1]["role"] == "assistant":  # the conversation ends with the reply rated
            reply = messages[-1]["content"]
            messages = messages[:-1]
        else:
            raise AlignError(
                f"{where}: no reply: field '{cols.reply}' is missing or empty and '{convo_key}' does not end "
                "with the assistant's turn"
            )
    if not isinstance(reply, str) or not reply.strip():
        raise AlignError(f"{where}: '{cols.reply}' must be the reply text, a non-empty string")
    if not messages or messages[-1]["role"] != "user":
        raise AlignError(f"{where}: the conversation before the reply must end with a user turn")
    flag = rec.get(cols.flag)
    if isinstance(flag, dict):
        flag = flag.get("reason")
    if flag is True:
        flag = "flagged"
    if flag in (False, "", None):
        flag = None
    elif not isinstance(flag, str):
        raise AlignError(f"{where}: '{cols.flag}' must be a reason string or {{reason}}, got {type(flag).__name__}")
    correction = rec.get(cols.correction)
    if correction in ("", None):
        correction = None
    elif not isinstance(correction, str):
        raise AlignError(f"{where}: '{cols.correction}' must be the corrected reply text")
    ids = {}
    for name in ("user", "session"):
        raw = rec.get(getattr(cols, name))
        if raw in (None, ""):
            ids[name] = None
            continue
        if not salt and not is_hashed(str(raw)):
            raise AlignError(
                f"{where}: '{getattr(cols, name)}' holds a raw id; set the salt (env ALIGN_FEEDBACK_SALT, a "
                "secret the team keeps) so it is hashed on import, or leave the column out"
            )
        ids[name] = hash_id(raw, salt)
    policy = rec.get(cols.policy_run)
    reply_id = rec.get(cols.reply_id)
    return FeedbackRow(
        prompt=messages,
        reply=reply,
        policy_run=None if policy in (None, "") else str(policy),
        rating=check_rating(rec.get(cols.rating), where),
        flag=flag,
        correction=correction,
        user=ids["user"],
        session=ids["session"],
        time=parse_time(rec.get(cols.time), where),
        reply_id=None if reply_id in (None, "") else str(reply_id),
        source=where,
    )


def serve_log_rows(records: list[tuple[str, Any]], errors: list[str], report: Counter):
    """Rows of an `align serve` log: each reply with its ratings merged per user (see the module docstring)."""
    replies: dict[str, tuple[str, dict]] = {}
    ratings: dict[str, dict[Any, dict]] = {}
    for where, rec in records:
        kind = rec.get("event") if isinstance(rec, dict) else None
        if kind == "reply":
            replies[rec.get("reply_id")] = (where, rec)
        elif kind == "rating":
            if rec.get("reply_id") not in replies:
                errors.append(
                    f"{where}: a rating of reply_id {rec.get('reply_id')!r}, which no earlier line of the log holds"
                )
                continue
            merged = ratings.setdefault(rec["reply_id"], {}).setdefault(rec.get("user"), {"where": where})
            for key in ("rating", "flag", "correction", "time", "user"):
                if rec.get(key) is not None:
                    merged[key] = rec[key]
            report["rating_events"] += 1
        else:
            errors.append(f"{where}: unknown event {kind!r} (a serve log has reply and rating lines)")
    for reply_id, (where, rec) in replies.items():
        base = {
            "messages": rec.get("messages"),
            "reply": rec.get("reply"),
            "policy_run": rec.get("policy_run"),
            "reply_id": reply_id,
            "time": rec.get("time"),
            "session": rec.get("session"),
        }
        given = ratings.get(reply_id)
        if not given:
            yield where, {**base, "user": rec.get("user")}
            continue
        for merged in given.values():
            yield merged["where"], {**base, **{k: v for k, v in merged.items() if k != "where"}}


def parse_time(value: Any, where: str) -> str | None:
    """ISO 8601 (a `Z` suffix allowed) or Unix seconds -> ISO 8601 in UTC; a time without a zone is read as UTC."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            moment = _dt.datetime.fromtimestamp(float(value), _dt.timezone.utc)
        elif isinstance(value, str):
            moment = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        elif isinstance(value, _dt.datetime):
            moment = value
        else:
            raise ValueError(type(value).__name__)
    except (ValueError, OverflowError, OSError):
        raise AlignError(f"{where}: time {value!r} is not ISO 8601 (2026-12-01T10:00:00Z) or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


def _present(rec: dict, key: str) -> bool:
    return key in rec and rec[key] is not None and rec[key] != ""


# -- redaction and deduplication ------------------------------------------------------------------


def redact_rows(rows: list[FeedbackRow], redactor) -> Counter:
    """Redact, in place, every text a row holds (conversation, reply, flag reason, correction); counts per type."""
    from align.privacy import redact as privacy

    counts: Counter = Counter()
    if redactor is None:
        return counts
    for row in rows:
        row.prompt = privacy.redact_value(redactor, row.prompt, counts)
        row.reply = privacy.redact_value(redactor, row.reply, counts)
        if row.flag:
            row.flag = privacy.redact_value(redactor, row.flag, counts)
        if row.correction:
            row.correction = privacy.redact_value(redactor, row.correction, counts)
    return counts


def dedupe(rows: list[FeedbackRow]) -> tuple[list[FeedbackRow], int]:
    """The rows without repeats (first kept, file order), and how many were dropped."""
    seen, kept = set(), []
    for row in rows:
        key = row.key()
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def counts(rows: list[FeedbackRow]) -> dict[str, Any]:
    """Counts by rating, by policy run (with its ratings) and by day: what the manifest shows."""
    by_rating = Counter(r.rating or "unrated" for r in rows)
    by_policy: dict[str, Counter] = {}
    by_day: Counter = Counter()
    for r in rows:
        by_policy.setdefault(r.policy_run or "unknown", Counter())[r.rating or "unrated"] += 1
        by_day[r.time[:10] if r.time else "unknown"] += 1
    return {
        "rows": len(rows),
        "by_rating": {k: by_rating.get(k, 0) for k in ("up", "down", "unrated")},
        "flagged": sum(1 for r in rows if r.flag),
        "corrections": sum(1 for r in rows if r.correction),
        "by_policy_run": {k: dict(sorted(v.items())) for k, v in sorted(by_policy.items())},
        "by_day": dict(sorted(by_day.items())),
    }


# -- training data --------------------------------------------------------------------------------


def kto_examples(rows: list[FeedbackRow]) -> list[dict[str, Any]]:
    """Thumbs -> `align kto`'s unpaired examples {prompt, completion, label}: up desirable, down undesirable."""
    return [
        {
            "prompt": r.prompt,
            "completion": [{"role": "assistant", "content": r.reply}],
            "label": r.rating == "up",
            "policy_run": r.policy_run,
            "source": r.source,
        }
        for r in rows
        if r.rating
    ]


def correction_pairs(rows: list[FeedbackRow]) -> tuple[list[dict[str, Any]], int]:
    """Corrections -> preference pairs (the corrected reply chosen over the logged one), and how many were
    left out because the correction equals the reply."""
    pairs, same = [], 0
    for r in rows:
        if not r.correction:
            continue
        if r.correction.strip() == r.reply.strip():
            same += 1
            continue
        pairs.append(
            {
                "prompt": r.prompt,
                "chosen": [{"role": "assistant", "content": r.correction}],
                "rejected": [{"role": "assistant", "content": r.reply}],
                "policy_run": r.policy_run,
                "source": r.source,
                "origin": "correction",
            }
        )
    return pairs, same


# The KTO paper's eq. 8 range for desirable_weight * n_D / (undesirable_weight * n_U), as align/stages/kto.py.
KTO_RATIO_RANGE = (1.0, 4 / 3)
KTO_RATIO_TARGET = 7 / 6  # the middle of the range


def kto_weights(desirable: int, undesirable: int) -> dict[str, float] | None:
    """Weights for `align kto` (`training.desirable_weight`, `training.undesirable_weight`) that put the weighted
    ratio of desirable to undesirable examples in the KTO paper's [1, 4/3] (eq. 8).

    Both 1 when the counts already are in range. Otherwise the larger class keeps weight 1 and the smaller one is
    raised so that the ratio is 7/6, the middle of the range; the paper states the range, not a point in it. This
    up-weights the rarer class (as TRL's docs suggest for 1:10 data) rather than shrinking the common one, so the
    loss keeps its scale. None when a class is empty (no ratio to set)."""
    if desirable <= 0 or undesirable <= 0:
        return None
    ratio = desirable / undesirable
    if KTO_RATIO_RANGE[0] <= ratio <= KTO_RATIO_RANGE[1]:
        return {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    if ratio < KTO_RATIO_RANGE[0]:
        return {"desirable_weight": round(KTO_RATIO_TARGET / ratio, 4), "undesirable_weight": 1.0}
    return {"desirable_weight": 1.0, "undesirable_weight": round(ratio / KTO_RATIO_TARGET, 4)}
