"""Preference data: pairs `{prompt, chosen, rejected}` (or unpaired examples) in conversational form.

Canonical pair (what the reward and DPO stages train on, and what `annotate pull` writes):

    {"prompt":   [{"role": "user", "content": "..."}, ...],   # the conversation so far
     "chosen":   [{"role": "assistant", "content": "..."}],   # the preferred reply
     "rejected": [{"role": "assistant", "content": "..."}],
     "weight": 1.0, ...}                                       # optional extras are kept

Canonical unpaired example (what `align kto` trains on): `{"prompt": [...], "completion": [...],
"label": true}`, label true for a desirable completion, false for an undesirable one.

Formats read (chosen with `data.format`, or detected from the first record's fields; the readers and
how they depart from TRL: align/data/preference_formats.py):
- `conversational`: TRL's explicit prompt, `{prompt, chosen, rejected}` as message lists or plain strings.
- `implicit`: TRL's implicit prompt, `{chosen, rejected}` each holding the whole conversation (message
  lists, e.g. TRL's trl-lib/hh-rlhf-helpful-base) or the whole text (strings); their longest common
  prefix is the prompt, as TRL's `extract_prompt` takes it (strings are cut at a word boundary).
- `unpaired`: TRL's unpaired preference, `{prompt, completion, label}` (strings or messages). Only
  `align kto` trains on it; the pair stages (reward, dpo, evaluate reward) refuse it in one line. KTO
  also reads every paired format: each pair becomes a desirable and an undesirable example.
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
from typing import Any

from align.core.errors import AlignError
from align.core.preference_losses import Ties, Weighting
from align.data.length import LongPrompts
from align.data.preference_formats import (  # noqa: F401  (as_messages, parse_hh_dialogue: re-exported)
    DEFAULT_COLUMNS,
    UNPAIRED,
    Format,
    as_messages,
    converter,
    detect_format,
    parse_hh_dialogue,
    unpair,
)
from align.data.records import read_records

log = logging.getLogger(__name__)


@dataclass
class PreferenceDataConfig:
    """Where preference pairs come from and how they are split."""

    train: str = ""
    """Pairs to train on: JSONL(.gz)/JSON/Parquet/CSV/TSV file, a datasets directory, a run directory, or a hub
    dataset `hf:<org>/<name>?split=train&subset=<config>&revision=<rev>` (split defaults to train; see align.core.hub)."""
    test: str | None = None
    """Held-out pairs for evaluation (any container `train` takes, e.g. `hf:<org>/<name>?split=test`). When unset,
    `test_fraction` of `train` is held out."""
    format: Format = "auto"
    """auto (from the first record's fields) | conversational (prompt/chosen/rejected) | implicit (chosen/rejected
    that both begin with the prompt) | unpaired (prompt/completion/label: `align kto` only) | hh-rlhf | oasst |
    pairwise-label; see align/data/preferences.py."""
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
    weighting: Weighting = "none"
    """reward and dpo: use each pair's `p_chosen` (from `align annotate pull`): none | label_smoothing (soft
    Bradley-Terry target; per-pair conservative DPO, eps = 1 - p_chosen) | weight (loss times 2 p_chosen - 1);
    align/core/preference_losses.py."""
    ties: Ties = "drop"
    """reward and dpo: pairs judged a tie are dropped (drop) or trained on with a tie model of Bradley-Terry:
    davidson | rao_kupper (counted as `ties_kept`); align/core/preference_losses.py."""
    tie_strength: float | None = None
    """The tie model's nu (Davidson > 0, Rao-Kupper > 1); default 1 (Davidson) or 2 (Rao-Kupper), where
    P(tie) is 1/3 at a zero margin."""
    min_votes: int | None = None
    """Train only on pulled pairs with at least this many submitted votes. Without it a single vote
    counts as full agreement (1 of 1), so `min_agreement` alone keeps one-vote pairs; 2 or more makes
    agreement mean something."""

    def __post_init__(self):
        if self.min_agreement is not None:
            agreement_threshold(self.min_agreement)  # raises on a bad value, before any data is read
        if self.min_votes is not None and (
            isinstance(self.min_votes, bool) or not isinstance(self.min_votes, int) or self.min_votes < 1
        ):
            raise AlignError(f"'data.min_votes' must be a whole number >= 1, got {self.min_votes!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise AlignError(f"'data.test_fraction' must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise AlignError(f"'data.validation_fraction' must be in [0, 1), got {self.validation_fraction}")
        if self.tie_strength is not None:
            if self.ties == "drop":
                raise AlignError(
                    f"'data.tie_strength={self.tie_strength}' is the parameter of a tie model, and data.ties=drop; "
                    "set data.ties=davidson or rao_kupper, or remove data.tie_strength"
                )
            low = 0.0 if self.ties == "davidson" else 1.0
            if not self.tie_strength > low:
                raise AlignError(
                    f"'data.tie_strength' must be > {low:g} for data.ties={self.ties}, got {self.tie_strength}"
                )
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
    path: str,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    require: bool = True,
    unpaired: bool = False,
    keep_ties: bool = False,
) -> PreferenceData:
    """Read every pair in `path`, validated. Left-out rows are counted in `report`, never silent.

    `unpaired=False` (the pair stages: reward, dpo, evaluate reward) refuses unpaired data, which has
    no chosen/rejected to compare. `unpaired=True` (`align kto`) returns examples
    `{prompt, completion, label}`: unpaired data as read, pairs split into one desirable and one
    undesirable example each (TRL's `unpair_preference_dataset`).
    `keep_ties=True` (`data.ties` other than drop) returns a record judged a tie (pulled `majority: tie`,
    pairwise-label 0) as a pair with `tie: true`, candidate a as chosen; counted as `ties_kept`.
    """
    # A feedback run (`align feedback import`) holds both: thumbs as `examples`, corrections as `preferences`.
    records = read_records(path, run_output="examples" if unpaired else "preferences")
    first = next(records, None)
    if first is None:
        raise AlignError(f"{path}: no records (the preference dataset is empty)")
    fmt = format if format != "auto" else detect_format(first[1], first[0])
    if fmt == UNPAIRED and not unpaired:
        how = "data.format=unpaired" if format == UNPAIRED else f"detected from the fields of {first[0]}"
        raise AlignError(
            f"{path} is unpaired preference data (prompt, completion, label; {how}): it has no chosen/rejected "
            "pairs for this stage to compare; `align kto` trains on unpaired data"
        )
    convert = converter(fmt)
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    report = {"records_read": 0, "pairs": 0, "ties_or_no_majority": 0, "identical_dropped": 0}
    if fmt == UNPAIRED:
        report = {"records_read": 0, "examples": 0}
    rows: list[dict[str, Any]] = []
    first_identical = None
    for where, rec in itertools.chain([first], records):
        report["records_read"] += 1
        for row in convert(rec, where, cols, report):
            if fmt == UNPAIRED:
                rows.append(row)
                continue
            if (row["chosen"] is None or row["rejected"] is None) and keep_ties and _is_tie(row):
                row = {
                    **row,
                    "chosen": as_messages(row["response_a"], where, "response_a", default_role="assistant"),
                    "rejected": as_messages(row["response_b"], where, "response_b", default_role="assistant"),
                    "tie": True,
                }
                report["ties_kept"] = report.get("ties_kept", 0) + 1
            if row["chosen"] is None or row["rejected"] is None:
                report["ties_or_no_majority"] += 1
                continue
            if _text(row["chosen"]) == _text(row["rejected"]):
                report["identical_dropped"] += 1
                first_identical = first_identical or where
                continue
            rows.append(row)
    if report.get("identical_dropped"):
        log.warning(
            "%s: %d pair(s) with chosen identical to rejected left out (first at %s)",
            path,
            report["identical_dropped"],
            first_identical,
        )
    if fmt != UNPAIRED:
        report["pairs"] = len(rows)
        if unpaired:
            rows = unpair(rows)
    if unpaired:
        desirable = sum(r["label"] for r in rows)
        report.update(examples=len(rows), desirable=desirable, undesirable=len(rows) - desirable)
    if require and not rows:
        what = "examples" if unpaired else "preference pairs"
        raise AlignError(f"{path}: no usable {what} (read {report['records_read']} records; {_why(report)})")
    return PreferenceData(rows, report)


# -- helpers --------------------------------------------------------------------------------------


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"].strip() for m in messages)


def _is_tie(row: dict[str, Any]) -> bool:
    return row.get("majority") == "tie" and row.get("response_a") is not None and row.get("response_b") is not None


def _why(report: dict[str, int]) -> str:
    counts = ("records_read", "pairs", "examples", "desirable", "undesirable")
    reasons = [f"{v} {k.replace('_', ' ')}" for k, v in report.items() if k not in counts and v]
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


def load_splits(
    cfg: PreferenceDataConfig, fits=None, unpaired: bool = False
) -> tuple[PreferenceData, PreferenceData | None]:
    """Train and held-out pairs per the config; held-out never overlaps train by prompt.

    `fits(rows, what) -> (kept, report)` (the token budget) is applied before sampling, so
    `max_train_pairs` counts pairs that are actually trained on. The held-out data's `prompts` are
    the prompts of the whole held-out split (before the budget and sample), for the upstream check.
    `unpaired=True`: rows are examples {prompt, completion, label} (see `load_preference_pairs`), and
    the `max_*_pairs` limits count examples.
    """
    unit = "examples" if unpaired else "pairs"
    data, train_rows, test = training_pool(cfg, unpaired)
    if not train_rows:
        raise AlignError(f"{cfg.train}: no training {unit} left after holding out the test split")
    validation = data.validation
    if fits is not None:
        train_rows, budget = fits(train_rows, unit)
        data.report.update(budget)
        for held, what in ((test, f"test_{unit}"), (validation, f"validation_{unit}")):
            if held is not None:
                held.rows, budget = fits(held.rows, what)
                held.report.update(budget)
    train_rows = sample(train_rows, cfg.max_train_pairs, cfg.seed)
    for held, limit in ((test, cfg.max_test_pairs), (validation, cfg.max_validation_pairs)):
        if held is not None:
            held.rows = sample(held.rows, limit, cfg.seed)
            held.report["used"] = len(held.rows)
    data.report[f"train_{unit}_used"] = len(train_rows)
    return PreferenceData(train_rows, data.report, validation=validation), test


def training_pool(
    cfg: PreferenceDataConfig, unpaired: bool = False
) -> tuple[PreferenceData, list[dict[str, Any]], PreferenceData | None]:
    """(everything read, the pairs training may draw from, the held-out pairs): the split alone,
    before the token budget and samples. Also used to recompute what an upstream run trained on.
    `unpaired=True`: examples instead of pairs (`load_preference_pairs`); the split is by prompt, so
    the two examples of a pair fall on the same side."""
    if not cfg.train:
        raise AlignError("'data.train' is required: a preference file, datasets directory or run directory")
    unit = "examples" if unpaired else "pairs"
    if unpaired and (cfg.weighting != "none" or cfg.ties != "drop"):
        raise AlignError(
            f"data.weighting={cfg.weighting} and data.ties={cfg.ties} apply to the pair losses of `align reward` "
            "and `align dpo`; `align kto` trains on unpaired examples: remove them"
        )
    data = load_preference_pairs(cfg.train, cfg.format, cfg.columns, unpaired=unpaired, keep_ties=cfg.ties != "drop")
    if cfg.weighting != "none":
        check_p_chosen(data.rows, cfg, data.report)
    if cfg.min_agreement is not None:
        data.rows = filter_agreement(data.rows, cfg.min_agreement, cfg.train, data.report)
    if cfg.min_votes is not None:
        data.rows = filter_votes(data.rows, cfg.min_votes, cfg.train, data.report)
    train_rows, test_rows = split_pairs(data.rows, cfg.test_fraction, cfg.seed)
    test = None
    if cfg.test:
        test = load_preference_pairs(cfg.test, cfg.format, cfg.columns, unpaired=unpaired)
        held_out = {json.dumps(r["prompt"], sort_keys=True) for r in test.rows}
        before = len(train_rows)
        train_rows = [r for r in train_rows if json.dumps(r["prompt"], sort_keys=True) not in held_out]
        data.report["train_prompts_in_test_dropped"] = before - len(train_rows)
    elif test_rows:
        test = PreferenceData(test_rows, {unit: len(test_rows), "held_out_from": cfg.train})
    if test is not None:
        test.prompts = [r["prompt"] for r in test.rows]
        _drop_held_out_ties(test)
    if cfg.validation_fraction > 0:
        # Its own salt, so the validation prompts are not the test split of some other seed.
        train_rows, validation_rows = split_pairs(train_rows, cfg.validation_fraction, f"{VALIDATION_SALT}:{cfg.seed}")
        if not validation_rows or not train_rows:
            raise AlignError(
                f"data.validation_fraction={cfg.validation_fraction} of {len(train_rows) + len(validation_rows)} training-side "
                f"{unit} leaves {len(validation_rows)} to validate on and {len(train_rows)} to train on; change data.validation_fraction"
            )
        data.report[f"validation_{unit}_set_aside"] = len(validation_rows)
        data.validation = PreferenceData(validation_rows, {unit: len(validation_rows), "carved_from": "training side"})
        _drop_held_out_ties(data.validation)
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
            raise AlignError(
                f"'data.min_agreement' must be a fraction k/n with k <= n (e.g. 2/3) or a number in [0, 1], got {value!r}"
            )
        return Fraction(int(match[1]), int(match[2])), Fraction(0)
    if not 0.0 <= value <= 1.0:
        raise AlignError(f"'data.min_agreement' must be in [0, 1] (or a fraction such as 2/3), got {value}")
    return Fraction(str(value)), DECIMAL_TOLERANCE


def vote_share(row: dict[str, Any]) -> tuple[Fraction, bool] | None:
    """(share of votes for the most common choice, exact?) of a pulled row: exact from `counts`
    ({a, b, tie}), else the rounded `agreement` float; None when the row has neither."""
    counts = row.get("counts")
    if (
        isinstance(counts, dict)
        and counts
        and all(isinstance(v, int) for v in counts.values())
        and sum(counts.values()) > 0
    ):
        return Fraction(max(counts.values()), sum(counts.values())), True
    if row.get("agreement") is None:
        return None
    return Fraction(str(row["agreement"])), False


def filter_agreement(
    rows: list[dict[str, Any]], threshold: float | str, path: str, report: dict
) -> list[dict[str, Any]]:
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


def vote_count(row: dict[str, Any]) -> int | None:
    """Submitted votes of a pulled row: `n_votes`, else the sum of `counts`; None when it has neither."""
    if isinstance(row.get("n_votes"), int):
        return row["n_votes"]
    counts = row.get("counts")
    if isinstance(counts, dict) and counts and all(isinstance(v, int) for v in counts.values()):
        return sum(counts.values())
    return None


def filter_votes(rows: list[dict[str, Any]], minimum: int, path: str, report: dict) -> list[dict[str, Any]]:
    """Keep pairs with at least `minimum` submitted votes. Data without vote counts is an error, as for
    `filter_agreement`: the filter the user asked for cannot apply."""
    if not any(vote_count(r) is not None for r in rows):
        raise AlignError(
            f"data.min_votes={minimum} but {path} has no 'n_votes' or 'counts' field "
            "(they come from `align annotate pull`); remove min_votes for this data"
        )
    kept = [r for r in rows if (vote_count(r) or 0) >= minimum]
    report["below_min_votes"] = len(rows) - len(kept)
    return kept


def check_p_chosen(rows: list[dict[str, Any]], cfg: PreferenceDataConfig, report: dict) -> None:
    """`data.weighting` reads `p_chosen` in [0, 1]: refuse data without it; a pair without one trains as
    certain (p = 1), counted as `pairs_without_p_chosen`."""
    clear = [r for r in rows if not r.get("tie")]
    if clear and not any(r.get("p_chosen") is not None for r in clear):
        raise AlignError(
            f"data.weighting={cfg.weighting} reads each pair's 'p_chosen', and {cfg.train} has none (it comes "
            "from `align annotate pull`); use data.weighting=none for this data"
        )
    for r in clear:
        p = r.get("p_chosen")
        if p is not None and not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            raise AlignError(f"{cfg.train}: p_chosen must be a probability in [0, 1], got {p!r}")
    missing = sum(r.get("p_chosen") is None for r in clear)
    report["pairs_without_p_chosen"] = missing
    if missing:
        log.warning("%d of %d pairs have no p_chosen; they train as certain (p_chosen = 1)", missing, len(clear))


def _drop_held_out_ties(held: PreferenceData) -> None:
    """Held-out accuracy and margin compare a chosen with a rejected reply; a tie has neither, so it is not scored."""
    ties = sum(bool(r.get("tie")) for r in held.rows)
    if ties:
        held.rows = [r for r in held.rows if not r.get("tie")]
        held.report["ties_not_scored"] = ties
