"""Every repository path the README and the docs name in code spans exists.

A page that names `align/loop/mix.py` or `configs/dpo/rpo.yaml` sends the reader there; when a
file moves, this test names the page and line that still point at the old place. Placeholders
(`runs/<policy-run>`, `runs/sft-…`, globs) and run directories are not repository paths and are
skipped. A recipe README may name its own files relative to its folder (`loop.yaml`).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(
    r"`((?:align|configs|recipes|data|scripts|benchmarks|tests|annotation|docs)/[\w./\-]*)(?:::[\w\[\]-]+)?`"
)


def named_paths() -> list[tuple[str, str, Path]]:
    found = []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted(ROOT.glob("recipes/*/README.md"))]
    for page in pages:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for match in PATH.finditer(line):
                path = match.group(1).rstrip(".")
                if not any(c in path for c in "<>…*"):
                    found.append((f"{page.relative_to(ROOT)}:{number}", path, page.parent))
    return found


def test_docs_name_paths():
    assert len(named_paths()) > 50  # the pattern finds them: a broken one would pass the test below


def test_every_named_path_exists():
    missing = [
        f"{where}: {path}"
        for where, path, folder in named_paths()
        if not (ROOT / path).exists() and not (folder / path).exists()
    ]
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)
