"""Push candidate pairs to Argilla for annotators: `align annotate push PAIRS dataset=NAME`.

Input (`pairs`): an `align pairs` run (its `pairs` output), a pairs JSONL file with rows
`{prompt, response_a, response_b, policy?, sampling?, scores?, source?}`, or a preference file
(conversational or HH-RLHF; each pair's chosen and rejected become two unlabeled candidates, to
demonstrate the loop before generation exists).

What it does, in order: reads and checks every pair (nothing is sent if the input is bad); connects
and creates the dataset from the template if it does not exist, or checks that an existing one
matches the template (and replaces its guidelines if they differ, recording old and new hashes);
redacts personal data in prompts and responses (`redaction`, align/privacy/redact.py: e-mails,
phone numbers, payment cards, IBANs, IP addresses and `redaction_patterns` become [EMAIL], [PHONE],
...; `drop` leaves such pairs out; counts per type go in the manifest, never the values); derives each record's id from its content as annotators see it (redacted prompt, both responses, round), so
labels pulled back refer to the redacted text, and
sends only records the dataset does not have yet, so pushing twice never duplicates; shows candidate
b as A on a random half of the records (seeded by the record id; `shown_as_a` in the metadata); then
writes a run with `records.jsonl` (record id, which candidate is shown as A, input line).
Raises AlignError for bad input, a template mismatch or a rejected API key; ServiceError when
Argilla stays unreachable (nothing is written locally then).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from align.annotate import template as templates
from align.annotate.connection import UPSERT_BATCH, ArgillaConfig, connect, sdk
from align.annotate.votes import record_id, shown_as_a
from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.privacy import redact as privacy

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"


@dataclass
class Config(runs.RunOutput):
    pairs: str = ""
    """Candidate pairs: an `align pairs` run, a pairs JSONL, or a preference file (chosen/rejected -> 2 candidates)."""
    dataset: str = ""
    """Argilla dataset name (created from the template if missing)."""
    template: str = "pairwise"
    """Dataset template: a name in align/annotate/templates/ (pairwise) or a YAML path."""
    guidelines: str = "safety"
    """Guidelines shown to annotators (safety, brand_voice, or a Markdown path); replace an existing dataset's if they differ."""
    annotators_per_record: int = 2
    """Submitted responses needed before a record counts as complete (Argilla task distribution); 2+ measures agreement."""
    round: int = 1
    """Annotation round; part of the record id, so the same pair can be labelled again in a later round."""
    max_pairs: int | None = None
    """Push at most this many pairs (the first ones of the input)."""
    format: str = "auto"
    """Format of a preference-file input (auto, conversational, hh-rlhf, ...); ignored for pairs."""
    redaction: str | bool = "redact"
    """Personal data in prompts and responses: redact (placeholders like [EMAIL]), drop (the pair) or off."""
    redaction_patterns: dict[str, str] = field(default_factory=dict)
    """Extra types to redact: TYPE_NAME -> regular expression; each match becomes [TYPE_NAME]."""
    phone_region: str = "US"
    """Region whose national phone formats are recognised; +-prefixed international numbers always are."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""

    def __post_init__(self):
        if self.annotators_per_record < 1:
            raise AlignError(f"'annotators_per_record' must be >= 1, got {self.annotators_per_record}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise AlignError(f"'max_pairs' must be >= 1, got {self.max_pairs}")
        if self.redaction is False:  # YAML 1.1 reads a bare `off` as false
            self.redaction = "off"
        privacy.check_mode(self.redaction)


def check(cfg: Config) -> dict[str, Any]:
    """What `--dry-run` prints: the pairs read, redacted and counted, the template and guidelines
    loaded; Argilla is not contacted."""
    _tpl, _guidelines, _redactor, _records, unique, report = prepare(cfg)
    return {**report, "records": len(unique), "template": cfg.template, "guidelines": cfg.guidelines}


def prepare(cfg: Config):
    """Everything push checks before it connects: bad input fails here, before anything is sent."""
    if not cfg.pairs:
        raise AlignError("give the candidate pairs: `align annotate push RUN_OR_FILE dataset=NAME`")
    if not cfg.dataset:
        raise AlignError("'dataset' is required: the Argilla dataset to push to, e.g. dataset=harmless-round1")
    tpl = templates.load_template(cfg.template)
    guidelines = templates.guidelines_text(cfg.guidelines)
    redactor = None if cfg.redaction == "off" else privacy.Redactor(cfg.phone_region, cfg.redaction_patterns)
    pairs, report = read_candidates(cfg.pairs, cfg.format, cfg.max_pairs)
    pairs, report["redaction"] = redact_pairs(pairs, redactor, cfg.redaction)
    if not pairs:
        raise AlignError(f"{cfg.pairs}: no pairs left to annotate after redaction={cfg.redaction} "
                         f"({report['redaction']})")
    records = [to_record(p, cfg.round) for p in pairs]
    unique = {r["external_id"]: r for r in records}
    report["duplicates_in_input"] = len(records) - len(unique)
    return tpl, guidelines, redactor, records, unique, report


def run(cfg: Config) -> dict[str, Any]:
    tpl, guidelines, redactor, records, unique, report = prepare(cfg)

    with connect(cfg.argilla) as conn:
        ds = conn.find_dataset(cfg.dataset, cfg.argilla.workspace)
        guidelines_before, replaced = None, False
        if ds is None or ds._model.status == "draft":
            ds = templates.create_dataset(conn, cfg.dataset, cfg.argilla.workspace, tpl, guidelines,
                                          cfg.annotators_per_record)
            log.info("created dataset '%s' in workspace '%s' at %s", cfg.dataset, cfg.argilla.workspace, conn.api_url)
        else:
            templates.check_dataset(ds, tpl)
            guidelines_before = ds.settings.guidelines
            if (guidelines_before or "").strip() != guidelines:  # datasets made before may keep a final newline
                # Annotators must see what the run records: the new guidelines replace the old ones.
                templates.update_guidelines(conn, ds, guidelines)
                replaced = True
                log.warning("dataset '%s': guidelines replaced by '%s' (sha256 %s, were %s); annotators see the new "
                            "ones from their next page load", cfg.dataset, cfg.guidelines,
                            templates.text_hash(guidelines), templates.text_hash(guidelines_before))
            have = ds.distribution.min_submitted
            if have != cfg.annotators_per_record:
                log.warning("dataset '%s' keeps annotators_per_record=%s (set when it was created); change it in "
                            "the Argilla UI (dataset settings) if you meant %d", cfg.dataset, have,
                            cfg.annotators_per_record)
        dataset_id = str(ds.id)
        existing = {r["external_id"] for r in conn.records(dataset_id, responses=False)}
        new = [r for r in unique.values() if r["external_id"] not in existing]
        start = time.time()
        if new:
            rg = sdk()
            owner_id = conn.call("GET /api/v1/me", lambda: conn.client.me.id)  # log() would ask once per batch
            with tqdm(total=len(new), desc=f"pushing to '{cfg.dataset}'", unit="record", mininterval=1.0) as bar, \
                    _without_sdk_bar():
                for i in range(0, len(new), UPSERT_BATCH):
                    batch = [rg.Record(id=r["external_id"], fields=r["fields"], metadata=r["metadata"])
                             for r in new[i: i + UPSERT_BATCH]]
                    # An upsert by record id: sending a batch twice leaves the same records, so it may be retried.
                    conn.call(f"PUT records of '{cfg.dataset}'",
                              lambda: ds.records.log(batch, user_id=owner_id, batch_size=len(batch)))
                    bar.update(len(batch))
            log.info("pushed %d new records to '%s'", len(new), cfg.dataset)
        seconds = time.time() - start
        api_url = conn.api_url

    with runs.new_run("annotate push", to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        run_.add_input("pairs", cfg.pairs)
        with open(run_.path / RECORDS, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps({"record_id": r["external_id"], "shown_as_a": r["metadata"]["shown_as_a"],
                                    "round": cfg.round, "input": r["where"]}) + "\n")
        run_.add_output("records", RECORDS)
        run_.notes.update({"api_url": api_url, "workspace": cfg.argilla.workspace, "dataset": cfg.dataset,
                           "dataset_id": dataset_id, "template": str(tpl.path),
                           "guidelines_sha256": templates.text_hash(guidelines)})
        if redactor is not None:
            run_.notes["redaction_detectors"] = privacy.detector_versions()
        if replaced:
            run_.notes["guidelines_replaced_sha256"] = templates.text_hash(guidelines_before)
        run_.metrics.update({
            **report,
            "records": len(unique),
            "records_new": len(new),
            "records_already_there": len(unique) - len(new),
            "shown_swapped": sum(r["metadata"]["shown_as_a"] == "b" for r in unique.values()),
            "push_records_per_s": round(len(new) / seconds, 1) if new and seconds > 0 else None,
        })
        manifest = runs.finish(run_)
    print(f"pushed {len(new)} new records to '{cfg.dataset}' ({len(unique) - len(new)} were already there); "
          f"annotators open {api_url}/dataset/{dataset_id}/annotation-mode")
    return manifest


# -- redaction -------------------------------------------------------------------------------------

# The parts of a pair annotators see; `where` (file:line) and align's own metadata are left alone.
_SHOWN = ("prompt", "response_a", "response_b", "source")


def redact_pairs(pairs: list[dict[str, Any]], redactor, mode: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs with personal data redacted (or left out with `drop`), and counts per type (no values)."""
    report: dict[str, Any] = {"mode": mode, "findings": {}, "pairs_redacted": 0, "pairs_dropped": 0,
                              "skipped_identical_after_redaction": 0}
    if redactor is None:
        return pairs, report
    from collections import Counter

    counts: Counter = Counter()
    kept = []
    for pair in pairs:
        found: Counter = Counter()
        redacted = {**pair, **{k: privacy.redact_value(redactor, pair[k], found) for k in _SHOWN if k in pair}}
        counts.update(found)
        if not found:
            kept.append(pair)
        elif mode == "drop":
            report["pairs_dropped"] += 1
        elif redacted["response_a"].strip() == redacted["response_b"].strip():
            # Candidates that differed only in personal data give annotators nothing to choose between.
            report["skipped_identical_after_redaction"] += 1
        else:
            report["pairs_redacted"] += 1
            kept.append(redacted)
    report["findings"] = dict(sorted(counts.items()))
    if counts:
        log.info("redaction=%s: %s in %d pair(s)%s", mode, ", ".join(f"{k} {v}" for k, v in report["findings"].items()),
                 report["pairs_redacted"] + report["pairs_dropped"] + report["skipped_identical_after_redaction"],
                 f"; {report['pairs_dropped']} dropped" if mode == "drop" else "")
    return kept, report


# -- input -----------------------------------------------------------------------------------------

def read_candidates(path: str, fmt: str, limit: int | None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Candidate pairs `{prompt, response_a, response_b, policy, sampling, source, where}`, checked."""
    from align.data.records import read_records

    report = {"pairs_read": 0, "skipped_empty_response": 0, "skipped_identical_responses": 0}
    records = read_records(path, run_output="pairs")
    first = next(records, None)
    if first is None:
        raise AlignError(f"{path}: no pairs (the file is empty)")
    if isinstance(first[1], dict) and "response_a" in first[1] and "response_b" in first[1]:
        items = _pairs_rows([first], records, path)
    else:
        items = _preference_rows(path, fmt)
    pairs = []
    for pair in items:
        report["pairs_read"] += 1
        if not pair["response_a"].strip() or not pair["response_b"].strip():
            report["skipped_empty_response"] += 1
        elif pair["response_a"].strip() == pair["response_b"].strip():
            report["skipped_identical_responses"] += 1
        else:
            pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise AlignError(f"{path}: no pairs to annotate ({report})")
    for key in ("skipped_empty_response", "skipped_identical_responses"):
        if report[key]:
            log.warning("%s: %d pair(s) %s", path, report[key], key.replace("_", " "))
    return pairs, report


def _pairs_rows(first, rest, path):
    from align.data.preferences import as_messages

    for where, rec in _chain(first, rest):
        for key in ("prompt", "response_a", "response_b"):
            if key not in rec:
                raise AlignError(f"{where}: a pair needs prompt, response_a and response_b (missing '{key}')")
        for key in ("response_a", "response_b"):
            if not isinstance(rec[key], str):
                raise AlignError(f"{where}: '{key}' must be the response text (a string)")
        yield {
            "prompt": as_messages(rec["prompt"], where, "prompt", default_role="user"),
            "response_a": rec["response_a"],
            "response_b": rec["response_b"],
            "policy": rec.get("policy"),
            "sampling": rec.get("sampling"),
            "source": rec.get("source") or Path(path).name,
            "where": where,
        }


def _preference_rows(path, fmt):
    from align.data.preferences import load_preference_pairs

    data = load_preference_pairs(path, format=fmt)
    for i, row in enumerate(data.rows):
        yield {
            "prompt": row["prompt"],
            "response_a": _text(row["chosen"]),
            "response_b": _text(row["rejected"]),
            "policy": None,
            "sampling": None,
            "source": Path(path).name.split(".")[0],
            "where": f"{path}:pair {i + 1}",
        }


@contextmanager
def _without_sdk_bar():
    """`records.log` draws a bar of its own per call (counting batches of one); align's counts records."""
    from argilla.records import _dataset_records

    real = _dataset_records.tqdm
    _dataset_records.tqdm = functools.partial(real, disable=True)
    try:
        yield
    finally:
        _dataset_records.tqdm = real


def _chain(first, rest):
    yield from first
    yield from rest


def _text(messages) -> str:
    return "\n\n".join(m["content"] for m in messages)


def to_record(pair: dict[str, Any], round_: int) -> dict[str, Any]:
    """An Argilla record for one pair: content-derived id, candidates in their shown order."""
    rid = record_id(pair["prompt"], pair["response_a"], pair["response_b"], round_)
    first = shown_as_a(rid)
    shown = (pair["response_a"], pair["response_b"]) if first == "a" else (pair["response_b"], pair["response_a"])
    metadata: dict[str, Any] = {"round": round_, "source": str(pair["source"]), "shown_as_a": first}
    if pair.get("policy"):
        metadata["policy"] = str(pair["policy"])
    if pair.get("sampling"):
        metadata["sampling"] = json.dumps(pair["sampling"], sort_keys=True)
    return {
        "external_id": rid,
        "fields": {"prompt": pair["prompt"], "response_a": shown[0], "response_b": shown[1]},
        "metadata": metadata,
        "where": pair["where"],
    }
