"""Label accuracy of majority vote against one-coin Dawid-Skene, with simulated annotators of known quality.

    .venv/bin/python benchmarks/label_models.py [--seeds 10] [--out benchmarks/results/label_models.json]

The question: at the same label budget (the same votes per pair), how many of the labels that
`align annotate pull` writes agree with the truth when chosen/rejected come from the majority
(`label_model=majority`) and when they come from the reliability estimate
(`label_model=dawid_skene`, align/annotate/reliability.py)? And how well calibrated is `p_chosen`,
which the training stages read (`data.weighting`)?

Pairs and truth: the first N pairs of data/preferences/hh_rlhf_harmless_base_test.jsonl.gz; the truth
is the data set's label (its chosen reply is better). Which reply is candidate a is a seeded coin per
pair, and so is which candidate is shown as A, as push draws it per record. Annotators behave as `align annotate simulate`'s (align/annotate/simulate.py, step 3): with
probability `bias_a` they pick the shown A whatever the truth, otherwise with probability `noise` they
flip the right answer. Label accuracy depends only on who votes how, not on the text: no model is
trained or run here, so the whole benchmark takes seconds on a CPU.

Teams (3 votes per pair unless said):
- `noisy_biased`: two careful annotators (noise 0.05) and one with noise 0.4 and position bias 0.3
  (issue 32's example);
- `adversary`: two careful annotators and one who always answers against the truth (noise 1.0);
- `pool5`: five annotators, each pair labelled by 3 of them drawn at random: three careful (noise
  0.05, 0.1, 0.15), one random (noise 0.5), one adversary (noise 1.0);
- `pool5_2votes`: the same pool with 2 votes per pair (a 1-1 split has no majority: no label).

Per pair budget (records per round) N in 16, 32, 64, 128, 256 and per seed: accuracy over labelled
pairs, coverage (share of pairs with a label), correct labels per 100 votes (what a team pays for),
and the Brier score of p_chosen against the truth. Intervals: mean +- t(0.975, seeds-1) * sd / sqrt(seeds)
over seeds, and the same for the paired difference Dawid-Skene - majority. When crowd-kit is
installed, its OneCoinDawidSkene (no prior, no gold) runs on the same votes as a cross-check; ours
with prior_strength=0 should give the same labels (run on 64 pairs and 3 seeds: its pandas EM is slow).

Training (`training` in the JSON): do better labels train a better model, and does p_chosen help
beyond the label? A synthetic stand-in for a reward model, cheap enough for a CPU: each reply is a
16-dimensional feature vector, the judge's truth is the sign of w* . (x_a - x_b) for a hidden w*, the
votes are simulated as above, and a linear Bradley-Terry model r(x) = w . x is fitted (Adam, 300 full-batch
steps, L2 1e-3) with the loss the reward stage uses (align.core.preference_losses.pair_losses) on the
labels of: majority (hard; no-majority pairs dropped), Dawid-Skene hard (p = 1), Dawid-Skene with
`data.weighting=label_smoothing` and with `weight`. Scored: pairwise accuracy against the truth on
2,000 held-out pairs. Synthetic features are not text: this says what the losses do with these labels,
not what a language model reward model reaches.

Ties (`ties` in the JSON): the same synthetic set-up where the judge calls a pair a tie when
|w* . (x_a - x_b)| is in its lowest quarter; three careful annotators (noise 0.05) vote "tie" on such a
pair with probability 0.8 (else a or b at random) and never on a clear one. Pairs whose majority is a tie
are dropped (`data.ties=drop`) or trained on with `davidson` / `rao_kupper` (default strengths); scored on
2,000 held-out clear pairs (accuracy), and by the mean |r(a) - r(b)| the model gives held-out tied pairs
relative to clear ones (lower: the model has learnt that ties are close).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from align.annotate.reliability import PRIOR_RELIABILITY, PRIOR_STRENGTH, dawid_skene, vote_share_p_a  # noqa: E402

DATA = ROOT / "data" / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz"
BUDGETS = (16, 32, 64, 128, 256)
CROSS_CHECK_BUDGET = 64
CAREFUL = {"noise": 0.05, "bias_a": 0.0}
TEAMS = {
    "noisy_biased": {
        "annotators": {"careful1": CAREFUL, "careful2": CAREFUL, "noisy_biased": {"noise": 0.4, "bias_a": 0.3}},
        "votes_per_pair": 3,
    },
    "adversary": {
        "annotators": {"careful1": CAREFUL, "careful2": CAREFUL, "adversary": {"noise": 1.0, "bias_a": 0.0}},
        "votes_per_pair": 3,
    },
    "pool5": {
        "annotators": {
            "careful1": {"noise": 0.05, "bias_a": 0.0},
            "careful2": {"noise": 0.1, "bias_a": 0.0},
            "careful3": {"noise": 0.15, "bias_a": 0.0},
            "random": {"noise": 0.5, "bias_a": 0.0},
            "adversary": {"noise": 1.0, "bias_a": 0.0},
        },
        "votes_per_pair": 3,
    },
}
TEAMS["pool5_2votes"] = {**TEAMS["pool5"], "votes_per_pair": 2}
T_975 = {4: 2.776, 9: 2.262, 19: 2.093}  # t quantiles for 5, 10 and 20 seeds


def read_pairs(n: int) -> list[dict]:
    pairs = []
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            pairs.append({"chosen": rec["chosen"], "rejected": rec["rejected"]})
            if len(pairs) == n:
                break
    return pairs


def vote(rng: random.Random, truth: str, shown_a: str, noise: float, bias_a: float) -> str:
    """One annotator's vote on candidates a/b, as simulate.py's step 3 (on the shown order)."""
    if rng.random() < bias_a:
        return shown_a  # picks whatever is shown as A
    if rng.random() < noise:
        return "b" if truth == "a" else "a"
    return truth


def simulate(pairs: list[dict], team: dict, seed: int) -> tuple[list[str], list[list[tuple[str, str]]]]:
    rng = random.Random(f"{seed}:{len(pairs)}")
    names = list(team["annotators"])
    truths, votes = [], []
    for _pair in pairs:
        truth = rng.choice("ab")  # is the data set's chosen reply candidate a or b?
        shown = rng.choice("ab")  # which candidate is displayed as A (push draws it per record)
        who = rng.sample(names, team["votes_per_pair"])
        votes.append([(name, vote(rng, truth, shown, **team["annotators"][name])) for name in who])
        truths.append(truth)
    return truths, votes


def score(p_a: list[float | None], truths: list[str], n_votes: int) -> dict:
    """Accuracy of the labels given (p_a != 0.5), coverage, correct labels per 100 votes, Brier of p_chosen."""
    labelled = [(p, t) for p, t in zip(p_a, truths) if p is not None and p != 0.5]
    correct = sum((p > 0.5) == (t == "a") for p, t in labelled)
    brier = [((p if p > 0.5 else 1 - p) - float((p > 0.5) == (t == "a"))) ** 2 for p, t in labelled]
    return {
        "accuracy": correct / len(labelled) if labelled else float("nan"),
        "coverage": len(labelled) / len(truths),
        "correct_per_100_votes": 100 * correct / n_votes,
        "brier": sum(brier) / len(brier) if brier else float("nan"),
    }


def crowdkit_p_a(votes: list[list[tuple[str, str]]]) -> list[float | None] | None:
    try:
        import pandas as pd
        from crowdkit.aggregation import OneCoinDawidSkene
    except ImportError:
        return None
    frame = pd.DataFrame([{"task": i, "worker": w, "label": v} for i, pair in enumerate(votes) for w, v in pair])
    probas = OneCoinDawidSkene(n_iter=200, tol=1e-8).fit_predict_proba(frame)
    return [float(probas.loc[i, "a"]) if "a" in probas.columns else 0.0 for i in range(len(votes))]


def interval(values: list[float]) -> dict:
    values = [v for v in values if not math.isnan(v)]
    mean = statistics.fmean(values)
    half = (
        T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
        if len(values) > 1
        else float("nan")
    )
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_models.json"))
    args = parser.parse_args()
    start = time.time()
    pairs = read_pairs(max(BUDGETS))
    results = []
    for team_name, team in TEAMS.items():
        for budget in BUDGETS:
            per_method: dict[str, list[dict]] = {}
            agreement_with_crowdkit = []
            reliabilities = []
            for seed in range(args.seeds):
                truths, votes = simulate(pairs[:budget], team, seed)
                n_votes = sum(len(v) for v in votes)
                est = dawid_skene(votes, prior_reliability=PRIOR_RELIABILITY, prior_strength=PRIOR_STRENGTH)
                reliabilities.append(est.reliability)
                methods = {"majority": [vote_share_p_a([c for _, c in v]) for v in votes], "dawid_skene": est.p_a}
                # crowd-kit's pandas EM takes ~10 s a fit here: the cross-check runs on one budget and 3 seeds.
                ck = crowdkit_p_a(votes) if budget == CROSS_CHECK_BUDGET and seed < 3 else None
                if ck is not None:
                    methods["crowdkit_one_coin"] = ck
                    plain = dawid_skene(votes, prior_strength=0.0).p_a
                    agreement_with_crowdkit.append(sum((x > 0.5) == (y > 0.5) for x, y in zip(plain, ck)) / len(ck))
                for name, p_a in methods.items():
                    per_method.setdefault(name, []).append(score(p_a, truths, n_votes))
            row = {"team": team_name, "votes_per_pair": team["votes_per_pair"], "pairs": budget, "seeds": args.seeds}
            for name, scores in per_method.items():
                row[name] = {k: interval([s[k] for s in scores]) for k in scores[0]}
            if "crowdkit_one_coin" in per_method:
                row["crowdkit_one_coin"]["seeds"] = len(per_method["crowdkit_one_coin"])
            for key in ("accuracy", "correct_per_100_votes"):
                row[f"dawid_skene_minus_majority_{key}"] = interval(
                    [d[key] - m[key] for d, m in zip(per_method["dawid_skene"], per_method["majority"])]
                )
            row["mean_estimated_reliability"] = {
                w: round(statistics.fmean(r.get(w, float("nan")) for r in reliabilities), 3) for w in team["annotators"]
            }
            if agreement_with_crowdkit:
                row["ours_prior0_label_agreement_with_crowdkit"] = round(statistics.fmean(agreement_with_crowdkit), 4)
            results.append(row)
            diff = row["dawid_skene_minus_majority_accuracy"]
            print(
                f"{team_name:13s} {budget:4d} pairs: majority {row['majority']['accuracy']['mean']:.3f} "
                f"dawid_skene {row['dawid_skene']['accuracy']['mean']:.3f} "
                f"(diff {diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]) "
                f"coverage {row['majority']['coverage']['mean']:.2f}/{row['dawid_skene']['coverage']['mean']:.2f}"
            )
    out = {
        "benchmark": "label_models",
        "command": f".venv/bin/python benchmarks/label_models.py --seeds {args.seeds}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
        },
        "data": str(DATA.relative_to(ROOT)),
        "teams": TEAMS,
        "prior": {"reliability": PRIOR_RELIABILITY, "strength_votes": PRIOR_STRENGTH},
        "wall_s": round(time.time() - start, 1),
        "results": results,
    }
    out["training"] = training_comparison(args.seeds)
    out["ties"] = tie_comparison(args.seeds)
    out["wall_s"] = round(time.time() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['wall_s']} s")


TRAIN_TEAMS = ("noisy_biased", "adversary", "pool5")
TRAIN_BUDGETS = (64, 256)
DIMS = 16


def fit_linear_bt(diff, p, weighting: str, steps: int = 300):
    """w for r(x) = w . x from pair differences x_chosen - x_rejected, with the reward stage's pair loss."""
    import torch

    from align.core.preference_losses import pair_losses

    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = pair_losses(diff @ w, p, weighting=weighting).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        opt.step()
    return w.detach()


def training_comparison(seeds: int) -> list[dict]:
    import torch

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and contention on a shared machine)

    rows = []
    for team_name in TRAIN_TEAMS:
        team = TEAMS[team_name]
        for budget in TRAIN_BUDGETS:
            scores: dict[str, list[float]] = {}
            for seed in range(seeds):
                gen = torch.Generator().manual_seed(seed)
                w_true = torch.randn(DIMS, generator=gen, dtype=torch.float64)
                x_a, x_b = (torch.randn(budget, DIMS, generator=gen, dtype=torch.float64) for _ in range(2))
                test_diff = torch.randn(2000, DIMS, generator=gen, dtype=torch.float64)
                truth_a = ((x_a - x_b) @ w_true > 0).tolist()
                votes = simulate_votes([("a" if t else "b") for t in truth_a], team, seed)
                majority = [vote_share_p_a([c for _, c in v]) for v in votes]
                ds = dawid_skene(votes, prior_reliability=PRIOR_RELIABILITY, prior_strength=PRIOR_STRENGTH).p_a
                arms = {
                    "majority_hard": (majority, "hard"),
                    "dawid_skene_hard": (ds, "hard"),
                    "dawid_skene_label_smoothing": (ds, "label_smoothing"),
                    "dawid_skene_weight": (ds, "weight"),
                }
                for arm, (p_a, use) in arms.items():
                    keep = [i for i, p in enumerate(p_a) if p is not None and p != 0.5]
                    sign = torch.tensor([1.0 if p_a[i] > 0.5 else -1.0 for i in keep], dtype=torch.float64)
                    diff = (x_a[keep] - x_b[keep]) * sign[:, None]  # chosen - rejected
                    p_chosen = torch.tensor([max(p_a[i], 1 - p_a[i]) for i in keep], dtype=torch.float64)
                    w = fit_linear_bt(diff, p_chosen if use != "hard" else None, "none" if use == "hard" else use)
                    accuracy = ((test_diff @ w > 0) == (test_diff @ w_true > 0)).double().mean().item()
                    scores.setdefault(arm, []).append(accuracy)
            row = {"team": team_name, "pairs": budget, "votes_per_pair": team["votes_per_pair"], "seeds": seeds}
            row.update({arm: interval(v) for arm, v in scores.items()})
            for arm in ("dawid_skene_hard", "dawid_skene_label_smoothing", "dawid_skene_weight"):
                row[f"{arm}_minus_majority_hard"] = interval(
                    [a - b for a, b in zip(scores[arm], scores["majority_hard"])]
                )
            row["label_smoothing_minus_dawid_skene_hard"] = interval(
                [a - b for a, b in zip(scores["dawid_skene_label_smoothing"], scores["dawid_skene_hard"])]
            )
            rows.append(row)
            print(f"train {team_name:13s} {budget:4d} pairs: " + ", ".join(f"{a} {row[a]['mean']:.3f}" for a in scores))
    return rows


def fit_linear_bt_ties(diff, tie, ties: str, steps: int = 300):
    import torch

    from align.core.preference_losses import pair_losses

    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = pair_losses(diff @ w, tie=tie, ties=ties).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        opt.step()
    return w.detach()


def tie_comparison(seeds: int) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    rows = []
    for budget in TRAIN_BUDGETS:
        scores: dict[str, dict[str, list[float]]] = {}
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(1000 + seed)
            w_true = torch.randn(DIMS, generator=gen, dtype=torch.float64)
            diff_ab = torch.randn(budget, DIMS, generator=gen, dtype=torch.float64) * math.sqrt(2)
            test = torch.randn(4000, DIMS, generator=gen, dtype=torch.float64) * math.sqrt(2)
            margin, test_margin = diff_ab @ w_true, test @ w_true
            tau = margin.abs().quantile(0.25).item()
            rng = random.Random(f"ties:{seed}:{budget}")
            labels = []  # per pair: "a", "b" or "tie" by majority of 3 careful votes (None: no majority)
            for m in margin.tolist():
                votes = []
                for _ in range(3):
                    if abs(m) < tau:
                        votes.append("tie" if rng.random() < 0.8 else rng.choice("ab"))
                    else:
                        votes.append(vote(rng, "a" if m > 0 else "b", rng.choice("ab"), **CAREFUL))
                top = max(("a", "b", "tie"), key=votes.count)
                labels.append(top if votes.count(top) * 2 > len(votes) else None)
            clear_test = test_margin.abs() >= tau
            for ties in ("drop", "davidson", "rao_kupper"):
                keep = [i for i, lab in enumerate(labels) if lab in ("a", "b") or (lab == "tie" and ties != "drop")]
                sign = torch.tensor([-1.0 if labels[i] == "b" else 1.0 for i in keep], dtype=torch.float64)
                tie = torch.tensor([labels[i] == "tie" for i in keep])
                w = fit_linear_bt_ties(diff_ab[keep] * sign[:, None], tie, ties)
                pred = test @ w
                accuracy = ((pred > 0) == (test_margin > 0))[clear_test].double().mean().item()
                gap_ratio = (pred[~clear_test].abs().mean() / pred[clear_test].abs().mean()).item()
                arm = scores.setdefault(ties, {"clear_accuracy": [], "tie_gap_ratio": [], "ties_trained": []})
                arm["clear_accuracy"].append(accuracy)
                arm["tie_gap_ratio"].append(gap_ratio)
                arm["ties_trained"].append(float(tie.sum()))
        row = {"pairs": budget, "seeds": seeds, "tie_share_by_judge": 0.25}
        for ties, metrics in scores.items():
            row[ties] = {k: interval(v) for k, v in metrics.items()}
        for ties in ("davidson", "rao_kupper"):
            row[f"{ties}_minus_drop_clear_accuracy"] = interval(
                [a - b for a, b in zip(scores[ties]["clear_accuracy"], scores["drop"]["clear_accuracy"])]
            )
        rows.append(row)
        print(
            f"ties {budget:4d} pairs: "
            + ", ".join(
                f"{t} acc {row[t]['clear_accuracy']['mean']:.3f} gap {row[t]['tie_gap_ratio']['mean']:.2f}"
                for t in scores
            )
        )
    return rows


def simulate_votes(truths: list[str], team: dict, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(f"train:{seed}:{len(truths)}")
    names = list(team["annotators"])
    return [
        [
            (name, vote(rng, truth, rng.choice("ab"), **team["annotators"][name]))
            for name in rng.sample(names, team["votes_per_pair"])
        ]
        for truth in truths
    ]


if __name__ == "__main__":
    main()
