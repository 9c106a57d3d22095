"""Formatting shared by the results-table builders (scripts/results_tables.py, results_tables_labels.py)."""

from __future__ import annotations


def num(value, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def interval(mean, low, high, digits: int = 3, sign: bool = True) -> str:
    return f"{num(mean, digits, sign)} [{num(low, digits, sign)}, {num(high, digits, sign)}]"


def stat(entry: dict, digits: int = 3, sign: bool = False) -> str:
    """A `{mean, ci_low, ci_high}` record as 'mean [low, high]'."""
    return interval(entry["mean"], entry["ci_low"], entry["ci_high"], digits, sign)


def minutes(seconds) -> str:
    if seconds is None:
        return ""
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine(data: dict) -> str:
    """What the JSON recorded of the machine, in a few words ('' when nothing was recorded)."""
    m = data.get("machine") or data.get("host") or {}
    date = f"{data['date'][:10]}; " if isinstance(data.get("date"), str) else ""
    if isinstance(m, str):
        return date + m
    parts = [date.rstrip("; ")] if date else []
    cpus = m.get("cpus") or m.get("cores")
    if cpus:
        parts.append(f"{cpus} CPU cores")
    if m.get("processor"):
        parts.append(m["processor"])
    if m.get("platform"):
        parts.append(m["platform"])
    versions = data.get("versions") or {}
    if versions:
        parts.append(", ".join(f"{k} {v}" for k, v in versions.items() if k in ("torch", "transformers", "trl")))
    return "; ".join(parts)


def _ci(entry: dict | None, digits: int = 3, sign: bool = False) -> str:
    """A `{mean, ci_low|low, ci_high|high}` record as 'mean [low, high]' (label_models.json says low/high)."""
    if not entry:
        return ""
    low, high = entry.get("ci_low", entry.get("low")), entry.get("ci_high", entry.get("high"))
    if low is None or high is None:
        return num(entry["mean"], digits, sign) + " (one seed)"
    return interval(entry["mean"], low, high, digits, sign)
