"""Push candidate pairs to Argilla for annotators: `align annotate push PAIRS dataset=NAME`.

Input (`pairs`): an `align pairs` run (its `pairs` output), a pairs JSONL file with rows
`{prompt, response_a, response_b, policy?, sampling?, scores?, source?}`, or a preference file
(conversational or HH-RLHF; each pair's chosen and rejected become two unlabeled candidates, to
demonstrate the loop before generation exists).

What it does, in order: reads and checks every pair (nothing is sent if the input is bad); connects
and creates the dataset from the template if it does not exist, or checks that an existing one
matches the template (and replaces its guidelines if they differ, recording old and new hashes);
mixes in gold records when `gold.path` is set (known-answer pairs at `gold.rate` of the dataset,
each shown exactly like any other record: its metadata copies a real record's and nothing on the
server says it is gold); redacts personal data in prompts and responses (`redaction`, align/privacy/redact.py: e-mails,
phone numbers, US SSNs, street addresses, payment cards, IBANs, IP addresses and `redaction_patterns`
become [EMAIL], [PHONE], ...; with `redaction_backend` presidio also names and places, [PERSON], [LOCATION]; `drop` leaves such pairs out; counts per type go in the manifest, never the values); derives each record's id from its content as annotators see it (redacted prompt, the two responses
in sorted order, round), so labels pulled back refer to the redacted text, and
sends only records the dataset does not have yet, so pushing twice never duplicates; shows candidate
b as A on a random half of the new records. Which records are swapped and which are gold is kept
OFF the server, where any annotator could read it through the API: push writes it to the label
journal (journal.py, `journal_dir`, shared with `align annotate pull`) before it sends the records,
then writes a run with `records.jsonl` (record id, which candidate is shown as A, gold, input line).
Raises AlignError for bad input, a template mismatch or a rejected API key; ServiceError when
Argilla stays unreachable (nothing is written locally then).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from align.annotate import template as templates
from align.annotate.connection import UPSERT_BATCH, ArgillaConfig, connect, sdk
from align.annotate.journal import Journal, journal_path
from align.annotate.local import cache_root
from align.annotate.votes import legacy_record_id, legacy_shown_as_a, record_id
from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.privacy import redact as privacy
from align.privacy.backend import DEFAULT_SPACY_MODEL, check_backend, make_redactor

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"


@dataclass
class GoldConfig:
    """Known-answer pairs mixed into a push, to measure each annotator's accuracy (align/annotate/quality.py)."""

    path: str = ""
    """JSONL of gold pairs: {prompt, response_a, response_b, expected: a|b} or {prompt, chosen, rejected}. Empty: none."""
    rate: float = 0.1
    """Share of the dataset's records that are gold (e.g. 0.1: one record in ten), at most every gold pair once."""

    def __post_init__(self):
        if not 0 < self.rate < 1:
            raise AlignError(f"'gold.rate' must be in (0, 1), got {self.rate}")


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
    max_records: int | None = None
    """Label budget: push at most this many records, the most uncertain when every pair has an `uncertainty`
    (`align pairs` with least_sure, ensemble_disagreement or dpo_margin), else a random sample seeded by
    dataset and round (align/rollout/pairs.py `budget`). Unset: all."""
    format: str = "auto"
    """Format of a preference-file input (auto, conversational, hh-rlhf, ...); ignored for pairs."""
    redaction: str | bool = "redact"
    """Personal data in prompts and responses: redact (placeholders like [EMAIL]), drop (the pair) or off."""
    redaction_patterns: dict[str, str] = field(default_factory=dict)
    """Extra types to redact: TYPE_NAME -> regular expression; each match becomes [TYPE_NAME]."""
    redaction_backend: str = "auto"
    """Who finds personal data: presidio (adds names and places; align[privacy] + a spaCy model), rules, or auto
    (presidio when installed with its model, else rules). See docs/guide/privacy.md."""
    redaction_spacy_model: str = DEFAULT_SPACY_MODEL
    """spaCy pipeline for the presidio backend's NER (package name or path); `blank`: Presidio's patterns only."""
    phone_region: str = "US"
    """Region whose national phone formats are recognised; +-prefixed international numbers always are."""
    gold: GoldConfig = field(default_factory=GoldConfig)
    """Gold pairs mixed in (path, rate); their votes never become training pairs (`annotate pull` keeps them apart)."""
    journal_dir: str = ""
    """Folder of the label journals, where the A/B order and the gold answers are kept (default as `annotate pull`:
    <align cache>/annotate); pull must use the same."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""

    def __post_init__(self):
        if self.annotators_per_record < 1:
            raise AlignError(f"'annotators_per_record' must be >= 1, got {self.annotators_per_record}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise AlignError(f"'max_pairs' must be >= 1, got {self.max_pairs}")
        if self.max_records is not None and self.max_records < 1:
            raise AlignError(f"'max_records' must be >= 1, got {self.max_records}")
        if self.redaction is False:  # YAML 1.1 reads a bare `off` as false
            self.redaction = "off"
        privacy.check_mode(self.redaction)
        check_backend(self.redaction_backend, "redaction_backend")


def check(cfg: Config) -> dict[str, Any]:
    """What `--dry-run` prints: the pairs read, redacted and counted, the template and guidelines
    loaded; Argilla is not contacted."""
    _tpl, _guidelines, _redactor, _records, unique, report = prepare(cfg)
    return {
        **report,
        "records": len(unique),
        "gold_records": sum(r["gold"] is not None for r in unique.values()),
        "template": cfg.template,
        "guidelines": cfg.guidelines,
    }


def prepare(cfg: Config):
    """Everything push checks before it connects: bad input fails here, before anything is sent."""
    if not cfg.pairs:
        raise AlignError("give the candidate pairs: `align annotate push RUN_OR_FILE dataset=NAME`")
    if not cfg.dataset:
        raise AlignError("'dataset' is required: the Argilla dataset to push to, e.g. dataset=harmless-round1")
    tpl = templates.load_template(cfg.template)
    guidelines = templates.guidelines_text(cfg.guidelines)
    redactor = (
        None
        if cfg.redaction == "off"
        else make_redactor(cfg.redaction_backend, cfg.phone_region, cfg.redaction_patterns, cfg.redaction_spacy_model)
    )
    pairs, report = read_candidates(cfg.pairs, cfg.format, cfg.max_pairs)
    pairs, report["redaction"] = redact_pairs(pairs, redactor, cfg.redaction)
    if cfg.max_records is not None:
        from align.rollout.pairs import budget

        offered = len(pairs)
        pairs, rule = budget(pairs, cfg.max_records, f"{cfg.dataset}:{cfg.round}")
        report["budget"] = {"max_records": cfg.max_records, "offered": offered, "kept": len(pairs), "rule": rule}
    if not pairs:
        raise AlignError(
            f"{cfg.pairs}: no pairs left to annotate after redaction={cfg.redaction} ({report['redaction']})"
        )
    records = [to_record(p, cfg.round) for p in pairs]
    if cfg.gold.path:
        records = mix_gold(records, cfg, redactor, report)
    unique = {r["external_id"]: r for r in records}
    report["duplicates_in_input"] = len(records) - len(unique)
    return tpl, guidelines, redactor, records, unique, report


def run(cfg: Config) -> dict[str, Any]:
    tpl, guidelines, redactor, records, unique, report = prepare(cfg)

    with connect(cfg.argilla) as conn:
        ds = conn.find_dataset(cfg.dataset, cfg.argilla.workspace)
        guidelines_before, replaced = None, False
        if ds is None or ds._model.status == "draft":
            ds = templates.create_dataset(
                conn, cfg.dataset, cfg.argilla.workspace, tpl, guidelines, cfg.annotators_per_record
            )
            log.info("created dataset '%s' in workspace '%s' at %s", cfg.dataset, cfg.argilla.workspace, conn.api_url)
        else:
            templates.check_dataset(ds, tpl)
            guidelines_before = ds.settings.guidelines
            if (guidelines_before or "").strip() != guidelines:  # datasets made before may keep a final newline
                # Annotators must see what the run records: the new guidelines replace the old ones.
                templates.update_guidelines(conn, ds, guidelines)
                replaced = True
                log.warning(
                    "dataset '%s': guidelines replaced by '%s' (sha256 %s, were %s); annotators see the new "
                    "ones from their next page load",
                    cfg.dataset,
                    cfg.guidelines,
                    templates.text_hash(guidelines),
                    templates.text_hash(guidelines_before),
                )
            have = ds.distribution.min_submitted
            if have != cfg.annotators_per_record:
                log.warning(
                    "dataset '%s' keeps annotators_per_record=%s (set when it was created); change it in "
                    "the Argilla UI (dataset settings) if you meant %d",
                    cfg.dataset,
                    have,
                    cfg.annotators_per_record,
                )
        dataset_id = str(ds.id)
        journal = Journal(journal_path(_journal_dir(cfg), conn.api_url, cfg.argilla.workspace, cfg.dataset, dataset_id))
        existing = {r["external_id"]: r for r in conn.records(dataset_id, responses=False)}
        for r in records:
            if r["external_id"] not in existing and r["legacy_id"] in existing:  # pushed by an older align
                r["external_id"] = r["legacy_id"]
        new = [r for r in unique.values() if r["external_id"] not in existing]
        orders = display_orders(unique.values(), existing, journal)
        # Write-ahead: the order and the gold answers are on disk before a record they describe is sent.
        journal.append(
            [
                {
                    "kind": "push",
                    "record_id": r["external_id"],
                    "shown_as_a": orders[r["external_id"]],
                    "gold": r["gold"],
                    "round": cfg.round,
                    "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                for r in new
                if r["external_id"] not in journal.pushed
            ]
        )
        start = time.time()
        if new:
            rg = sdk()
            owner_id = conn.call("GET /api/v1/me", lambda: conn.client.me.id)  # log() would ask once per batch
            with (
                tqdm(total=len(new), desc=f"pushing to '{cfg.dataset}'", unit="record", mininterval=1.0) as bar,
                _without_sdk_bar(),
            ):
                for i in range(0, len(new), UPSERT_BATCH):
                    batch = [
                        rg.Record(
                            id=r["external_id"],
                            fields=shown_fields(r, orders[r["external_id"]]),
                            metadata=r["metadata"],
                        )
                        for r in new[i : i + UPSERT_BATCH]
                    ]
                    # An upsert by record id: sending a batch twice leaves the same records, so it may be retried.
                    conn.call(
                        f"PUT records of '{cfg.dataset}'",
                        lambda: ds.records.log(batch, user_id=owner_id, batch_size=len(batch)),
                    )
                    bar.update(len(batch))
            log.info("pushed %d new records to '%s'", len(new), cfg.dataset)
        seconds = time.time() - start
        api_url = conn.api_url

    with runs.new_run("annotate push", to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        run_.add_input("pairs", cfg.pairs)
        if cfg.gold.path:
            run_.add_input("gold", cfg.gold.path)
        with open(run_.path / RECORDS, "w", encoding="utf-8") as f:
            for r in records:
                f.write(
                    json.dumps(
                        {
                            "record_id": r["external_id"],
                            "shown_as_a": orders[r["external_id"]],
                            "gold": r["gold"],
                            "round": cfg.round,
                            "input": r["where"],
                        }
                    )
                    + "\n"
                )
        run_.add_output("records", RECORDS)
        run_.notes.update(
            {
                "api_url": api_url,
                "workspace": cfg.argilla.workspace,
                "dataset": cfg.dataset,
                "dataset_id": dataset_id,
                "journal": str(journal.path),
                "template": str(tpl.path),
                "guidelines_sha256": templates.text_hash(guidelines),
            }
        )
        if redactor is not None:
            run_.notes["redaction_detectors"] = redactor.describe()  # the backend, spaCy model and versions
        if replaced:
            run_.notes["guidelines_replaced_sha256"] = templates.text_hash(guidelines_before)
        run_.metrics.update(
            {
                **report,
                "records": len(unique),
                "records_new": len(new),
                "records_already_there": len(unique) - len(new),
                "gold_records": sum(r["gold"] is not None for r in unique.values()),
                "shown_swapped": sum(orders[rid] == "b" for rid in orders),
                "order_unknown": sum(orders[rid] is None for rid in orders),
                "push_records_per_s": round(len(new) / seconds, 1) if new and seconds > 0 else None,
            }
        )
        manifest = runs.finish(run_)
    print(
        f"pushed {len(new)} new records to '{cfg.dataset}' ({len(unique) - len(new)} were already there); "
        f"annotators open {api_url}/dataset/{dataset_id}/annotation-mode"
    )
    return manifest


# -- redaction -------------------------------------------------------------------------------------

# The parts of a pair annotators see; `where` (file:line) and align's own metadata are left alone.
_SHOWN = ("prompt", "response_a", "response_b", "source")


def redact_pairs(pairs: list[dict[str, Any]], redactor, mode: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs with personal data redacted (or left out with `drop`), and counts per type (no values)."""
    report: dict[str, Any] = {
        "mode": mode,
        "findings": {},
        "pairs_redacted": 0,
        "pairs_dropped": 0,
        "skipped_identical_after_redaction": 0,
    }
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
        log.info(
            "redaction=%s: %s in %d pair(s)%s",
            mode,
            ", ".join(f"{k} {v}" for k, v in report["findings"].items()),
            report["pairs_redacted"] + report["pairs_dropped"] + report["skipped_identical_after_redaction"],
            f"; {report['pairs_dropped']} dropped" if mode == "drop" else "",
        )
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
            "uncertainty": rec.get("uncertainty"),
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


def to_record(pair: dict[str, Any], round_: int, gold: str | None = None) -> dict[str, Any]:
    """A record for one pair, candidates in input order (`shown_fields` puts them in display order)."""
    metadata: dict[str, Any] = {"round": round_, "source": str(pair["source"])}
    if pair.get("policy"):
        metadata["policy"] = str(pair["policy"])
    if pair.get("sampling"):
        metadata["sampling"] = json.dumps(pair["sampling"], sort_keys=True)
    return {
        "external_id": record_id(pair["prompt"], pair["response_a"], pair["response_b"], round_),
        "legacy_id": legacy_record_id(pair["prompt"], pair["response_a"], pair["response_b"], round_),
        "prompt": pair["prompt"],
        "candidates": (pair["response_a"], pair["response_b"]),
        "metadata": metadata,
        "gold": gold,
        "where": pair["where"],
    }


def shown_fields(record: dict[str, Any], first: str) -> dict[str, Any]:
    """The record's fields as annotators see them: candidate `first` ('a' or 'b') as response A."""
    a, b = record["candidates"]
    shown = (a, b) if first == "a" else (b, a)
    return {"prompt": record["prompt"], "response_a": shown[0], "response_b": shown[1]}


def display_orders(records, existing: dict[str, dict[str, Any]], journal: Journal) -> dict[str, str | None]:
    """record id -> the candidate shown as A: the journaled order of a record pushed before (or, for a
    dataset pushed by an older align, the one in its metadata); for new records, exactly half (rounded
    at random) show b as A, in an order drawn from the system's random source, not from anything an
    annotator can see. None: the record is on the server but its order is in no journal here (pushed
    from another machine: pull there)."""
    orders: dict[str, str | None] = {}
    fresh = []
    for r in records:
        rid = r["external_id"]
        legacy = rid == r["legacy_id"] and rid in existing
        if rid in journal.pushed:
            orders[rid] = journal.pushed[rid]["shown_as_a"]
        elif legacy:
            orders[rid] = (existing[rid].get("metadata") or {}).get("shown_as_a") or legacy_shown_as_a(rid)
        elif rid in existing:
            orders[rid] = None
        else:
            fresh.append(rid)
    rng = random.SystemRandom()
    swapped = len(fresh) // 2 + (rng.random() < 0.5 if len(fresh) % 2 else 0)
    draw = ["b"] * swapped + ["a"] * (len(fresh) - swapped)
    rng.shuffle(draw)
    orders.update(zip(fresh, draw))
    unknown = sum(v is None for v in orders.values())
    if unknown:
        log.warning(
            "%d record(s) already in the dataset have no A/B order in %s (pushed with another journal_dir "
            "or from another machine): pull them where they were pushed",
            unknown,
            journal.path,
        )
    return orders


def _journal_dir(cfg: Config) -> Path:
    return Path(cfg.journal_dir).expanduser() if cfg.journal_dir else cache_root() / "annotate"


# -- gold ------------------------------------------------------------------------------------------


def mix_gold(records: list[dict[str, Any]], cfg: Config, redactor, report: dict[str, Any]) -> list[dict[str, Any]]:
    """`records` with gold records at random places, `gold.rate` of the result (at most each gold pair once).

    The choice of gold pairs and their places is seeded by dataset and round, so pushing again sends the
    same ones. Each gold record takes the metadata (source, policy, sampling) of a random real record:
    nothing an annotator can read tells it apart.
    """
    gold_pairs = read_gold(cfg.gold.path)
    gold_pairs, _ = redact_pairs(gold_pairs, redactor, cfg.redaction)
    real = {r["external_id"] for r in records}
    candidates = [
        p for p in gold_pairs if record_id(p["prompt"], p["response_a"], p["response_b"], cfg.round) not in real
    ]
    wanted = max(1, round(len(records) * cfg.gold.rate / (1 - cfg.gold.rate)))
    rng = random.Random(f"gold:{cfg.dataset}:{cfg.round}")
    picked = rng.sample(candidates, min(wanted, len(candidates)))
    if len(picked) < wanted:
        log.warning(
            "%s: %d usable gold pair(s), fewer than the %d that gold.rate=%s asks for; all are used",
            cfg.gold.path,
            len(picked),
            wanted,
            cfg.gold.rate,
        )
    out = list(records)
    for pair in picked:
        like = rng.choice(records)
        record = to_record(pair, cfg.round, gold=pair["expected"])
        record["metadata"] = dict(like["metadata"])
        out.insert(rng.randrange(len(out) + 1), record)
    report["gold"] = {
        "path": cfg.gold.path,
        "rate": cfg.gold.rate,
        "available": len(candidates),
        "records": len(picked),
    }
    return out


def read_gold(path: str) -> list[dict[str, Any]]:
    """Gold pairs `{prompt, response_a, response_b, expected, where}`, checked.

    A row gives `response_a`, `response_b` and `expected` (a or b), or `chosen` and `rejected` (strings or
    assistant messages), which become candidates a and b with expected a: the display order is drawn at
    push like any record's, so where the expected reply is shown is random either way."""
    from align.data.preference_formats import as_messages
    from align.data.records import read_records

    out = []
    for where, rec in read_records(path):
        if not isinstance(rec, dict) or "prompt" not in rec:
            raise AlignError(f"{where}: a gold pair needs a prompt")
        if "expected" in rec:
            missing = [k for k in ("response_a", "response_b") if not isinstance(rec.get(k), str)]
            if missing:
                raise AlignError(f"{where}: a gold pair with 'expected' needs response_a and response_b (texts)")
            if rec["expected"] not in ("a", "b"):
                raise AlignError(f"{where}: 'expected' must be a or b, got {rec['expected']!r}")
            a, b, expected = rec["response_a"], rec["response_b"], rec["expected"]
        elif "chosen" in rec and "rejected" in rec:
            a, b, expected = _reply(rec["chosen"], where, "chosen"), _reply(rec["rejected"], where, "rejected"), "a"
        else:
            raise AlignError(
                f"{where}: a gold pair needs response_a, response_b and expected (a|b), or chosen and rejected"
            )
        if not a.strip() or a.strip() == b.strip():
            raise AlignError(f"{where}: a gold pair needs two different, non-empty replies")
        out.append(
            {
                "prompt": as_messages(rec["prompt"], where, "prompt", default_role="user"),
                "response_a": a,
                "response_b": b,
                "expected": expected,
                "source": "",
                "where": where,
            }
        )
    if not out:
        raise AlignError(f"{path}: no gold pairs (the file is empty)")
    return out


def _reply(value: Any, where: str, name: str) -> str:
    from align.data.preference_formats import as_messages

    return value if isinstance(value, str) else _text(as_messages(value, where, name, default_role="assistant"))
