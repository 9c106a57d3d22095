"""benchmarks/active_selection.py's simulation: its Bradley-Terry fit is sklearn's objective, its arms add the
labels they claim to, and its summary finds the budget at which an arm reaches random's best."""

from __future__ import annotations

import importlib.util
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "active_selection.py"
spec = importlib.util.spec_from_file_location("active_selection", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def synthetic(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (x @ np.array([2.0, -1.0, 0, 0, 0, 0]) + 0.3 * rng.normal(size=n) > 0).astype(int)
    return x, y


@pytest.mark.parametrize("c", [0.01, 1.0, 10.0])
def test_newton_fit_is_sklearns_logistic_regression(c):
    from sklearn.linear_model import LogisticRegression

    x, y = synthetic(30, 0)
    ref = (
        LogisticRegression(C=c, fit_intercept=False, max_iter=20000, tol=1e-12)
        .fit(np.concatenate([x, -x]), np.concatenate([y, 1 - y]))
        .coef_[0]
    )
    assert np.abs(bench.fit(x, y, c) - ref).max() < 1e-5
    # Antisymmetric by construction: P(A > B) = 1 - P(B > A), so the fit on (-x, 1 - y) is the same model.
    assert np.allclose(bench.fit(-x, 1 - y, c), bench.fit(x, y, c))


@pytest.mark.parametrize("arm", bench.ARMS)
def test_each_arm_learns_an_easy_rule_and_adds_a_batch_per_step(arm):
    pool, test = synthetic(200, 1), synthetic(200, 2)
    args = Namespace(batch=4, members=3)
    curve = bench.run_arm(arm, pool, test, seed=0, c=1.0, args=args, budgets=[4, 8, 12, 16])
    assert list(curve) == [4, 8, 12, 16]
    assert curve[16].mean() > 0.8  # the rule is linear in the features (chance is 0.5): 16 labels nearly find it


def test_summary_reach_and_paired_intervals():
    def run(*accuracies):  # per budget, 100 held-out pairs with that share ranked right
        return {
            b: np.array([1.0] * round(100 * a) + [0.0] * (100 - round(100 * a))) for b, a in zip((8, 16), accuracies)
        }

    random_runs = [run(0.5, 0.6), run(0.52, 0.62)]
    active_runs = [run(0.61, 0.63), run(0.63, 0.65)]
    out = bench.summarise(
        {"random": random_runs, "ensemble_disagreement": active_runs, "least_sure": random_runs}, [8, 16], Namespace()
    )
    assert out["random_best_mean"] == 0.61
    assert out["labels_to_reach_random_best"] == {"random": 16, "ensemble_disagreement": 8, "least_sure": 16}
    (row,) = out["table"]  # only the budget 16 of BUDGETS is on this grid
    # Paired differences 0.03 and 0.03: mean 0.03, no spread over seeds, so that interval is the point ...
    assert row["ensemble_disagreement_minus_random"] == {"mean": 0.03, "ci_low": 0.03, "ci_high": 0.03}
    # ... while resampling the 100 test pairs (3 of them differ, by +1 each) spreads it around 0.03.
    wide = row["ensemble_disagreement_minus_random_test_resampled"]
    assert wide["ci_low"] < 0.03 < wide["ci_high"] and wide["ci_low"] >= 0.0
