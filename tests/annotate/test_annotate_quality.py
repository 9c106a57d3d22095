"""Per-annotator quality numbers (align/annotate/quality.py): hand-worked Wilson intervals, Krippendorff's
alpha without each annotator, position bias, seconds per record and the flags. No server."""

from __future__ import annotations

import pytest

from align.annotate.journal import Journal
from align.annotate.quality import (
    Judgement,
    QualityBars,
    annotator_report,
    journal_judgements,
    median_gap,
    wilson_interval,
)
from align.core.errors import AlignError


def test_wilson_interval_hand_worked():
    # 8 of 10, z = 1.96: center (0.8 + 0.19208) / 1.38416 = 0.71674,
    # half 1.96 * sqrt(0.016 + 0.009604) / 1.38416 = 0.22658 -> [0.4902, 0.9433]
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # 0 of 5: center = half = (3.8415 / 10) / 1.76832 = 0.21724 -> [0, 0.4345]: not a zero-width interval
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and high == pytest.approx(0.4345, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_alpha_without_each_annotator_hand_worked():
    # x and y agree on every record; z disagrees on two of three.
    votes = {
        "r1": {"x": "a", "y": "a", "z": "b"},
        "r2": {"x": "b", "y": "b", "z": "a"},
        "r3": {"x": "a", "y": "a", "z": "a"},
    }
    js = [Judgement(who, rid, "A" if c == "a" else "B", c) for rid, v in votes.items() for who, c in v.items()]
    report = annotator_report(js, QualityBars())
    # all three: o_aa = 1 + 3, o_bb = 1, o_ab = o_ba = 2; n_a = 6, n_b = 3, n = 9
    # D_o = 4/9, D_e = 2 * 6 * 3 / (9 * 8) = 0.5 -> alpha = 1 - 8/9 = 0.1111
    assert report["alpha_all"] == pytest.approx(0.1111, abs=1e-4)
    a = report["annotators"]
    assert a["z"]["alpha_without"] == 1.0  # x and y alone agree perfectly
    # without x: units (a,b), (b,a), (a,a): o_ab = o_ba = 2, o_aa = 2; n_a = 4, n_b = 2, n = 6
    # D_o = 4/6, D_e = 2 * 4 * 2 / 30 -> alpha = 1 - (4/6) / (16/30) = -0.25
    assert a["x"]["alpha_without"] == pytest.approx(-0.25) and a["y"]["alpha_without"] == pytest.approx(-0.25)
    assert any("without them" in f for f in a["z"]["flags"])
    assert not a["x"]["flags"] and not a["y"]["flags"]


def test_gold_and_position_bias_flags_need_evidence():
    careful, careless = [], []
    for i in range(10):
        shown_a_is = "a" if i % 2 else "b"  # half the records show candidate b as A
        expected = "a"
        careful.append(Judgement("careful", f"r{i}", "A" if shown_a_is == expected else "B", expected, gold=expected))
        # clicks A on 9 of 10 records whatever is shown there
        label = "A" if i < 9 else "B"
        choice = shown_a_is if label == "A" else ("b" if shown_a_is == "a" else "a")
        careless.append(Judgement("careless", f"r{i}", label, choice, gold=expected))
    report = annotator_report(careful + careless, QualityBars(max_alpha_gain=None))
    c, s = report["annotators"]["careful"], report["annotators"]["careless"]
    assert c["gold"]["k"] == 10 and c["gold"]["rate"] == 1.0 and c["position_bias"]["rate"] == 0.5
    assert c["flags"] == []
    # careless is right only where A held the expected candidate and A was clicked: i = 1, 3, 5, 7
    # (at i = 9 it clicked B, which held b) -> 4 of 10
    assert (s["gold"]["k"], s["gold"]["n"]) == (4, 10)
    assert s["position_bias"]["k"] == 9 and s["position_bias"]["rate"] == 0.9
    assert len(s["flags"]) == 2 and "gold accuracy 0.40 < 0.7" in s["flags"][0] and "chose A in 0.90" in s["flags"][1]
    # Four gold votes are not enough to judge with min_evidence 5: numbers, no flag
    few = annotator_report(careless[:4], QualityBars())
    assert few["annotators"]["careless"]["gold"]["n"] == 4 and few["annotators"]["careless"]["flags"] == []


def test_median_seconds_leaves_out_breaks():
    times = ["2026-12-06T10:00:00", "2026-12-06T10:00:30", "2026-12-06T10:01:30", "2026-12-06T10:30:00"]
    assert median_gap(times, break_seconds=600) == 45.0  # gaps 30, 60; the 28.5 min gap is a break
    assert median_gap(times[:1], 600) is None
    js = [Judgement("x", f"r{i}", "A", "a", at=t) for i, t in enumerate(times)]
    report = annotator_report(js, QualityBars(min_median_seconds=60, min_evidence=3))
    assert report["annotators"]["x"]["median_seconds"] == 45.0
    assert any("median 45.0 s" in f for f in report["annotators"]["x"]["flags"])


def test_bars_are_checked():
    with pytest.raises(AlignError, match="max_position_bias"):
        QualityBars(max_position_bias=0.3)
    with pytest.raises(AlignError, match="min_gold_accuracy"):
        QualityBars(min_gold_accuracy=1.5)


def test_judgements_from_a_journal_use_the_journaled_order_and_gold(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append(
        [
            {"kind": "push", "record_id": "g", "shown_as_a": "b", "gold": "a"},
            {"kind": "record", "record_id": "g", "argilla_id": "x", "fields": {}, "metadata": {}},
            {"kind": "record", "record_id": "old", "argilla_id": "y", "fields": {}, "metadata": {"shown_as_a": "a"}},
            {
                "kind": "response",
                "record_id": "g",
                "user_id": "u1",
                "username": "ann",
                "status": "submitted",
                "values": {"preference": {"value": "B"}},
                "updated_at": "2026-12-06T10:00:00",
            },
            {
                "kind": "response",
                "record_id": "old",
                "user_id": "u1",
                "username": "ann",
                "status": "submitted",
                "values": {"preference": {"value": "A"}},
                "updated_at": "2026-12-06T10:00:20",
            },
            {
                "kind": "response",
                "record_id": "old",
                "user_id": "u2",
                "username": "bo",
                "status": "discarded",
                "values": {},
                "updated_at": "2026-12-06T10:00:20",
            },
        ]
    )
    js = {(j.annotator, j.record_id): j for j in journal_judgements(Journal(journal.path))}
    assert js[("ann", "g")].choice == "a" and js[("ann", "g")].gold == "a"  # B shown, b shown as A -> candidate a
    assert js[("ann", "old")].choice == "a" and js[("ann", "old")].gold is None  # order from old metadata
    assert js[("bo", "old")].shown is None  # a discard: time only
    report = annotator_report(list(js.values()), QualityBars())
    assert report["annotators"]["ann"]["votes"] == 2 and report["annotators"]["bo"]["votes"] == 0
    assert report["annotators"]["ann"]["median_seconds"] == 20.0
