"""Thumbs-up share per policy run: Wilson and Newcombe intervals checked against numbers worked by hand and
published examples, and `align feedback report` on an imported run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.cli import main
from align.feedback.drift import compare, newcombe_difference, rating_rates, wilson_interval

EXAMPLE = Path(__file__).parent / "data" / "feedback_example.jsonl"


def test_wilson_by_hand():
    # 6 of 12, z = 1.96: centre (0.5 + z^2/24) / (1 + z^2/12) = 0.5; half-width
    # z / (1 + z^2/12) * sqrt(0.25/12 + z^2/576) = 1.48468 * 0.165839 = 0.246218.
    low, high = wilson_interval(6, 12)
    assert low == pytest.approx(0.253782, abs=1e-6) and high == pytest.approx(0.746218, abs=1e-6)
    # 0 of 10: the interval starts at 0 and ends at 2 * (z^2/20) / (1 + z^2/10) = 0.277533 (never below 0).
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.277533, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_newcombe_matches_the_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:873, table II method 10: 56/70 - 48/80 -> [0.0524, 0.3339];
    # 5/56 - 0/29 -> [-0.0381, 0.1926] (here later minus earlier, so the signs flip).
    d, low, high = newcombe_difference(48, 80, 56, 70)
    assert (round(d, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    d, low, high = newcombe_difference(5, 56, 0, 29)
    assert (round(low, 4), round(high, 4)) == (-0.1926, 0.0381)


def test_rates_per_policy_run_in_deployment_order():
    rows = [
        {"policy_run": "r2", "rating": "up", "time": "2026-12-02"},
        {"policy_run": "r1", "rating": "down", "time": "2026-12-01"},
        {"policy_run": "r1", "rating": "up", "time": "2026-12-01"},
        {"policy_run": "r2", "rating": None},
    ]
    table = compare(rating_rates(rows))
    assert [(e["policy_run"], e["up"], e["down"]) for e in table] == [("r1", 1, 1), ("r2", 1, 0)]
    assert table[1]["change"]["diff"] == 0.5 and table[1]["change"]["significant"] is False


def test_report_command_on_an_imported_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGN_FEEDBACK_SALT", "s")
    assert main(["feedback", "import", str(EXAMPLE), f"runs_dir={tmp_path}", "name=fb"]) == 0
    capsys.readouterr()
    out_file = tmp_path / "drift.json"
    assert main(["feedback", "report", str(tmp_path / "fb"), f"output={out_file}"]) == 0
    printed = capsys.readouterr().out
    assert "dpo-round1" in printed and "dpo-round2" in printed
    table = json.loads(out_file.read_text())["policy_runs"]
    # Round 1: 6 up of 12; round 2: 9 up of 13 (the unrated row is left out).
    assert [(e["up"], e["n"]) for e in table] == [(6, 12), (9, 13)]
    assert table[0]["ci_low"] == pytest.approx(0.2538, abs=1e-4)
