"""Rate a logged reply from a shell: `align feedback rate SERVE_RUN REPLY_ID --rating up`.

Appends one rating line to the serve run's feedback log, exactly as `POST /v1/feedback` does
(align/feedback/log.py): a rating (up|down), a flag with its reason, a corrected reply, or any of them.
SERVE_RUN is the serve run directory (while the server runs, the path it printed; its work directory
`.NAME.partial-PID` is found by name) or the log file itself. A reply id the log does not hold is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from align.core.errors import AlignError
from align.feedback.log import FEEDBACK_LOG, SALT_ENV, FeedbackLog, rating_event, salt_from_env


@dataclass
class Config:
    """Config of `align feedback rate`."""

    serve_run: str = ""
    """The serve run (its directory, running or stopped) or its feedback.jsonl."""
    reply_id: str = ""
    """The `reply_id` returned with the reply."""
    rating: str | None = None
    """up or down."""
    flag: str | None = None
    """Flag the reply, with the reason (e.g. "off-brand", "unsafe")."""
    correction: str | None = None
    """A corrected reply (becomes a DPO pair: the correction over the logged reply)."""
    user: str | None = None
    """Who rated (hashed with the salt in `salt_env`; left out without one)."""
    salt_env: str = SALT_ENV
    """Environment variable holding the salt user ids are hashed with."""


def run(cfg: Config) -> dict:
    path = feedback_log_path(cfg.serve_run)
    feedback_log = FeedbackLog(path)
    event = rating_event(
        cfg.reply_id,
        cfg.rating,
        cfg.flag,
        cfg.correction,
        cfg.user,
        salt_from_env(cfg.salt_env),
        where="align feedback rate",
    )
    if cfg.reply_id not in feedback_log.reply_ids():
        raise AlignError(f"no reply with reply_id {cfg.reply_id!r} in {path}; give the id returned with the reply")
    feedback_log.append(event)
    what = ", ".join(
        f"{k} {event[k] if k != 'flag' else event[k]['reason']!r}" for k in ("rating", "flag", "correction") if event[k]
    )
    print(f"recorded for {cfg.reply_id}: {what} ({path})")
    return {}


def feedback_log_path(ref: str) -> Path:
    """The feedback log of a serve run: the file, the run directory, or the running server's work directory."""
    if not ref:
        raise AlignError("give the serve run: `align feedback rate SERVE_RUN REPLY_ID --rating up`")
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if (path / FEEDBACK_LOG).is_file():
        return path / FEEDBACK_LOG
    # A server still running writes into <runs_dir>/.<name>.partial-<pid> until it stops.
    running = sorted(path.parent.glob(f".{path.name}.partial*/{FEEDBACK_LOG}"))
    if running:
        return running[-1]
    raise AlignError(f"no feedback log at {ref}: give an `align serve` run directory or its {FEEDBACK_LOG}")
