"""Annotation progress and inter-annotator agreement: `align annotate status dataset=NAME`.

Prints records completed (per the dataset's task distribution) and pending; per annotator: submitted,
discarded and draft responses and how often their vote matched the record's majority; overall:
pairwise percent agreement and Krippendorff's alpha (nominal) over records with 2+ votes; then the
per-annotator quality table (align/annotate/quality.py): votes, gold accuracy, alpha without them,
share of A, median seconds per record, and flags against the `quality` bars. Reads the server and
the label journal (where push keeps each record's A/B order and gold answer); writes nothing.
Returns the same numbers as a dict.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.annotate.connection import ArgillaConfig, connect
from align.annotate.journal import Journal, journal_path
from align.annotate.local import cache_root
from align.annotate.quality import Judgement, QualityBars, annotator_report, format_table
from align.annotate.votes import aggregate, krippendorff_alpha, pairwise_agreement, vote_from_answers
from align.core.errors import AlignError

log = logging.getLogger(__name__)


@dataclass
class Config:
    dataset: str = ""
    """Argilla dataset to report on."""
    journal_dir: str = ""
    """Folder of the label journals, where push keeps the A/B order and gold answers (default as push and pull)."""
    quality: QualityBars = field(default_factory=QualityBars)
    """When an annotator is flagged (gold accuracy, position bias, alpha gain, speed)."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""


def run(cfg: Config) -> dict[str, Any]:
    if not cfg.dataset:
        raise AlignError("'dataset' is required: the Argilla dataset to report on")
    with connect(cfg.argilla) as conn:
        ds = conn.dataset(cfg.dataset, cfg.argilla.workspace)
        progress = conn.call("GET progress", ds.progress)
        annotators: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"submitted": 0, "discarded": 0, "draft": 0, "matched_majority": 0, "compared": 0}
        )
        journal_dir = Path(cfg.journal_dir).expanduser() if cfg.journal_dir else cache_root() / "annotate"
        journal = Journal(journal_path(journal_dir, conn.api_url, cfg.argilla.workspace, cfg.dataset, str(ds.id)))
        units, judgements, unknown_order = [], [], 0
        for record in conn.records(str(ds.id), responses=True):
            rid = record.get("external_id") or record["id"]
            shown_a = journal.shown_as_a(rid) or (record.get("metadata") or {}).get("shown_as_a")
            unknown_order += shown_a is None and bool(record.get("responses"))
            votes = []
            for resp in record.get("responses") or []:
                name = conn.username(resp["user_id"])
                annotators[name][resp["status"]] += 1
                values = resp.get("values") or {}
                label = (values.get("preference") or {}).get("value")
                if resp["status"] == "discarded":
                    judgements.append(Judgement(name, rid, None, None, journal.gold(rid), resp.get("updated_at")))
                if resp["status"] != "submitted" or label not in ("A", "B", "tie"):
                    continue
                vote = vote_from_answers(values, shown_a) if shown_a else None
                judgements.append(
                    Judgement(name, rid, label, vote and vote["choice"], journal.gold(rid), resp.get("updated_at"))
                )
                if vote is not None:
                    votes.append((name, vote))
            if len(votes) >= 2:
                majority = aggregate([v for _, v in votes])["majority"]
                for name, vote in votes:
                    annotators[name]["compared"] += 1
                    annotators[name]["matched_majority"] += vote["choice"] == majority
            if votes:
                units.append([v["choice"] for _, v in votes])
    for stats in annotators.values():
        compared = stats.pop("compared")
        matched = stats.pop("matched_majority")
        stats["agrees_with_majority"] = round(matched / compared, 4) if compared else None
    report = {
        "dataset": cfg.dataset,
        "api_url": conn.api_url,
        "annotators_per_record": ds.distribution.min_submitted,
        "records": progress.get("total", 0),
        "completed": progress.get("completed", 0),
        "pending": progress.get("pending", 0),
        "records_with_votes": len(units),
        "pairwise_agreement": pairwise_agreement(units),
        "krippendorff_alpha": krippendorff_alpha(units),
        "annotators": dict(sorted(annotators.items())),
        "gold_records": sum(p.get("gold") is not None for p in journal.pushed.values()),
        "records_order_unknown": unknown_order,
        "quality": annotator_report(judgements, cfg.quality),
    }
    if unknown_order:
        log.warning(
            "%d record(s) with responses have no A/B order in %s (pushed with another journal_dir or on "
            "another machine): their votes count for position bias and speed only",
            unknown_order,
            journal.path,
        )
    print(format_report(report))
    return report


def format_report(r: dict[str, Any]) -> str:
    done = r["completed"] / r["records"] if r["records"] else 0.0
    lines = [
        f"dataset '{r['dataset']}' at {r['api_url']}: {r['completed']}/{r['records']} records complete "
        f"({done:.0%}; {r['annotators_per_record']} submissions each), {r['pending']} pending",
        f"agreement over records with 2+ votes: pairwise {_fmt(r['pairwise_agreement'])}, "
        f"Krippendorff's alpha {_fmt(r['krippendorff_alpha'])}",
        f"{'annotator':<20} {'submitted':>9} {'discarded':>9} {'draft':>6} {'agrees w/ majority':>18}",
    ]
    for name, s in r["annotators"].items():
        lines.append(
            f"{name:<20} {s['submitted']:>9} {s['discarded']:>9} {s['draft']:>6} {_fmt(s['agrees_with_majority']):>18}"
        )
    if not r["annotators"]:
        lines.append("(no responses yet)")
        return "\n".join(lines)
    lines += ["", f"gold records: {r['gold_records']}", format_table(r["quality"])]
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"
