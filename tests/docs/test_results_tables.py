"""The results pages' tables are what `python scripts/results_tables.py` makes from benchmarks/results/."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def results_tables():
    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "scripts" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_pages_are_up_to_date():
    """Regenerating every marked table changes nothing: no figure on a page drifts from its JSON."""
    module = results_tables()
    stale = [p.name for p in sorted(module.PAGES.glob("*.md")) if module.regenerate(p.read_text()) != p.read_text()]
    assert not stale, f"run `python scripts/results_tables.py`: out of date: {stale}"


def test_every_result_file_is_on_a_page():
    module = results_tables()
    shown = set()
    for page in module.PAGES.glob("*.md"):
        for match in module.BLOCK.finditer(page.read_text()):
            shown.update(name.partition("#")[0] for name in match.group("files").split())
    assert shown, "no table markers found"
    missing = sorted(p.name for p in module.RESULTS.glob("*.json") if p.name not in shown)
    assert not missing, (
        f"result files no results page shows: {missing}; add a page under docs/results/ with a "
        "`<!-- table: NAME.json -->` ... `<!-- /table -->` block (and a builder in scripts/results_tables.py)"
    )


def test_a_table_follows_its_json(tmp_path, monkeypatch):
    """A changed figure in the JSON changes the page, in the cell worked out by hand."""
    module = results_tables()
    data = {
        "command": "python benchmarks/batch_padding.py",
        "results": [
            {
                "pairs": 128,
                "batch": 8,
                "max_length": 192,
                "long_prompts": "keep_last_turns",
                "padding_random": 0.357,
                "padding_grouped": 0.207,
                "positions_random_over_grouped": 1.233,
            }
        ],
    }
    (tmp_path / "batch_padding.json").write_text(json.dumps(data))
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    page = "x\n<!-- table: batch_padding.json -->\nold\n<!-- /table -->\ny\n"
    text = module.regenerate(page)
    # 0.357 -> 36%, 0.207 -> 21%, 1.233 -> 1.23x; the text around the markers is kept.
    assert "| 128 | 8 | 192 | `keep_last_turns` | 36% | 21% | 1.23x |" in text
    assert text.startswith("x\n<!-- table: batch_padding.json -->\n") and text.endswith("<!-- /table -->\ny\n")
    assert "old" not in text
    data["results"][0]["padding_grouped"] = 0.1
    (tmp_path / "batch_padding.json").write_text(json.dumps(data))
    assert "| 36% | 10% |" in module.regenerate(text)


def test_a_marker_naming_a_missing_file_fails(tmp_path, monkeypatch):
    module = results_tables()
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="does not exist"):
        module.regenerate("<!-- table: nothing.json -->\n<!-- /table -->\n")


def test_a_transcribed_table_inside_a_list_item(tmp_path, monkeypatch):
    """FILE.json#TABLE picks one table of a transcribed file; an indented marker indents every generated line."""
    module = results_tables()
    data = {
        "benchmark": "transcribed",
        "source": "transcribed from the printed output of the runs of 2026-12-01; figures not re-measured",
        "tables": {"a": {"header": ["policy", "refused"], "rows": [["base", "0.183 [0.100, 0.283]"]]}, "b": {}},
    }
    (tmp_path / "s_transcribed.json").write_text(json.dumps(data))
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    page = "1. run\n\n   <!-- table: s_transcribed.json#a -->\n   <!-- /table -->\n"
    text = module.regenerate(page)
    assert "\n   | policy | refused |\n   |---|---|\n   | base | 0.183 [0.100, 0.283] |\n" in text
    assert (
        "   <small>transcribed from the printed output of the runs of 2026-12-01; figures not re-measured</small>"
        in text
    )
    assert text.endswith("\n   <!-- /table -->\n") and module.regenerate(text) == text
    with pytest.raises(SystemExit, match="no table 'c'"):
        module.regenerate("<!-- table: s_transcribed.json#c -->\n<!-- /table -->\n")
