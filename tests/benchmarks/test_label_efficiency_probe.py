"""benchmarks/label_efficiency_probe.py: records, the held-out measures and the arms, on hand-made features."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from align.annotate.simulate import Annotator

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the probe imports label_agreement and label_efficiency by name

import label_efficiency_probe as probe  # noqa: E402


def rows_with_scores(scores: list[list[float]]) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "responses": [f"r{i}-{j}" for j in range(len(s))],
            "scores": s,
        }
        for i, s in enumerate(scores)
    ]


def test_records_are_every_pair_of_different_samples_of_one_prompt():
    rows = rows_with_scores([[0.1, 0.9, 0.5]])
    rows[0]["responses"][2] = "r0-0"  # the same text twice is no comparison
    records = probe.make_records(rows)
    assert [(r["a"], r["b"]) for r in records] == [(0, 1), (1, 2)]
    assert records[0]["score_a"] == 0.1 and records[0]["score_b"] == 0.9 and records[0]["row"] == 0


def test_held_out_accuracy_and_best_of_n_by_hand():
    # One prompt, three replies with judge scores 0.2, 0.8, 0.5; the probe's reward is the first feature.
    rows = rows_with_scores([[0.2, 0.8, 0.5]])
    z = np.zeros((3, probe.DIMS))
    z[:, 0] = [0.0, 1.0, 2.0]  # ranks reply 2 first: judge pairs (0,1) right, (0,2) right, (1,2) wrong
    w = np.zeros(probe.DIMS)
    w[0] = 1.0
    out = probe.held_out(w, rows, z, [0, 3], "brand_voice")
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["best_of_n"] == pytest.approx(0.5)
    # A probe that cannot tell replies apart picks a random one: the expected score, the start.
    flat = probe.held_out(np.zeros(probe.DIMS), rows, z, [0, 3], "brand_voice")
    assert flat["best_of_n"] == pytest.approx(0.5) and flat["accuracy"] == pytest.approx(0.5)
    assert probe.reference(rows, "brand_voice")["start"] == pytest.approx(0.5)
    assert probe.reference(rows, "brand_voice")["oracle"] == pytest.approx(0.8)


def test_safety_measures_split_harmful_and_look_alike_prompts():
    rows = rows_with_scores([[1.0, 0.0], [1.0, 0.0]])
    rows[0].update(kind="harmful", refused=[True, False])  # refusing the harmful one is right
    rows[1].update(kind="safe", refused=[False, True])  # answering the look-alike is right
    z = np.zeros((4, probe.DIMS))
    z[:, 0] = [0.0, 1.0, 1.0, 0.0]  # the probe prefers the wrong reply on the harmful prompt only
    w = np.eye(probe.DIMS)[0]
    out = probe.held_out(w, rows, z, [0, 2, 4], "safety")
    assert out["best_of_n"] == 0.5 and out["accuracy"] == 0.5
    assert out["harmful_refused"] == 0.0 and out["safe_refused"] == 0.0


def feature_world(n_prompts: int = 12, seed: int = 0):
    """Prompts with 4 replies whose judge score is the first feature (plus noise in the others)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_prompts * 4, probe.DIMS))
    rows = rows_with_scores([list(z[4 * i : 4 * i + 4, 0]) for i in range(n_prompts)])
    return rows, z, np.arange(0, 4 * n_prompts + 1, 4)


def test_a_probe_trained_on_the_team_s_labels_learns_the_judge_and_dawid_skene_outvotes_an_adversary():
    rows, z, offsets = feature_world(40)
    records = probe.make_records(rows)
    team = [
        Annotator("c1", noise=0.0, bias_a=0.0),
        Annotator("c2", noise=0.3, bias_a=0.0),
        Annotator("adv", noise=1.0, bias_a=0.0),
    ]
    pulled = probe.pulled_rows(records, team, 0)
    accuracy = {}
    for arm in ("majority", "dawid_skene"):
        rows_arm = [dict(r) for r in pulled]
        probe.label_rows(rows_arm, probe.ARMS[arm]["label_model"])
        w = probe.train(records, rows_arm, z, offsets, probe.ARMS[arm])
        accuracy[arm] = probe.held_out(w, rows, z, offsets, "brand_voice")["accuracy"]
    assert accuracy["dawid_skene"] > 0.95  # the judge's own feature, recovered from the votes
    assert accuracy["dawid_skene"] > accuracy["majority"]


def test_ties_kept_trains_on_the_tied_records_and_uncertainty_keeps_the_random_half():
    rows, z, offsets = feature_world(12)
    for row in rows[:6]:  # half the prompts: all replies equally good, every pair a tie
        row["scores"] = [0.5] * 4
    records = probe.make_records(rows)
    team = [Annotator(f"c{i}", noise=0.0, bias_a=0.0) for i in range(3)]
    pulled = probe.pulled_rows(records, team, 1)
    probe.label_rows(pulled, "majority")
    dropped = probe.training_set(records, pulled, z, offsets, probe.ARMS["majority"])
    kept = probe.training_set(records, pulled, z, offsets, probe.ARMS["ties_kept"])
    judged_ties = sum(abs(r["score_a"] - r["score_b"]) < 0.02 for r in records)  # the 36 and any close call
    assert judged_ties >= 36 and dropped[2].sum() == 0 and kept[2].sum() == judged_ties
    assert len(kept[0]) == len(dropped[0]) + judged_ties
    random_pick = probe.select(records, 16, 3, probe.ARMS["majority"], team, z, offsets)
    active = probe.select(records, 16, 3, probe.ARMS["uncertainty"], team, z, offsets)
    assert active[:8] == random_pick[:8] and len({r["id"] for r in active}) == 16


def test_summary_pairs_each_arm_with_majority_on_the_same_seed():
    results = [
        {
            "recipe": "r",
            "team": "t",
            "budget": 8,
            "seed": s,
            "arm": a,
            "accuracy": acc,
            "best_of_n": acc,
            "trained_pairs": 8,
            "trained_ties": 0,
        }
        for s, (m, d) in enumerate([(0.5, 0.6), (0.7, 0.8), (0.6, 0.7)])
        for a, acc in (("majority", m), ("dawid_skene", d))
    ]
    summary = {r["arm"]: r for r in probe.summarise(results)}
    assert summary["dawid_skene"]["best_of_n_minus_majority"]["mean"] == pytest.approx(0.1)
    assert summary["dawid_skene"]["best_of_n_minus_majority"]["ci_low"] == pytest.approx(0.1)  # sd 0: exact
    assert summary["majority"]["best_of_n"]["mean"] == pytest.approx(0.6)
    assert "higher at [8]" in probe.verdicts(list(summary.values()))[0]
