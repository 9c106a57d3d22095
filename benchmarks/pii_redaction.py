"""How much personal data each redaction backend finds: recall per entity type and false positives on
data/pii_eval.jsonl (85 synthetic customer-support messages, 22 of them without personal data), or on
another labelled set (`--data`, e.g. data/pii_dev.jsonl, the set the detectors were developed on).

    .venv/bin/python benchmarks/pii_redaction.py [--spacy-model en_core_web_lg ...] [--data FILE] [--out FILE]
    .venv/bin/python benchmarks/pii_redaction.py --table [FILE]    # the Markdown table of a results file

Backends measured: `rules` (align/privacy/redact.py), `presidio` with `spacy_model=blank` (Presidio's
pattern recognizers and the rules' detectors, no NER) and `presidio` with each `--spacy-model` that is
installed (NER adds PERSON and LOCATION); a model that is not installed is reported as skipped.
Scoring (align/privacy/pii_eval.py): a span is caught when every letter and digit of it is covered by
findings, whatever their type; a false positive is a finding that overlaps no labelled span.

Both sets were written by the people who wrote the detectors (the gaps closed on data/pii_dev.jsonl
were first seen on data/pii_eval.jsonl), so recall on them is an upper bound of what the detectors do
on text nobody tuned them for; the NER model was not tuned on either.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "pii_eval.jsonl"
OUT = REPO / "benchmarks" / "results" / "pii_redaction.json"
TYPES = ("PERSON", "LOCATION", "ADDRESS", "EMAIL", "PHONE", "SSN", "CARD", "IP", "IBAN", "DOB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--spacy-model",
        action="append",
        default=[],
        help="spaCy pipeline for a presidio run with NER (repeatable; default: en_core_web_lg)",
    )
    ap.add_argument("--data", default=str(DATA), help="labelled set (rows {id, text, entities})")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--note", default="", help="written into the results, e.g. where a spaCy model came from")
    ap.add_argument("--table", nargs="?", const=str(OUT), help="print the Markdown table of a results file and exit")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0

    sys.path.insert(0, str(REPO))
    from align.privacy import pii_eval, presidio_backend
    from align.privacy.backend import make_redactor

    data = Path(args.data).resolve()
    rows = pii_eval.load_labelled(data)
    runs = [("rules", "rules", None), ("presidio (patterns, no NER)", "presidio", presidio_backend.BLANK)]
    runs += [(f"presidio + {m}", "presidio", m) for m in (args.spacy_model or ["en_core_web_lg"])]
    results = {}
    for label, backend, model in runs:
        if backend == "presidio" and (why := presidio_backend.missing(model)):
            print(f"{label}: skipped ({why})", file=sys.stderr)
            results[label] = {"skipped": why}
            continue
        started = time.perf_counter()
        redactor = make_redactor(backend, spacy_model=model or presidio_backend.BLANK)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        scored = pii_eval.score(rows, redactor)
        seconds = time.perf_counter() - started
        results[label] = {
            "describe": redactor.describe(),
            **scored,
            "load_s": round(loaded, 2),
            "ms_per_text": round(1000 * seconds / len(rows), 2),
        }
        print(
            f"{label}: recall {scored['recall_all']}, false positives {sum(scored['false_positives'].values())}, "
            f"{results[label]['ms_per_text']} ms/text",
            file=sys.stderr,
        )
    out = {
        "question": "recall per PII type and false positives of align redact's backends on synthetic support text",
        "command": "benchmarks/pii_redaction.py "
        + " ".join(f"--spacy-model {m}" for m in args.spacy_model)
        + (
            ""
            if data == DATA
            else f" --data {data.relative_to(REPO)} --out {Path(args.out).resolve().relative_to(REPO)}"
        ),
        "note": args.note,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "data": {
            "path": str(data.relative_to(REPO)),
            "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
            "texts": len(rows),
            "pii_free_texts": sum(not r["entities"] for r in rows),
        },
        "backends": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    return 0


def table(out: dict) -> str:
    """Recall per type (caught/n) for each backend, then false positives, as a Markdown table."""
    measured = {k: v for k, v in out["backends"].items() if "skipped" not in v}
    types = [t for t in TYPES if any(t in v["recall"] for v in measured.values())]
    lines = ["| type (n) | " + " | ".join(measured) + " |", "|---" * (len(measured) + 1) + "|"]
    first = next(iter(measured.values()))
    for t in types:
        cells = []
        for v in measured.values():
            r = v["recall"][t]
            cells.append(
                f"{r['recall']:.2f} ({r['caught']}/{r['n']}" + (f", {r['partial']} partial)" if r["partial"] else ")")
            )
        lines.append(f"| {t} ({first['recall'][t]['n']}) | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{v['recall_all']:.2f}**" for v in measured.values()) + " |")
    lines.append(
        "| false positives (findings on no labelled span) | "
        + " | ".join(
            f"{sum(v['false_positives'].values())}"
            + (f" ({', '.join(f'{k} {n}' for k, n in v['false_positives'].items())})" if v["false_positives"] else "")
            for v in measured.values()
        )
        + " |"
    )
    lines.append(
        f"| PII-free texts with a finding (of {first['pii_free']['sentences']}) | "
        + " | ".join(str(v["pii_free"]["with_findings"]) for v in measured.values())
        + " |"
    )
    lines.append("| ms per text | " + " | ".join(str(v["ms_per_text"]) for v in measured.values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
