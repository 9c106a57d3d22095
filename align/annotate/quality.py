"""Per-annotator quality: gold accuracy, agreement with the others, position bias, speed, and flags.

Pure functions over `Judgement`s (one submitted response each), shared by `align annotate status`
(read from the server) and `align annotate pull` (read from the journal; the numbers go into the pull
manifest's `metrics.annotator_quality`, which the loop's report.html shows per round). Per annotator:

- `votes`: submitted responses with a preference (discards are not votes);
- `gold`: votes on gold records (known answer, pushed with `gold.path`), how many matched, the accuracy
  and its 95% Wilson score interval (`wilson_interval`);
- `alpha_without`: Krippendorff's alpha (nominal, over records with 2+ votes, gold included) of
  everyone *but* this annotator, next to `alpha_all` for the whole team: when the team agrees clearly
  more without someone, that someone disagrees with the others. None where undefined;
- `position_bias`: the share of "A" among this annotator's non-tie votes, with its Wilson interval.
  Push shows candidate b as A on a random half of the records, so whichever candidate is better sits
  at A half the time: a careful annotator is near 0.5, one who clicks A regardless near 1;
- `median_seconds`: the median gap between this annotator's consecutive responses (by the server's
  `updated_at`). Argilla does not record when a record was shown, so this is the time from one answer
  to the next; gaps longer than `break_seconds` are breaks, not work on a record, and are left out;
- `flags`: each configured bar (`QualityBars`) the annotator falls below, judged only once there are
  `min_evidence` votes behind the number (fewer: no flag, the interval says how little is known).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from align.annotate.votes import krippendorff_alpha, vote_from_answers
from align.core.errors import AlignError

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass
class QualityBars:
    """When an annotator is flagged (`quality:` in the status and pull configs); null turns a bar off."""

    min_gold_accuracy: float | None = 0.7
    """Flag below this share of gold records answered as expected."""
    max_position_bias: float | None = 0.8
    """Flag when the share of A (or of B) among non-tie votes exceeds this (0.5 is unbiased)."""
    max_alpha_gain: float | None = 0.2
    """Flag when the team's Krippendorff's alpha without the annotator exceeds the whole team's by more than this."""
    min_median_seconds: float | None = None
    """Flag a median time per record below this many seconds (too fast to have read both replies)."""
    min_evidence: int = 5
    """Votes (gold votes for gold accuracy, non-tie votes for position bias) needed before a bar is judged."""
    break_seconds: float = 600.0
    """A gap between two answers longer than this is a break, not time spent on a record."""

    def __post_init__(self):
        for key in ("min_gold_accuracy", "max_position_bias"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 1:
                raise AlignError(f"'quality.{key}' must be in [0, 1] or null, got {value}")
        if self.max_position_bias is not None and self.max_position_bias < 0.5:
            raise AlignError(
                f"'quality.max_position_bias' must be >= 0.5 (0.5 is no bias), got {self.max_position_bias}"
            )
        if self.min_evidence < 1:
            raise AlignError(f"'quality.min_evidence' must be >= 1, got {self.min_evidence}")
        if self.break_seconds <= 0:
            raise AlignError(f"'quality.break_seconds' must be > 0, got {self.break_seconds}")


@dataclass
class Judgement:
    """One submitted response, as the quality numbers need it."""

    annotator: str
    record_id: str
    shown: str | None
    """The label clicked: A, B or tie (positions as displayed); None for a discard (it counts for time only)."""
    choice: str | None
    """The candidate chosen (a, b or tie), the display swap undone; None when the record's A/B order is unknown."""
    gold: str | None = None
    """The expected candidate (a or b) when the record is gold."""
    at: str | None = None
    """When the response was last updated (ISO 8601, the server's `updated_at`)."""


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None for n = 0.

    center = (p + z²/2n) / (1 + z²/n), half-width = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n). Unlike the
    normal interval it stays inside [0, 1] and is not zero-width at 0/n or n/n.
    """
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def annotator_report(judgements: list[Judgement], bars: QualityBars) -> dict[str, Any]:
    """{alpha_all, bars, annotators: {name: numbers and flags}} for every annotator with a judgement."""
    by_record: dict[str, list[Judgement]] = defaultdict(list)
    by_annotator: dict[str, list[Judgement]] = defaultdict(list)
    for j in judgements:
        by_annotator[j.annotator].append(j)
        if j.shown is not None and j.choice is not None:
            by_record[j.record_id].append(j)
    alpha_all = krippendorff_alpha([[j.choice for j in js] for js in by_record.values()])
    out = {}
    for name, answered in sorted(by_annotator.items()):
        mine = [j for j in answered if j.shown is not None]
        gold = [j for j in mine if j.gold is not None and j.choice is not None]
        correct = sum(j.choice == j.gold for j in gold)
        non_tie = [j for j in mine if j.shown in ("A", "B")]
        shown_a = sum(j.shown == "A" for j in non_tie)
        others = [[j.choice for j in js if j.annotator != name] for js in by_record.values()]
        stats = {
            "votes": len(mine),
            "gold": _proportion(correct, len(gold)),
            "alpha_without": krippendorff_alpha(others),
            "position_bias": _proportion(shown_a, len(non_tie)),
            "median_seconds": median_gap([j.at for j in answered], bars.break_seconds),
        }
        stats["flags"] = flags(stats, alpha_all, bars)
        out[name] = stats
    return {"alpha_all": alpha_all, "bars": _bars_dict(bars), "annotators": out}


def journal_judgements(journal) -> list[Judgement]:
    """The current submitted and discarded responses of a label journal (align/annotate/journal.py)."""
    out = []
    for (rid, _user), resp in journal.active().items():
        shown = None
        choice = None
        if resp["status"] == "submitted":
            shown = (resp["values"].get("preference") or {}).get("value")
            if shown not in ("A", "B", "tie"):
                continue
            order = journal.shown_as_a(rid)
            choice = vote_from_answers(resp["values"], order)["choice"] if order else None
        out.append(Judgement(resp["username"], rid, shown, choice, journal.gold(rid), resp.get("updated_at")))
    return out


def flags(stats: dict[str, Any], alpha_all: float | None, bars: QualityBars) -> list[str]:
    """The bars an annotator falls below, each as a short reason."""
    out = []
    gold, bias = stats["gold"], stats["position_bias"]
    if bars.min_gold_accuracy is not None and gold["n"] >= bars.min_evidence and gold["rate"] < bars.min_gold_accuracy:
        out.append(f"gold accuracy {gold['rate']:.2f} < {bars.min_gold_accuracy} ({gold['k']}/{gold['n']})")
    if bars.max_position_bias is not None and bias["n"] >= bars.min_evidence:
        top = max(bias["rate"], 1 - bias["rate"])
        if top > bars.max_position_bias:
            side = "A" if bias["rate"] >= 0.5 else "B"
            out.append(f"chose {side} in {top:.2f} of non-tie votes > {bars.max_position_bias}")
    without = stats["alpha_without"]
    if (
        bars.max_alpha_gain is not None
        and without is not None
        and alpha_all is not None
        and without - alpha_all > bars.max_alpha_gain
    ):
        out.append(f"team alpha {alpha_all:.2f} -> {without:.2f} without them (> +{bars.max_alpha_gain})")
    seconds = stats["median_seconds"]
    if (
        bars.min_median_seconds is not None
        and seconds is not None
        and stats["votes"] >= bars.min_evidence
        and seconds < bars.min_median_seconds
    ):
        out.append(f"median {seconds:.1f} s per record < {bars.min_median_seconds} s")
    return out


def median_gap(times: list[str | None], break_seconds: float) -> float | None:
    """Median seconds between consecutive times (ISO 8601), gaps over `break_seconds` left out; None
    with fewer than two times."""
    stamps = sorted(_parse(t) for t in times if t)
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
    gaps = [g for g in gaps if g <= break_seconds]
    return round(statistics.median(gaps), 3) if gaps else None


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _proportion(k: int, n: int) -> dict[str, Any]:
    ci = wilson_interval(k, n)
    return {
        "k": k,
        "n": n,
        "rate": round(k / n, 4) if n else None,
        "ci_low": round(ci[0], 4) if ci else None,
        "ci_high": round(ci[1], 4) if ci else None,
    }


def _bars_dict(bars: QualityBars) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(bars)


# -- text ------------------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """The per-annotator table `align annotate status` prints."""
    lines = [
        f"per annotator (team Krippendorff's alpha {_f(report['alpha_all'])}; 95% Wilson intervals):",
        f"{'annotator':<18} {'votes':>5}  {'gold accuracy':<22} {'alpha w/o':>9}  {'share of A':<22} "
        f"{'median s':>8}  flags",
    ]
    for name, s in report["annotators"].items():
        lines.append(
            f"{name:<18} {s['votes']:>5}  {_prop(s['gold']):<22} {_f(s['alpha_without']):>9}  "
            f"{_prop(s['position_bias']):<22} {_f(s['median_seconds'], '.1f'):>8}  "
            + ("FLAGGED: " + "; ".join(s["flags"]) if s["flags"] else "ok")
        )
    return "\n".join(lines)


def _prop(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "n/a"
    return f"{p['rate']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}] n={p['n']}"


def _f(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)
