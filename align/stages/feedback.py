"""Import feedback from deployment: `align feedback import FILE [FILE ...]`.

Reads feedback rows (the format in align/feedback/rows.py and docs/guide/feedback.md: the conversation,
the reply, the policy's run id, and any of rating, flag, correction, user/session id, time), from your
product's export or from `align serve`'s log, and writes one feedback run:

    feedback.jsonl     every row, redacted and deduplicated, user/session ids hashed (0600)
    examples.jsonl     thumbs as `align kto` examples {prompt, completion, label}: up desirable, down undesirable
    preferences.jsonl  corrections as `align dpo` pairs {prompt, chosen: the correction, rejected: the reply}
    review.jsonl       flagged and thumbs-down rows without a correction, for `align feedback review`

so `align kto data.train=RUN` trains on the thumbs and `align dpo data.train=RUN` on the corrections
(`align kto` reads a run's `examples` output, the pair stages its `preferences`).

In order, and nothing is written until all of it passed: (1) every row is validated and every bad one
reported as `file:line: what is wrong` (exit 2); (2) raw user and session ids are hashed with the salt
from `salt_env` (a raw id without a salt is a bad row: it is never stored); (3) personal data in the
conversation, reply, flag reason and correction is redacted with `align redact`'s detectors
(align/privacy/redact.py; `redaction: drop` leaves such rows out); (4) repeats are dropped (same
conversation, reply, rating, flag and correction). The manifest counts rows by rating, by policy run and
by day, the findings per type (never the values), and the `align kto` weights that balance thumbs up and
down per the KTO paper (`notes.kto_weights`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.feedback.log import SALT_ENV, salt_from_env
from align.feedback.rows import (
    FeedbackColumns,
    correction_pairs,
    counts,
    dedupe,
    kto_examples,
    kto_weights,
    read_feedback,
    redact_rows,
)
from align.privacy.backend import DEFAULT_SPACY_MODEL, check_backend

log = logging.getLogger(__name__)

STAGE = "feedback import"
FEEDBACK = "feedback.jsonl"
EXAMPLES = "examples.jsonl"
PREFERENCES = "preferences.jsonl"
REVIEW = "review.jsonl"


@dataclass
class Config(runs.RunOutput):
    """Config of `align feedback import`."""

    inputs: list[str] = field(default_factory=list)
    """Feedback files (JSONL, JSON, Parquet, CSV/TSV, a datasets directory) or `align serve` logs or runs."""
    columns: FeedbackColumns = field(default_factory=FeedbackColumns)
    """Column names of your files for each field of the format (docs/guide/feedback.md)."""
    salt_env: str = SALT_ENV
    """Environment variable holding the salt raw user/session ids are hashed with (never stored or printed)."""
    redaction: Literal["redact", "drop"] = "redact"
    """Personal data in texts: redact (placeholders like [EMAIL]) or drop (the row)."""
    redaction_patterns: dict[str, str] = field(default_factory=dict)
    """Extra types to redact: TYPE_NAME -> regular expression; each match becomes [TYPE_NAME]."""
    redaction_backend: str = "auto"
    """Who finds personal data: presidio (adds names and places), rules, or auto (presidio when installed with its
    spaCy model, else rules), as `align redact` and `align annotate push` (docs/guide/privacy.md)."""
    redaction_spacy_model: str = DEFAULT_SPACY_MODEL
    """spaCy pipeline for the presidio backend's NER (package name or path)."""
    phone_region: str = "US"
    """Region whose national phone formats are recognised; +-prefixed international numbers always are."""

    def __post_init__(self):
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        check_backend(self.redaction_backend, "redaction_backend")


def check(cfg: Config) -> dict:
    """What `--dry-run` prints: the rows read, validated, redacted and counted; nothing written."""
    rows, report, _redactor = prepare(cfg)
    return {**report, **counts(rows)}


def prepare(cfg: Config):
    if not cfg.inputs:
        raise AlignError("give the feedback to import: `align feedback import FILE [FILE ...]`")
    paths = [_log_of(p) for p in cfg.inputs]
    salt = salt_from_env(cfg.salt_env)
    read = read_feedback(paths, cfg.columns, salt)
    redactor = make_redactor(cfg)
    rows = read.rows
    findings = redact_rows_or_drop(rows, redactor, cfg.redaction)
    rows, dropped_for_pii = findings.pop("__kept__"), findings.pop("__dropped__")
    rows, duplicates = dedupe(rows)
    report = {
        **dict(read.report),
        "duplicates_dropped": duplicates,
        "redaction": {
            "mode": cfg.redaction,
            "findings": dict(sorted(findings.items())),
            "rows_dropped": dropped_for_pii,
        },
    }
    if not rows:
        raise AlignError(f"{', '.join(cfg.inputs)}: no feedback rows left ({report})")
    return rows, report, redactor


def run(cfg: Config) -> dict:
    rows, report, redactor = prepare(cfg)
    examples = kto_examples(rows)
    pairs, same = correction_pairs(rows)
    review = [r.as_dict() for r in rows if (r.flag or r.rating == "down") and not r.correction]
    desirable = sum(e["label"] for e in examples)
    weights = kto_weights(desirable, len(examples) - desirable)

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run:
        for i, path in enumerate(cfg.inputs):
            run.add_input(f"feedback{i}" if len(cfg.inputs) > 1 else "feedback", path)
        _write(run.path / FEEDBACK, [r.as_dict() for r in rows])
        _write(run.path / EXAMPLES, examples)
        _write(run.path / PREFERENCES, pairs)
        _write(run.path / REVIEW, review)
        run.add_output("feedback", FEEDBACK, rows=len(rows))
        run.add_output("examples", EXAMPLES, rows=len(examples))
        run.add_output("preferences", PREFERENCES, rows=len(pairs))
        run.add_output("review", REVIEW, rows=len(review))
        summary = counts(rows)
        run.metrics.update(
            rows=len(rows),
            kto_examples=len(examples),
            kto_desirable=desirable,
            correction_pairs=len(pairs),
            review_rows=len(review),
            corrections_same_as_reply=same,
            duplicates_dropped=report["duplicates_dropped"],
            rows_read=report["rows_read"],
        )
        run.notes.update(
            counts=summary,
            redaction=report["redaction"],
            kto_weights=weights,
            salt_env=cfg.salt_env if salt_from_env(cfg.salt_env) else None,
        )
        run.notes["redaction"]["detectors"] = redactor.describe()  # the backend that ran, its model and versions
        manifest = runs.finish(run)
    log.info(
        "feedback: %d rows (%d up, %d down, %d flagged, %d corrections; %d repeats dropped); %d KTO examples, "
        "%d correction pairs, %d to review",
        len(rows),
        summary["by_rating"]["up"],
        summary["by_rating"]["down"],
        summary["flagged"],
        summary["corrections"],
        report["duplicates_dropped"],
        len(examples),
        len(pairs),
        len(review),
    )
    if weights and weights != {"desirable_weight": 1.0, "undesirable_weight": 1.0}:
        log.info(
            "for `align kto data.train=%s`: training.desirable_weight=%s training.undesirable_weight=%s balances "
            "%d up and %d down (the KTO paper's range)",
            manifest["path"],
            weights["desirable_weight"],
            weights["undesirable_weight"],
            desirable,
            len(examples) - desirable,
        )
    return manifest


def make_redactor(cfg: Config):
    """`align redact`'s redactor with this config's settings: the backend align.privacy.backend picks."""
    from align.privacy.backend import make_redactor as make

    return make(cfg.redaction_backend, cfg.phone_region, cfg.redaction_patterns, cfg.redaction_spacy_model)


def redact_rows_or_drop(rows, redactor, mode: str) -> dict:
    """Counts per type, plus the rows kept (`__kept__`) and how many were dropped (`__dropped__`)."""
    if mode == "redact":
        found = redact_rows(rows, redactor)
        return {**found, "__kept__": rows, "__dropped__": 0}
    kept, dropped, total = [], 0, {}
    for row in rows:
        found = redact_rows([row], redactor)  # on the row itself: dropped if anything was found
        for k, v in found.items():
            total[k] = total.get(k, 0) + v
        if found:
            dropped += 1
        else:
            kept.append(row)
    return {**total, "__kept__": kept, "__dropped__": dropped}


def _log_of(path: str) -> str:
    """A serve run (finished, or running: its log) stands for its feedback log."""
    from align.feedback.log import FEEDBACK_LOG

    p = Path(path)
    if p.is_dir() and (p / FEEDBACK_LOG).is_file() and (runs.is_run(p) or p.name.startswith(".")):
        manifest = runs.read_manifest(p) if runs.is_run(p) else {}
        if manifest.get("stage", "serve") == "serve":
            return str(p / FEEDBACK_LOG)
    return path


def _write(path: Path, rows: list[dict]) -> None:
    # Conversations from real users, redacted or not: readable by the owner only, like the annotation journals.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
