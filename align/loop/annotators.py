"""report.html's per-annotator panel: one table per round, from that round's label pull.

Every cell reads the pull manifest's `metrics.annotator_quality` (align/annotate/quality.py computes
it at pull time): votes, gold accuracy and the share of A choices with their 95% Wilson intervals,
Krippendorff's alpha of the team without the annotator (beside the whole team's), the median
seconds between answers, and the bars the annotator falls below. A pull made before the pull
computed these numbers shows a note instead of a table.
"""

from __future__ import annotations

import html
from typing import Any

from align.core import runs
from align.loop.rounds import RoundSummary


def annotators_section(rounds: list[RoundSummary]) -> str:
    """The panel's HTML ("" when no round has labels yet)."""
    parts = []
    for r in rounds:
        if r.labels is None or not r.labels.run:
            continue
        quality = _quality(r.labels.run)
        if quality is None:
            parts.append(f"<h3>Round {r.round}</h3><p class='muted'>This pull predates the per-annotator numbers.</p>")
            continue
        parts.append(f"<h3>Round {r.round}</h3>" + _table(quality))
    if not parts:
        return ""
    return (
        "<h2>Annotators per round</h2><p>Per annotator, from each round's label pull: gold accuracy (known-answer "
        "records mixed into the push), Krippendorff's α of the team without them (α rising without someone means "
        "they disagree with the others), the share of A among non-tie votes (0.5 is unbiased: A holds the better "
        "reply half the time), the median seconds between answers (breaks left out). 95% Wilson intervals. "
        "Flags name the configured bar an annotator falls below.</p>" + "".join(parts)
    )


def _quality(run: str) -> dict[str, Any] | None:
    try:
        manifest = runs.read_manifest(run)
    except (OSError, ValueError):
        return None
    return manifest.get("metrics", {}).get("annotator_quality")


def _table(quality: dict[str, Any]) -> str:
    rows = []
    for name, s in quality["annotators"].items():
        flagged = bool(s["flags"])
        flags = "<br>".join(_e(f) for f in s["flags"]) if flagged else "<span class='pass'>ok</span>"
        rows.append(
            f"<tr class='{'failed' if flagged else 'passed'}'><td>{_e(name)}</td><td class='num'>{s['votes']}</td>"
            f"<td class='num'>{_proportion(s['gold'])}</td><td class='num'>{_num(s['alpha_without'])}</td>"
            f"<td class='num'>{_proportion(s['position_bias'])}</td>"
            f"<td class='num'>{_num(s['median_seconds'], '.1f')}</td>"
            f"<td>{'<span class=fail>FLAGGED</span><br>' if flagged else ''}{flags}</td></tr>"
        )
    return (
        f"<p>Team α: {_num(quality['alpha_all'])}.</p><table><tr><th>annotator</th><th>votes</th>"
        "<th>gold accuracy</th><th>α without them</th><th>share of A</th><th>median s / record</th><th>flags</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _proportion(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "<span class='muted'>—</span>"
    return f"{p['rate']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}]<br><small>{p['k']}/{p['n']}</small>"


def _num(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
