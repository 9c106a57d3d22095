"""Drift between rounds as users saw it: the thumbs-up share of each policy run, with Wilson intervals.

`rating_rates(rows)` counts up and down per policy run (unrated rows are left out: no rating, no
evidence) and gives the share of thumbs up with its Wilson score interval (Wilson 1927), which, unlike
the normal approximation, stays within [0, 1] and is sensible for a handful of ratings or a share near 0
or 1. `compare` adds, for each run after the first, the difference from the run before it with Newcombe's
interval for a difference of two independent proportions (Newcombe 1998, method 10: built from the two
Wilson intervals), so a team sees whether a promoted round did better with real users. Runs are in the
order first rated (the log's time order), which is the order they were deployed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist
from typing import Any


def z_value(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion successes/n; (0, 1) with n = 0 (nothing known)."""
    if n == 0:
        return 0.0, 1.0
    z = z_value(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, level: float = 0.95) -> tuple[float, float, float]:
    """(p2 - p1, low, high): Newcombe's hybrid score interval for the difference of two independent proportions."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, level)
    l2, u2 = wilson_interval(s2, n2, level)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def rating_rates(rows: Iterable[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """[{policy_run, up, down, n, up_share, ci_low, ci_high, first_time}] in the order runs were first rated."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("rating") not in ("up", "down"):
            continue
        run = row.get("policy_run") or "unknown"
        entry = table.setdefault(run, {"policy_run": run, "up": 0, "down": 0, "first_time": row.get("time")})
        entry[row["rating"]] += 1
        if row.get("time") and (entry["first_time"] is None or row["time"] < entry["first_time"]):
            entry["first_time"] = row["time"]
    out = []
    for entry in table.values():
        n = entry["up"] + entry["down"]
        low, high = wilson_interval(entry["up"], n, level)
        out.append(
            {**entry, "n": n, "up_share": round(entry["up"] / n, 4), "ci_low": round(low, 4), "ci_high": round(high, 4)}
        )
    return sorted(out, key=lambda e: (e["first_time"] is None, e["first_time"] or ""))


def compare(rates: list[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """`rates` with, from the second run on, `change` = up share minus the previous run's and its interval."""
    out = []
    for i, entry in enumerate(rates):
        entry = dict(entry)
        if i:
            prev = rates[i - 1]
            d, low, high = newcombe_difference(prev["up"], prev["n"], entry["up"], entry["n"], level)
            entry["change"] = {
                "vs": prev["policy_run"],
                "diff": round(d, 4),
                "ci_low": round(low, 4),
                "ci_high": round(high, 4),
                "significant": low > 0 or high < 0,
            }
        out.append(entry)
    return out


def format_table(rates: list[dict[str, Any]], level: float = 0.95) -> str:
    pct = f"{level:.0%}"
    lines = [f"{'policy run':<40} {'up':>5} {'down':>5}  thumbs-up share [{pct} Wilson]   change vs previous [{pct}]"]
    for e in rates:
        change = ""
        if "change" in e:
            c = e["change"]
            change = f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]{' *' if c['significant'] else ''}"
        lines.append(
            f"{e['policy_run'][:40]:<40} {e['up']:>5} {e['down']:>5}  {e['up_share']:.3f} "
            f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]        {change}".rstrip()
        )
    return "\n".join(lines)
