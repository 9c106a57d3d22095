"""The file generation runs hand over: `generations.jsonl`, written by `align generate` (and, with
scores added, by `align score`), read by `align score` and `align pairs`.

It lives here, below the stages, so stages share it without importing one another.
"""

from __future__ import annotations

from align.core import runs
from align.core.errors import AlignError
from align.data.records import read_records

GENERATIONS = "generations.jsonl"


def read_generations(path: str) -> tuple[dict, list[dict]]:
    """The manifest and rows of a generation (or score) run, checked."""
    manifest = runs.read_manifest(path)
    file = runs.output_path(path, manifest, "generations")
    rows = []
    # read_records turns a damaged file (not UTF-8, NUL bytes, bad JSON) into one line naming file:line.
    for where, row in read_records(file):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), list)
            or not isinstance(row.get("responses"), list)
        ):
            raise AlignError(f"{where}: a generation row needs 'prompt' (messages) and 'responses' (list)")
        rows.append(row)
    if not rows:
        raise AlignError(f"{file}: the generation run has no rows")
    return manifest, rows
