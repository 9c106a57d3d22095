"""benchmarks/label_agreement.py and label_efficiency.py: the simulated votes are simulate's own (whatever A/B
order push shows), the labels are the pull's, the scores count what they claim, and the arms that share a
budget and seed label the same records."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from align.annotate.simulate import Annotator

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # label_efficiency imports label_agreement by name


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


agreement = load("label_agreement")
efficiency = load("label_efficiency")


def records(n: int) -> list[dict]:
    """n records whose candidate a is better by the rubric (0.9 vs 0.2), then one the judge calls a tie."""
    out = [
        {
            "id": f"r{i}",
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "response_a": f"good {i}",
            "response_b": f"bad {i}",
            "score_a": 0.9,
            "score_b": 0.2,
        }
        for i in range(n)
    ]
    return out + [
        {
            "id": "tie",
            "prompt": [{"role": "user", "content": "t"}],
            "response_a": "x",
            "response_b": "y",
            "score_a": 0.5,
            "score_b": 0.51,
        }
    ]


def test_votes_follow_the_judge_whatever_the_shown_order_and_an_adversary_votes_against_it():
    careful, adversary = Annotator("careful", noise=0.0, bias_a=0.0), Annotator("adversary", noise=1.0, bias_a=0.0)
    rows = agreement.pulled_rows(records(20), [careful, adversary], seed=0)
    for row in rows[:20]:  # the A/B order is a coin per record; the votes are on candidates, swap undone
        assert [v["choice"] for v in row["votes"]] == ["a", "b"]
    assert [v["choice"] for v in rows[20]["votes"]][0] == "tie"  # |0.5 - 0.51| < the recipe's 0.02


def test_dawid_skene_outvotes_an_adversary_the_majority_follows_and_the_score_counts_it():
    # Two careful annotators who never err and one adversary: every majority is right, so make one careful
    # annotator wrong on a quarter of the records (noise 0.25): there the adversary and the slip outvote.
    team = [
        Annotator("c1", noise=0.0, bias_a=0.0),
        Annotator("c2", noise=0.25, bias_a=0.0),
        Annotator("adv", noise=1.0, bias_a=0.0),
    ]
    recs = records(40)
    majority = agreement.pulled_rows(recs, team, seed=1)
    slips = sum(row["votes"][1]["choice"] == "b" for row in majority[:40])
    agreement.label_rows(majority, "majority")
    scored = agreement.score(recs, majority)
    assert slips > 0 and scored["accuracy"] == (40 - slips) / 40  # the tie record is not scored
    assert scored["coverage"] == 1.0 and abs(scored["correct_per_100_votes"] - 100 * (40 - slips) / 120) < 1e-9
    weighted = agreement.pulled_rows(recs, team, seed=1)
    agreement.label_rows(weighted, "dawid_skene")
    assert agreement.score(recs, weighted)["accuracy"] == 1.0


def test_paired_arms_label_the_same_records_and_uncertainty_keeps_the_random_half():
    recs = records(50)
    team = [Annotator("c1", noise=0.1)]
    first = efficiency.select(recs, 16, 3, efficiency.ARMS["majority"], team, Path("."))
    again = efficiency.select(recs, 16, 3, efficiency.ARMS["dawid_skene"], team, Path("."))
    assert [r["id"] for r in first] == [r["id"] for r in again] and len(first) == 16
    assert [r["id"] for r in efficiency.select(recs, 8, 3, efficiency.ARMS["ties_kept"], team, Path("."))] == [
        r["id"] for r in first[:8]
    ]  # a smaller budget is a prefix of the same draw
    rows, spent = efficiency.labels(first, [Annotator("c1", noise=0.0, bias_a=0.0)], 3, efficiency.ARMS["majority"])
    assert spent["records"] == 16 and spent["votes"] == 16 and all(r["prompt"] for r in rows)


def test_the_summary_pairs_arms_by_seed():
    def arm(name, seed, score):
        return {"team": "adversary", "budget": 16, "seed": seed, "arm": name, "brand_score": {"mean": score}}

    summary = efficiency.summarise(
        [arm("majority", 0, 0.50), arm("majority", 1, 0.60), arm("dawid_skene", 0, 0.55), arm("dawid_skene", 1, 0.61)]
    )
    ds = next(r for r in summary if r["arm"] == "dawid_skene")
    assert ds["brand_score"]["mean"] == 0.58 and ds["minus_majority"]["mean"] == 0.03  # (0.05 + 0.01) / 2
    assert "minus_majority" not in next(r for r in summary if r["arm"] == "majority")
