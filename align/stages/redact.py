"""Redact personal data in a data file: `align redact FILE [--dry-run] [mode=redact|drop]`.

Reads the records of FILE (JSONL, JSON, Parquet, CSV/TSV, text, a datasets directory or a run; see
align/data/records.py) and writes a run whose `records.jsonl` holds each record with every string in
it redacted (`mode=redact`: e-mail addresses, phone numbers, US SSNs, street addresses, payment cards,
IBANs and IP addresses become `[EMAIL]`, `[PHONE]`, `[SSN]`, `[ADDRESS]`, `[CARD]`, `[IBAN]`, `[IP]`;
with the presidio backend also personal names and places, `[PERSON]` and `[LOCATION]`; `patterns`
adds types of your own), or with records that hold any of them left out (`mode=drop`). Field names
are kept; values of any depth are redacted (chat messages, preference pairs, plain text). The manifest
counts findings per type and records changed or dropped, and names the backend that ran (with the
spaCy model's name and version); the values found are written nowhere.

`backend`: `presidio` (Microsoft Presidio with a spaCy NER model: `pip install 'align[privacy]'` and
`python -m spacy download en_core_web_lg`), `rules` (regular expressions and validators, no names or
places), or `auto` (presidio when both are installed, else rules with a warning).

`--dry-run` writes nothing and lists what would change, one line per finding, with the value masked
(first and last character). What each backend does not catch is listed in align/privacy/redact.py
and docs/guide/privacy.md, with recall measured on data/pii_eval.jsonl (benchmarks/pii_redaction.py).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.data.records import read_records
from align.privacy.backend import DEFAULT_SPACY_MODEL, check_backend, make_redactor
from align.privacy.redact import findings_in, mask, redact_value

log = logging.getLogger(__name__)

STAGE = "redact"
RECORDS = "records.jsonl"


@dataclass
class Config(runs.RunOutput):
    """Config of `align redact`."""

    input: str = ""
    """Data to redact: a JSONL/JSON/Parquet/CSV/TSV/text file, a datasets directory, a run directory, or a hub
    dataset `hf:<org>/<name>?split=<split>&subset=<config>&revision=<rev>` (split defaults to train)."""
    mode: Literal["redact", "drop"] = "redact"
    """redact (typed placeholders such as [EMAIL]) or drop (leave out every record with a finding)."""
    patterns: dict[str, str] = field(default_factory=dict)
    """Types of your own: TYPE_NAME -> regular expression; each match becomes [TYPE_NAME]."""
    phone_region: str = "US"
    """Region whose national phone formats are recognised; +-prefixed international numbers always are."""
    backend: Literal["auto", "presidio", "rules"] = "auto"
    """Who finds the data: presidio (adds names and places; needs align[privacy] and a spaCy model), rules, or
    auto (presidio when installed with its model, else rules)."""
    spacy_model: str = DEFAULT_SPACY_MODEL
    """spaCy pipeline for the presidio backend's NER (a package name or path); `blank`: patterns only, no NER."""

    def __post_init__(self):
        check_backend(self.backend)


def run(cfg: Config) -> dict:
    redactor = _redactor(cfg)
    counts: Counter = Counter()
    rows, read, changed, dropped = [], 0, 0, 0
    for _where, record in read_records(cfg.input):
        read += 1
        found: Counter = Counter()
        redacted = redact_value(redactor, record, found)
        counts.update(found)
        if not found:
            rows.append(record)
        elif cfg.mode == "drop":
            dropped += 1
        else:
            changed += 1
            rows.append(redacted)
    if not read:
        raise AlignError(f"{cfg.input}: no records to redact (the file is empty)")

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        run_.add_input("data", cfg.input)
        with open(run_.path / RECORDS, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        run_.add_output("records", RECORDS)
        run_.notes["redaction"] = redactor.describe()
        run_.metrics.update(
            {
                "records_read": read,
                "records_written": len(rows),
                "records_redacted": changed,
                "records_dropped": dropped,
                "findings": dict(sorted(counts.items())),
            }
        )
        manifest = runs.finish(run_)
    log.info(
        "%s backend: %d of %d records had personal data (%s); %s",
        redactor.backend,
        changed + dropped,
        read,
        _counts_text(counts),
        f"{dropped} dropped" if cfg.mode == "drop" else f"{changed} redacted",
    )
    return manifest


def dry_run(cfg: Config) -> int:
    """List what `run` would change, values masked; write nothing."""
    redactor = _redactor(cfg)
    counts: Counter = Counter()
    read = affected = 0
    for where, record in read_records(cfg.input):
        read += 1
        hits = list(findings_in(redactor, record))
        if hits:
            affected += 1
        for path, text, f in hits:
            counts[f.type] += 1
            action = "drop record" if cfg.mode == "drop" else f"-> [{f.type}]"
            print(f"{where}  {path}  {f.type}  {mask(text[f.start : f.end])}  {action}")
    verb = "dropped" if cfg.mode == "drop" else "redacted"
    print(
        f"dry run ({redactor.backend} backend): {affected} of {read} records would be {verb} "
        f"({_counts_text(counts)}); nothing written"
    )
    return 0


def _redactor(cfg: Config):
    if not cfg.input:
        raise AlignError("give the data to redact: `align redact FILE` (a data file, datasets directory or run)")
    return make_redactor(cfg.backend, cfg.phone_region, cfg.patterns, cfg.spacy_model)


def _counts_text(counts: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no findings"
