"""One-coin Dawid-Skene (align/annotate/reliability.py): E- and M-step worked by hand on a 3-annotator
toy, gold as pseudo-votes, recovery of known reliabilities, and the labels it writes on pulled rows."""

from __future__ import annotations

import random

import pytest

from align.annotate.reliability import dawid_skene, e_step, label_rows, m_step

TOY = [
    [("x", "a"), ("y", "a"), ("z", "b")],  # 2-1 for a
    [("x", "a"), ("y", "b"), ("z", "b")],
]  # 1-2 against the most reliable annotator


def test_e_step_by_hand():
    # pair 1: a: .9*.8*.4 = .288, b: .1*.2*.6 = .012 -> .288/.300 = .96
    # pair 2: a: .9*.2*.4 = .072, b: .1*.8*.6 = .048 -> .072/.120 = .60 (x outweighs y and z together)
    q = e_step(TOY, {"x": 0.9, "y": 0.8, "z": 0.6}, prior_a=0.5)
    assert q == pytest.approx([0.96, 0.60])
    # A prior of a = 0.8 multiplies the odds by 4: pair 2 odds .072/.048 = 1.5 -> 6, p = 6/7.
    assert e_step(TOY, {"x": 0.9, "y": 0.8, "z": 0.6}, prior_a=0.8)[1] == pytest.approx(6 / 7)
    assert e_step([[("x", "tie")]], {"x": 0.9}, 0.5) == [None]  # no a/b vote: no posterior


def test_m_step_by_hand_with_prior_and_gold():
    q = [0.96, 0.60]
    # x voted a, a: expected right 0.96 + 0.60 = 1.56; prior 2 votes at 0.7 adds 1.4 of 2 -> 2.96 / 4
    # y voted a, b: 0.96 + 0.40 = 1.36 -> 2.76 / 4;  z voted b, b: 0.04 + 0.40 = 0.44 -> 1.84 / 4
    reliability, prior_a = m_step(TOY, q, {}, prior_reliability=0.7, prior_strength=2.0)
    assert reliability == pytest.approx({"x": 0.74, "y": 0.69, "z": 0.46})
    assert prior_a == pytest.approx((0.96 + 0.60 + 1) / 4)  # Laplace-smoothed share of a
    # z right on 9 of 10 gold pairs: (0.44 + 9 + 1.4) / (2 + 10 + 2)
    reliability, _ = m_step(TOY, q, {"z": (9, 10)}, prior_reliability=0.7, prior_strength=2.0)
    assert reliability["z"] == pytest.approx(10.84 / 14)
    # Gold alone (no votes in the data) still gives that annotator an estimate.
    assert m_step(TOY, q, {"w": (3, 4)}, 0.7, 2.0)[0]["w"] == pytest.approx((3 + 1.4) / 6)


def simulate(reliabilities: dict[str, float], pairs: int, seed: int):
    rng = random.Random(seed)
    truth = [rng.choice("ab") for _ in range(pairs)]
    votes = [
        [(who, t if rng.random() < r else ("b" if t == "a" else "a")) for who, r in reliabilities.items()]
        for t in truth
    ]
    return truth, votes


def test_recovers_known_reliabilities_and_beats_majority_with_an_adversary():
    team = {"careful1": 0.9, "careful2": 0.85, "adversary": 0.1, "random": 0.5}
    truth, votes = simulate(team, pairs=400, seed=0)
    est = dawid_skene(votes)
    assert est.converged
    for who, r in team.items():
        assert est.reliability[who] == pytest.approx(r, abs=0.06)
    ds = sum((p > 0.5) == (t == "a") for p, t in zip(est.p_a, truth)) / len(truth)
    shares = [sum(v == "a" for _, v in pair) / 4 for pair in votes]
    majority = sum((s > 0.5) == (t == "a") for s, t in zip(shares, truth) if s != 0.5) / len(truth)
    assert ds > majority + 0.1  # the adversary's votes count the other way round instead of against the truth


def row(votes: list[tuple[str, str]], majority):
    return {
        "prompt": [{"role": "user", "content": "q"}],
        "response_a": "A",
        "response_b": "B",
        "votes": [{"annotator": w, "choice": c} for w, c in votes],
        "majority": majority,
        "chosen": None if majority not in ("a", "b") else [{"role": "assistant", "content": majority.upper()}],
        "rejected": None
        if majority not in ("a", "b")
        else [{"role": "assistant", "content": "B" if majority == "a" else "A"}],
    }


def test_label_rows_majority_keeps_labels_and_adds_vote_share():
    rows = [
        row([("x", "a"), ("y", "a"), ("z", "b")], "a"),
        row([("x", "tie"), ("y", "tie"), ("z", "a")], "tie"),
        row([("x", "b"), ("y", "b"), ("z", "tie")], "b"),
    ]
    summary = label_rows(rows, "majority")
    assert [r["p_chosen"] for r in rows] == [pytest.approx(2 / 3), None, 1.0]
    assert rows[0]["chosen"][0]["content"] == "A" and rows[2]["chosen"][0]["content"] == "B"
    assert summary["method"] == "majority" and set(summary["reliability"]) == {"x", "y", "z"}


def test_label_rows_dawid_skene_decides_a_split_by_reliability():
    # x and y agree with each other on 20 pairs, z disagrees with both every time: z comes out unreliable,
    # so on a 1-1 split between x and z (no majority), x's choice wins.
    rows = [row([("x", "a"), ("y", "a"), ("z", "b")], "a") for _ in range(20)]
    rows.append(row([("x", "b"), ("z", "a")], None))
    summary = label_rows(rows, "dawid_skene")
    assert summary["reliability"]["z"] < 0.2 < 0.8 < summary["reliability"]["x"]
    assert rows[-1]["chosen"][0]["content"] == "B" and rows[-1]["rejected"][0]["content"] == "A"
    assert rows[-1]["p_chosen"] > 0.9 and summary["labels_changed_from_majority"] == 1
    assert all(r["label_model"] == "dawid_skene" for r in rows)


def test_a_vote_no_one_else_can_check_does_not_raise_its_author_s_reliability():
    # 40 tie-heavy pairs: the careful annotators say tie, the adversary alone picks a. Then 6 contested pairs
    # where both careful annotators vote a and the adversary b. Counting the lone votes would make the
    # adversary right 40 times in 46 and let them outvote the careful pair; they are left out instead.
    lone = [[("c1", "tie"), ("c2", "tie"), ("adv", "a")] for _ in range(40)]
    contested = [[("c1", "a"), ("c2", "a"), ("adv", "b")] for _ in range(6)]
    reliability, _ = m_step(lone + contested, [1.0] * 40 + [0.9] * 6, {}, 0.7, 2.0)
    # adv: expected right on the contested pairs only, 6 * 0.1 = 0.6, plus the prior 1.4 of 2 -> 2.0 / 8
    assert reliability["adv"] == pytest.approx(2.0 / 8)
    assert reliability["c1"] == pytest.approx((6 * 0.9 + 1.4) / 8)
    est = dawid_skene(lone + contested)
    assert est.reliability["adv"] < 0.5 < est.reliability["c1"]
    assert all(p > 0.5 for p in est.p_a[40:])  # the contested pairs follow the careful annotators
    # An annotator seen only on lone votes keeps the prior (and still has an estimate for the E-step).
    assert m_step([[("solo", "a")]], [1.0], {}, 0.7, 2.0)[0]["solo"] == pytest.approx(0.7)
