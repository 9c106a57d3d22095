"""Redact personal data in a data file: `align redact FILE [--dry-run] [mode=redact|drop]`.

Reads the records of FILE (JSONL, JSON, Parquet, CSV/TSV, text, a datasets directory or a run; see
align/data/records.py) and writes a run whose `records.jsonl` holds each record with every string in
it redacted (`mode=redact`: e-mail addresses, phone numbers, payment cards, IBANs and IP addresses
become `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`, `[IP]`; `patterns` adds types of your own), or with
records that hold any of them left out (`mode=drop`). Field names are kept; values of any depth are
redacted (chat messages, preference pairs, plain text). The manifest counts findings per type and
records changed or dropped; the values found are written nowhere.

`--dry-run` writes nothing and lists what would change, one line per finding, with the value masked
(first and last character). What the pass does not catch (names, street addresses, ...) is listed in
align/privacy/redact.py and the README.
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
from align.privacy.redact import Redactor, detector_versions, findings_in, mask, redact_value

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
        run_.notes["detectors"] = detector_versions()
        run_.metrics.update({
            "records_read": read,
            "records_written": len(rows),
            "records_redacted": changed,
            "records_dropped": dropped,
            "findings": dict(sorted(counts.items())),
        })
        manifest = runs.finish(run_)
    log.info("%d of %d records had personal data (%s); %s", changed + dropped, read, _counts_text(counts),
             f"{dropped} dropped" if cfg.mode == "drop" else f"{changed} redacted")
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
            print(f"{where}  {path}  {f.type}  {mask(text[f.start:f.end])}  {action}")
    verb = "dropped" if cfg.mode == "drop" else "redacted"
    print(f"dry run: {affected} of {read} records would be {verb} ({_counts_text(counts)}); nothing written")
    return 0


def _redactor(cfg: Config) -> Redactor:
    if not cfg.input:
        raise AlignError("give the data to redact: `align redact FILE` (a data file, datasets directory or run)")
    return Redactor(cfg.phone_region, cfg.patterns)


def _counts_text(counts: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no findings"
