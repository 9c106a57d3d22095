"""Annotation progress and inter-annotator agreement: `align annotate status dataset=NAME`.

Prints records completed (per the dataset's task distribution) and pending; per annotator: submitted,
discarded and draft responses and how often their vote matched the record's majority; overall:
pairwise percent agreement and Krippendorff's alpha (nominal) over records with 2+ votes. Reads the
server only; writes nothing. Returns the same numbers as a dict.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from align.annotate.connection import ArgillaConfig, connect
from align.annotate.votes import aggregate, krippendorff_alpha, pairwise_agreement, vote_from_answers
from align.core.errors import AlignError

log = logging.getLogger(__name__)


@dataclass
class Config:
    dataset: str = ""
    """Argilla dataset to report on."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""


def run(cfg: Config) -> dict[str, Any]:
    if not cfg.dataset:
        raise AlignError("'dataset' is required: the Argilla dataset to report on")
    with connect(cfg.argilla) as conn:
        ds = conn.dataset(cfg.dataset, cfg.argilla.workspace)
        progress = conn.call("GET progress", ds.progress)
        annotators: dict[str, dict[str, Any]] = defaultdict(lambda: {"submitted": 0, "discarded": 0, "draft": 0,
                                                                      "matched_majority": 0, "compared": 0})
        units = []
        for record in conn.records(str(ds.id), responses=True):
            shown_a = (record.get("metadata") or {}).get("shown_as_a", "a")
            votes = []
            for resp in record.get("responses") or []:
                name = conn.username(resp["user_id"])
                annotators[name][resp["status"]] += 1
                if resp["status"] == "submitted":
                    vote = vote_from_answers(resp.get("values") or {}, shown_a)
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
    }
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
        lines.append(f"{name:<20} {s['submitted']:>9} {s['discarded']:>9} {s['draft']:>6} "
                     f"{_fmt(s['agrees_with_majority']):>18}")
    if not r["annotators"]:
        lines.append("(no responses yet)")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"
