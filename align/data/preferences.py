"""Preference pairs: `{prompt, chosen, rejected}` in conversational form, from any supported format.

Canonical row (what every stage trains on, and what `annotate pull` writes):

    {"prompt":   [{"role": "user", "content": "..."}, ...],   # the conversation so far
     "chosen":   [{"role": "assistant", "content": "..."}],   # the preferred reply
     "rejected": [{"role": "assistant", "content": "..."}],
     "weight": 1.0, ...}                                       # optional extras are kept

Formats read (chosen with `format:`, or detected from the first record's fields):
- `conversational`: the canonical row; `prompt`/`chosen`/`rejected` may also be plain strings.
- `hh-rlhf`: Anthropic HH-RLHF `{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}`;
  the shared dialogue up to the last Assistant turn becomes the prompt.
- `oasst`: OpenAssistant message trees; every two sibling assistant replies with human ranks give a
  pair (better rank chosen); replies marked synthetic or deleted are dropped.
- `pairwise-label`: two outputs and a label, e.g. `input, output_1, output_2, label`; label 1 or 2
  names the better output, 0 is a tie (kept out of chosen/rejected, counted). Column names are
  configurable.
- an `annotate pull` run: the canonical row plus votes; ties and no-majority records have
  `chosen: null` and are counted, not trained on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Literal

from align.core.errors import AlignError
from align.data.length import LongPrompts
from align.data.records import read_records

log = logging.getLogger(__name__)

Format = Literal["auto", "conversational", "hh-rlhf", "oasst", "pairwise-label"]
ROLES = ("system", "user", "assistant")
DEFAULT_COLUMNS = {"prompt": "input", "response_a": "output_1", "response_b": "output_2", "label": "label"}


@dataclass
class PreferenceDataConfig:
    """Where preference pairs come from and how they are split."""

    train: str = ""
    """Pairs to train on: JSONL(.gz)/JSON/Parquet/CSV/TSV file, a datasets directory, or a run directory."""
    test: str | None = None
    """Held-out pairs for evaluation. When unset, `test_fraction` of `train` is held out."""
    format: Format = "auto"
    """auto | conversational | hh-rlhf | oasst | pairwise-label (see align/data/preferences.py)."""
    test_fraction: float = 0.0
    """Fraction of `train` held out by a content hash (stable across runs and file order)."""
    max_train_pairs: int | None = None
    """Use at most this many training pairs (a seeded sample), e.g. to fit a time budget."""
    max_test_pairs: int | None = None
    """Evaluate on at most this many held-out pairs (a seeded sample)."""
    validation_fraction: float = 0.0
    """Fraction of the training side (what the test split leaves) set aside, by a prompt hash with its
    own salt, as validation pairs: scored after training (`validation_*` metrics) so settings can be
    chosen without looking at the test split. Those prompts are not trained on."""
    max_validation_pairs: int | None = None
    """Score at most this many validation pairs (a seeded sample)."""
    columns: dict[str, str] = field(default_factory=dict)
    """pairwise-label column names: prompt, response_a, response_b, label (defaults input, output_1, output_2, label)."""
    seed: int = 0
    """Seed of the held-out split and of the samples."""
    check_upstream_split: bool = True
    """Refuse when an upstream run (the model's SFT/reward/DPO runs) trained on prompts held out here;
    false skips the check (recorded in the manifest)."""
    long_prompts: LongPrompts = "keep_last_turns"
    """A pair over `max_length` tokens: `keep_last_turns` cuts whole exchanges from the start of its
    prompt until it fits (counted in the manifest; still too long with only the last user turn: left
    out), `drop` leaves it out. Applies to the held-out pairs too, so they are formatted like training."""
    min_agreement: float | str | None = None
    """Train only on pairs at least this share of annotators agreed on: an exact fraction ("2/3") or a
    decimal read to two places (0.67 keeps 2-of-3 pairs); see `agreement_threshold`."""

    def __post_init__(self):
        if self.min_agreement is not None:
            agreement_threshold(self.min_agreement)  # raises on a bad value, before any data is read
        if not 0.0 <= self.test_fraction < 1.0:
            raise AlignError(f"'data.test_fraction' must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise AlignError(f"'data.validation_fraction' must be in [0, 1), got {self.validation_fraction}")
        unknown = set(self.columns) - set(DEFAULT_COLUMNS)
        if unknown:
            raise AlignError(f"unknown 'data.columns' key(s) {sorted(unknown)}; valid: {sorted(DEFAULT_COLUMNS)}")


@dataclass
class PreferenceData:
    rows: list[dict[str, Any]]
    report: dict[str, int] = field(default_factory=dict)
    """Counts of what was read and what was left out, and why: goes into the manifest."""
    prompts: list[Any] = field(default_factory=list)
    """Held-out data only: the prompts of the whole held-out split (what upstream runs must not train on)."""
    validation: PreferenceData | None = None
    """Training data only: the validation pairs carved from the training side (`data.validation_fraction`)."""


def load_preference_pairs(
    path: str, format: str = "auto", columns: dict[str, str] | None = None, require: bool = True
) -> PreferenceData:
    """Read every pair in `path`, validated. Left-out rows are counted in `report`, never silent."""
    records = read_records(path, run_output="preferences")
    first = next(records, None)
    if first is None:
        raise AlignError(f"{path}: no records (the preference dataset is empty)")
    fmt = format if format != "auto" else detect_format(first[1], first[0])
    convert = {
        "conversational": _from_conversational,
        "hh-rlhf": _from_hh_rlhf,
        "oasst": _from_oasst,
        "pairwise-label": _from_pairwise_label,
    }[fmt]
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    report = {"records_read": 0, "pairs": 0, "ties_or_no_majority": 0, "identical_dropped": 0}
    rows: list[dict[str, Any]] = []
    first_identical = None
    for where, rec in itertools.chain([first], records):
        report["records_read"] += 1
        for row in convert(rec, where, cols, report):
            if row["chosen"] is None or row["rejected"] is None:
                report["ties_or_no_majority"] += 1
                continue
            if _text(row["chosen"]) == _text(row["rejected"]):
                report["identical_dropped"] += 1
                first_identical = first_identical or where
                continue
            rows.append(row)
    report["pairs"] = len(rows)
    if report["identical_dropped"]:
        log.warning("%s: %d pair(s) with chosen identical to rejected left out (first at %s)",
                    path, report["identical_dropped"], first_identical)
    if require and not rows:
        raise AlignError(f"{path}: no usable preference pairs (read {report['records_read']} records; {_why(report)})")
    return PreferenceData(rows, report)


def detect_format(rec: Any, where: str) -> str:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a preference record must be a JSON object, got {type(rec).__name__}")
    keys = set(rec)
    if "message_tree_id" in keys or ("prompt" in keys and isinstance(rec.get("prompt"), dict) and "replies" in rec["prompt"]):
        return "oasst"
    if "prompt" in keys and keys & {"chosen", "rejected"}:
        return "conversational"  # a missing chosen/rejected is reported by the converter, with file:line
    if {"chosen", "rejected"} <= keys:
        if isinstance(rec["chosen"], str) and "Assistant:" in rec["chosen"]:
            return "hh-rlhf"
        return "conversational"  # the missing 'prompt' is reported by the converter
    if {"output_1", "output_2"} <= keys or {"response_a", "response_b"} & keys:
        return "pairwise-label"
    raise AlignError(
        f"{where}: cannot tell the preference format from fields {sorted(keys)}; expected prompt/chosen/rejected "
        "(or set data.format to hh-rlhf, oasst or pairwise-label)"
    )


# -- formats --------------------------------------------------------------------------------------

def _from_conversational(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a preference record must be a JSON object")
    for name in ("prompt", "chosen", "rejected"):
        if name not in rec:
            raise AlignError(f"{where}: missing field '{name}' (a pair needs prompt, chosen and rejected)")
    prompt = as_messages(rec["prompt"], where, "prompt", default_role="user")
    if not prompt:
        raise AlignError(f"{where}: field 'prompt' is empty")
    row = dict(rec)
    row["prompt"] = prompt
    for name in ("chosen", "rejected"):
        # `null` marks a tie or no majority in pulled annotations: counted by the caller.
        row[name] = None if rec[name] is None else as_messages(rec[name], where, name, default_role="assistant")
        if row[name] is not None and not row[name]:
            raise AlignError(f"{where}: field '{name}' is empty")
    yield row


def _from_hh_rlhf(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    for name in ("chosen", "rejected"):
        if not isinstance(rec, dict) or name not in rec:
            raise AlignError(f"{where}: missing field '{name}' (HH-RLHF records have chosen and rejected dialogues)")
    chosen = parse_hh_dialogue(rec["chosen"], where)
    rejected = parse_hh_dialogue(rec["rejected"], where)
    # The two dialogues share everything up to the last Assistant turn.
    if len(chosen) < 2 or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise AlignError(f"{where}: an HH-RLHF dialogue must end with an Assistant turn")
    yield {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


def parse_hh_dialogue(text: str, where: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{user: a}, {assistant: b}]."""
    if not isinstance(text, str):
        raise AlignError(f"{where}: HH-RLHF dialogues are strings")
    messages: list[dict[str, str]] = []
    for chunk in text.split("\n\nHuman:")[1:] if "\n\nHuman:" in text else []:
        human, *assistants = chunk.split("\n\nAssistant:")
        messages.append({"role": "user", "content": human.strip()})
        for reply in assistants:
            messages.append({"role": "assistant", "content": reply.strip()})
    if not messages:
        raise AlignError(f"{where}: no '\\n\\nHuman:' turn found in an HH-RLHF dialogue")
    return messages


def _from_oasst(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    root = rec.get("prompt") if isinstance(rec, dict) else None
    if not isinstance(root, dict) or "text" not in root:
        raise AlignError(f"{where}: an OASST tree needs a 'prompt' message with 'text' and 'replies'")
    yield from _oasst_pairs(root, [], where, report)


def _oasst_pairs(node: dict, history: list[dict[str, str]], where: str, report) -> Iterable[dict[str, Any]]:
    role = "user" if node.get("role") == "prompter" else "assistant"
    convo = history + [{"role": role, "content": node["text"]}]
    replies = [r for r in node.get("replies", []) if not r.get("deleted") and r.get("text")]
    if role == "user":
        ranked = [r for r in replies if r.get("rank") is not None and not r.get("synthetic")]
        report["oasst_synthetic_dropped"] = report.get("oasst_synthetic_dropped", 0) + sum(
            1 for r in replies if r.get("synthetic")
        )
        ranked.sort(key=lambda r: r["rank"])
        for i, better in enumerate(ranked):
            for worse in ranked[i + 1:]:
                if better["rank"] == worse["rank"]:
                    continue
                yield {
                    "prompt": convo,
                    "chosen": [{"role": "assistant", "content": better["text"]}],
                    "rejected": [{"role": "assistant", "content": worse["text"]}],
                    "source": f"{where}#{better.get('message_id', '')}>{worse.get('message_id', '')}",
                }
    for reply in replies:
        if role == "user" and reply.get("synthetic"):
            continue
        yield from _oasst_pairs(reply, convo, where, report)


def _from_pairwise_label(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a pairwise-label record must be an object with columns")
    for key in ("prompt", "response_a", "response_b", "label"):
        if cols[key] not in rec:
            raise AlignError(f"{where}: missing field '{cols[key]}' (set data.columns.{key} if it has another name)")
    label = str(rec[cols["label"]]).strip().lower()
    prompt = as_messages(rec[cols["prompt"]], where, cols["prompt"], default_role="user")
    a = as_messages(rec[cols["response_a"]], where, cols["response_a"], default_role="assistant")
    b = as_messages(rec[cols["response_b"]], where, cols["response_b"], default_role="assistant")
    if label in ("1", "1.0", "a", "output_1"):
        chosen, rejected = a, b
    elif label in ("2", "2.0", "b", "output_2"):
        chosen, rejected = b, a
    elif label in ("0", "0.0", "tie", ""):
        chosen = rejected = None
    else:
        raise AlignError(f"{where}: label {rec[cols['label']]!r} is not 1, 2 (the better output) or 0 (tie)")
    yield {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# -- helpers --------------------------------------------------------------------------------------

def as_messages(value: Any, where: str, name: str, default_role: str) -> list[dict[str, str]]:
    """A string becomes one message; a list must be {role, content} messages with known roles."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}] if value.strip() else []
    if isinstance(value, dict) and "role" in value:
        value = [value]
    if not isinstance(value, list):
        raise AlignError(f"{where}: field '{name}' must be a string or a list of messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise AlignError(f"{where}: {name}[{i}] must be a message {{role, content}}")
        if m["role"] not in ROLES:
            raise AlignError(f"{where}: {name}[{i}] has role {m['role']!r}; roles are {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise AlignError(f"{where}: {name}[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"].strip() for m in messages)


def _why(report: dict[str, int]) -> str:
    reasons = [f"{v} {k.replace('_', ' ')}" for k, v in report.items() if k not in ("records_read", "pairs") and v]
    return ", ".join(reasons) or "no pairs in the records"


def pair_key(row: dict[str, Any]) -> str:
    """Content hash of a pair, for stable splits and de-duplication."""
    payload = json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


VALIDATION_SALT = "validation"


def split_pairs(rows: list[dict[str, Any]], test_fraction: float, seed: int | str) -> tuple[list, list]:
    """Hold out `test_fraction` of rows by hashing their prompt: all pairs of one prompt stay on one side."""
    if test_fraction <= 0:
        return rows, []
    train, test = [], []
    for row in rows:
        h = hashlib.sha256(f"{seed}:{json.dumps(row['prompt'], sort_keys=True)}".encode()).digest()
        (test if int.from_bytes(h[:8], "big") / 2**64 < test_fraction else train).append(row)
    return train, test


def sample(rows: list, n: int | None, seed: int) -> list:
    """A seeded sample of at most n rows, kept in file order."""
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def load_splits(cfg: PreferenceDataConfig, fits=None) -> tuple[PreferenceData, PreferenceData | None]:
    """Train and held-out pairs per the config; held-out never overlaps train by prompt.

    `fits(rows, what) -> (kept, report)` (the token budget) is applied before sampling, so
    `max_train_pairs` counts pairs that are actually trained on. The held-out data's `prompts` are
    the prompts of the whole held-out split (before the budget and sample), for the upstream check.
    """
    data, train_rows, test = training_pool(cfg)
    if not train_rows:
        raise AlignError(f"{cfg.train}: no training pairs left after holding out the test split")
    validation = data.validation
    if fits is not None:
        train_rows, budget = fits(train_rows, "pairs")
        data.report.update(budget)
        for held, what in ((test, "test_pairs"), (validation, "validation_pairs")):
            if held is not None:
                held.rows, budget = fits(held.rows, what)
                held.report.update(budget)
    train_rows = sample(train_rows, cfg.max_train_pairs, cfg.seed)
    for held, limit in ((test, cfg.max_test_pairs), (validation, cfg.max_validation_pairs)):
        if held is not None:
            held.rows = sample(held.rows, limit, cfg.seed)
            held.report["used"] = len(held.rows)
    data.report["train_pairs_used"] = len(train_rows)
    return PreferenceData(train_rows, data.report, validation=validation), test


def training_pool(cfg: PreferenceDataConfig) -> tuple[PreferenceData, list[dict[str, Any]], PreferenceData | None]:
    """(everything read, the pairs training may draw from, the held-out pairs): the split alone,
    before the token budget and samples. Also used to recompute what an upstream run trained on."""
    if not cfg.train:
        raise AlignError("'data.train' is required: a preference file, datasets directory or run directory")
    data = load_preference_pairs(cfg.train, cfg.format, cfg.columns)
    if cfg.min_agreement is not None:
        data.rows = filter_agreement(data.rows, cfg.min_agreement, cfg.train, data.report)
    train_rows, test_rows = split_pairs(data.rows, cfg.test_fraction, cfg.seed)
    test = None
    if cfg.test:
        test = load_preference_pairs(cfg.test, cfg.format, cfg.columns)
        held_out = {json.dumps(r["prompt"], sort_keys=True) for r in test.rows}
        before = len(train_rows)
        train_rows = [r for r in train_rows if json.dumps(r["prompt"], sort_keys=True) not in held_out]
        data.report["train_prompts_in_test_dropped"] = before - len(train_rows)
    elif test_rows:
        test = PreferenceData(test_rows, {"pairs": len(test_rows), "held_out_from": cfg.train})
    if test is not None:
        test.prompts = [r["prompt"] for r in test.rows]
    if cfg.validation_fraction > 0:
        # Its own salt, so the validation prompts are not the test split of some other seed.
        train_rows, validation_rows = split_pairs(train_rows, cfg.validation_fraction, f"{VALIDATION_SALT}:{cfg.seed}")
        if not validation_rows or not train_rows:
            raise AlignError(
                f"data.validation_fraction={cfg.validation_fraction} of {len(train_rows) + len(validation_rows)} training-side "
                f"pairs leaves {len(validation_rows)} to validate on and {len(train_rows)} to train on; change data.validation_fraction")
        data.report["validation_pairs_set_aside"] = len(validation_rows)
        data.validation = PreferenceData(validation_rows, {"pairs": len(validation_rows), "carved_from": "training side"})
    return data, train_rows, test


# A decimal min_agreement is read as written to two places: 0.67 means "two thirds or more", so it must
# keep a 2-of-3 pair (0.6667). Exact fractions ("2/3") need no tolerance; the pulled `agreement` float
# is rounded to four places, so rows that only have that float get that much slack.
DECIMAL_TOLERANCE = Fraction(1, 200)
ROUNDED_FLOAT_TOLERANCE = Fraction(1, 20000)


def agreement_threshold(value: float | str) -> tuple[Fraction, Fraction]:
    """(threshold, tolerance) for `min_agreement`: a pair is kept when its share of votes for the
    winning choice is >= threshold - tolerance. "k/n" is exact; a decimal d keeps every k/n >= d - 0.005."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if not match or int(match[2]) == 0 or int(match[1]) > int(match[2]):
            raise AlignError(f"'data.min_agreement' must be a fraction k/n with k <= n (e.g. 2/3) or a number in [0, 1], got {value!r}")
        return Fraction(int(match[1]), int(match[2])), Fraction(0)
    if not 0.0 <= value <= 1.0:
        raise AlignError(f"'data.min_agreement' must be in [0, 1] (or a fraction such as 2/3), got {value}")
    return Fraction(str(value)), DECIMAL_TOLERANCE


def vote_share(row: dict[str, Any]) -> tuple[Fraction, bool] | None:
    """(share of votes for the most common choice, exact?) of a pulled row: exact from `counts`
    ({a, b, tie}), else the rounded `agreement` float; None when the row has neither."""
    counts = row.get("counts")
    if isinstance(counts, dict) and counts and all(isinstance(v, int) for v in counts.values()) and sum(counts.values()) > 0:
        return Fraction(max(counts.values()), sum(counts.values())), True
    if row.get("agreement") is None:
        return None
    return Fraction(str(row["agreement"])), False


def filter_agreement(rows: list[dict[str, Any]], threshold: float | str, path: str, report: dict) -> list[dict[str, Any]]:
    """Keep pairs whose annotator agreement is >= threshold (see `agreement_threshold`). Data without
    agreement is an error: the user asked for a filter that cannot apply."""
    if not any("agreement" in r or "counts" in r for r in rows):
        raise AlignError(
            f"data.min_agreement={threshold} but {path} has no 'agreement' field "
            "(it comes from `align annotate pull`); remove min_agreement for this data"
        )
    minimum, tolerance = agreement_threshold(threshold)
    kept = []
    for row in rows:
        share = vote_share(row)
        if share is None:
            continue
        value, exact = share
        if value >= minimum - tolerance - (Fraction(0) if exact else ROUNDED_FLOAT_TOLERANCE):
            kept.append(row)
    report["below_min_agreement"] = len(rows) - len(kept)
    return kept
