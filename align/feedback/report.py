"""Drift between rounds: `align feedback report FEEDBACK_RUN [FEEDBACK_RUN ...]`.

Prints the thumbs-up share of each policy run in the feedback (with Wilson intervals) and, for each run
after the first, its change from the run before with Newcombe's interval (align/feedback/drift.py); `*`
marks a change whose interval excludes 0. `output=FILE` also writes the table as JSON. Reads only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from align.core import runs
from align.core.errors import AlignError
from align.feedback.drift import compare, format_table, rating_rates


@dataclass
class Config:
    """Config of `align feedback report`."""

    feedback: list[str] = field(default_factory=list)
    """Feedback runs (`align feedback import`)."""
    level: float = 0.95
    """Confidence level of the intervals."""
    output: str | None = None
    """Also write the table as JSON to this file."""

    def __post_init__(self):
        if isinstance(self.feedback, str):
            self.feedback = [self.feedback]
        if not 0 < self.level < 1:
            raise AlignError(f"'level' must be in (0, 1), got {self.level}")


def run(cfg: Config) -> dict:
    if not cfg.feedback:
        raise AlignError("give the feedback run: `align feedback report FEEDBACK_RUN`")
    rows = [row for path in cfg.feedback for row in feedback_rows(path)]
    table = compare(rating_rates(rows, cfg.level), cfg.level)
    if not table:
        raise AlignError(f"{', '.join(cfg.feedback)}: no rated rows (up or down) to compare")
    print(format_table(table, cfg.level))
    if cfg.output:
        Path(cfg.output).write_text(json.dumps({"level": cfg.level, "policy_runs": table}, indent=2) + "\n")
    return {}


def feedback_rows(path: str | Path) -> list[dict]:
    """The rows of a feedback run (its `feedback` output)."""
    manifest = runs.read_manifest(path)
    if manifest.get("stage") != "feedback import":
        raise AlignError(f"{path} is a '{manifest.get('stage')}' run, not a 'feedback import' run")
    with open(runs.output_path(path, manifest, "feedback"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
