"""Recall and false positives of a redactor on labelled text (data/pii_eval.jsonl, benchmarks/pii_redaction.py).

A labelled span is *caught* when findings cover every letter and digit in it: what an annotator would
see of the value is nothing (a half-redacted address still leaks the rest). It is *partial* when they
cover some but not all. The finding's type does not matter for recall (a name redacted as
[LOCATION] is still hidden), so recall is per labelled type. A *false positive* is a finding that
overlaps no labelled span, counted per finding type; sentences with no labelled span count apart
(`pii_free`), as that is what redaction costs text that needed none.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from align.core.errors import AlignError


def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Rows `{id, text, entities: [{type, start, end, value}]}`, each span checked against its text."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        for e in row["entities"]:
            if row["text"][e["start"] : e["end"]] != e["value"]:
                raise AlignError(
                    f"{path}:{n}: span {e['start']}-{e['end']} is {row['text'][e['start'] : e['end']]!r}, "
                    f"not the labelled {e['value']!r}"
                )
        rows.append(row)
    return rows


def score(rows: list[dict[str, Any]], redactor) -> dict[str, Any]:
    """Per labelled type {n, caught, partial, recall}; false positives per finding type; PII-free sentences."""
    recall: dict[str, Counter] = defaultdict(Counter)
    false_positives: Counter = Counter()
    pii_free = Counter()
    for row in rows:
        text, spans = row["text"], row["entities"]
        findings = redactor.find(text)
        covered = set()
        for f in findings:
            covered.update(range(f.start, f.end))
        for e in spans:
            wanted = [i for i in range(e["start"], e["end"]) if text[i].isalnum()]
            hidden = sum(i in covered for i in wanted)
            counts = recall[e["type"]]
            counts["n"] += 1
            counts["caught"] += hidden == len(wanted)
            counts["partial"] += 0 < hidden < len(wanted)
        for f in findings:
            if not any(f.start < e["end"] and e["start"] < f.end for e in spans):
                false_positives[f.type] += 1
        if not spans:
            pii_free["sentences"] += 1
            pii_free["with_findings"] += bool(findings)
            pii_free["findings"] += len(findings)
    by_type = {
        t: {"n": c["n"], "caught": c["caught"], "partial": c["partial"], "recall": round(c["caught"] / c["n"], 3)}
        for t, c in sorted(recall.items())
    }
    n = sum(c["n"] for c in recall.values())
    caught = sum(c["caught"] for c in recall.values())
    return {
        "recall": by_type,
        "recall_all": round(caught / n, 3) if n else None,
        "false_positives": dict(sorted(false_positives.items())),
        "pii_free": {k: pii_free[k] for k in ("sentences", "with_findings", "findings")},
    }
