"""Does choosing what people label by ensemble disagreement save labels? A CPU-cheap simulation on HH-RLHF.

    .venv/bin/python benchmarks/active_selection.py [--pairs 1500] [--seeds 20] [--layer 15] \
        [--out benchmarks/results/active_selection.json]

The question behind `align pairs selection=ensemble_disagreement` and `push.max_records`: with the same
number of labels, does a reward model trained on the pairs an ensemble disagrees on most rank held-out
pairs better than one trained on randomly chosen pairs (or reach the same accuracy with fewer labels)?

Set-up, kept cheap enough for two CPU cores and kept honest:
- Data: the first `--pairs` pairs of data/preferences/hh_rlhf_harmless_base_test.jsonl.gz (HH-RLHF harmless,
  MIT), split once by a seeded shuffle into a pool (60%: what annotators could be asked about), a
  validation split (10%: the only data settings are chosen on) and a test split (30%: read once, at the end).
  The "annotator" reveals HH's own label: which reply is chosen. Each pair is shown in a seeded random order.
- Features: each reply is embedded once by the embedded SmolLM2-135M-Instruct (chat template of prompt +
  reply, the last `--max-tokens` tokens, hidden states after block `--layer` of 30, mean-pooled over the
  reply's tokens; cached under ~/.cache/align/benchmarks). A PCA (`--dims`) is fitted on the pool's reply
  embeddings, which needs no labels.
- Reward model: Bradley-Terry as a logistic regression on z(A) - z(B) without intercept (each label added in
  both orientations, so P(A > B) = 1 - P(B > A)), L2 strength C chosen on the validation split for the random
  arm at the budgets below (the same C for every arm; the test split is not read to choose it).
- Arms, from the same 8 random labels per seed, then batches of `--batch` labels up to `--max-labels`:
  `random`; `ensemble_disagreement`: K = `--members` copies of the same model fitted on bootstrap resamples of the
  labels so far, the batch = the pool pairs with the highest disagreement (align.rollout.pairs.ensemble_disagreement,
  the function `align pairs` uses); `least_sure`: one model, the pairs whose P(A > B) is closest to 0.5.
- Measured: test pairwise accuracy of the model fitted on all labels so far, per seed; mean and 95% t-interval
  over seeds; per budget the paired difference to random (same seed, same first 8 labels) with its interval over
  seeds, and a second interval that also resamples the test pairs (paired bootstrap, 2000 draws);
  the fewest labels at which each arm's mean reaches random's best mean. The model fitted on the whole pool is
  the ceiling.

The JSON says what happened, including when active selection does not help.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz"
BUDGETS = (16, 32, 64, 128)
ARMS = ("random", "ensemble_disagreement", "least_sure")
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1500, help="first N pairs of the HH harmless file")
    ap.add_argument("--layer", type=int, default=15, help="hidden states after this block (of 30)")
    ap.add_argument("--max-tokens", type=int, default=160, help="keep the last N tokens of prompt + reply")
    ap.add_argument("--dims", type=int, default=64, help="PCA dimensions fitted on the pool's reply embeddings")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the pool/validation/test split")
    ap.add_argument("--members", type=int, default=5, help="bootstrap members of the ensemble")
    ap.add_argument("--batch", type=int, default=8, help="labels added per step (a round's budget)")
    ap.add_argument("--max-labels", type=int, default=128)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "active_selection.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import numpy as np

    began = time.time()
    pairs = read_pairs(args.pairs)
    emb_chosen, emb_rejected, embed_s = embeddings(pairs, args)
    order = list(range(len(pairs)))
    random.Random(args.split_seed).shuffle(order)
    n_pool, n_val = int(0.6 * len(pairs)), int(0.1 * len(pairs))
    split = {"pool": order[:n_pool], "validation": order[n_pool : n_pool + n_val], "test": order[n_pool + n_val :]}

    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    # Label-free: fitted on every pool reply, chosen and rejected alike.
    pool_replies = np.concatenate([emb_chosen[split["pool"]], emb_rejected[split["pool"]]])
    scaler = StandardScaler().fit(pool_replies)
    pca = PCA(n_components=args.dims, random_state=0).fit(scaler.transform(pool_replies))
    z_c, z_r = (pca.transform(scaler.transform(e)) for e in (emb_chosen, emb_rejected))
    # Each pair shown in a seeded order: x = z(A) - z(B), y = 1 when A is HH's chosen reply.
    flip = np.array([random.Random(f"order:{i}").random() < 0.5 for i in range(len(pairs))])
    x = np.where(flip[:, None], z_r - z_c, z_c - z_r)
    y = (~flip).astype(int)
    data = {name: (x[idx], y[idx]) for name, idx in split.items()}

    budgets = [b for b in range(args.batch, args.max_labels + 1, args.batch)]
    choice_c = {}
    for c in C_GRID:  # the random arm on the validation split: the only place settings are chosen
        curves = [
            run_arm("random", data["pool"], data["validation"], seed, c, args, budgets) for seed in range(args.seeds)
        ]
        choice_c[c] = float(np.mean([np.mean([curve[b].mean() for b in BUDGETS if b in curve]) for curve in curves]))
    c = max(choice_c, key=choice_c.get)

    results, distance = {}, {}
    pool_distance = np.linalg.norm(data["pool"][0], axis=1)
    for arm in ARMS:
        results[arm], distance[arm] = [], []
        for seed in range(args.seeds):
            chosen: list[int] = []
            results[arm].append(run_arm(arm, data["pool"], data["test"], seed, c, args, budgets, chosen))
            distance[arm].append(float(pool_distance[chosen].mean()))
    ceiling = correct(fit(*data["pool"], c), *data["test"]).mean()

    report = summarise(results, budgets, args)
    out = {
        "question": "With the same number of labels, does choosing pairs by ensemble disagreement (or single-model "
        "uncertainty) give a more accurate reward model than random choice, on held-out HH-RLHF pairs?",
        "command": "python benchmarks/active_selection.py " + " ".join(sys.argv[1:]),
        "data": {
            "file": str(DATA.relative_to(REPO)),
            "pairs": len(pairs),
            "pool": len(split["pool"]),
            "validation": len(split["validation"]),
            "test": len(split["test"]),
            "label": "HH-RLHF's chosen reply (the simulated annotator reveals it)",
        },
        "features": {
            "model": "embedded SmolLM2-135M-Instruct",
            "layer": args.layer,
            "max_tokens": args.max_tokens,
            "pooling": "mean over the reply's tokens",
            "pca_dims": args.dims,
            "embedding_s": round(embed_s, 1),
        },
        "model": "logistic regression on z(A) - z(B), no intercept, both orientations (Bradley-Terry)",
        "c_chosen_on_validation": {"grid": {str(k): round(v, 4) for k, v in choice_c.items()}, "chosen": c},
        "settings": {
            "seeds": args.seeds,
            "members": args.members,
            "batch": args.batch,
            "start_labels": args.batch,
            "max_labels": args.max_labels,
        },
        "ceiling_whole_pool": {"labels": len(split["pool"]), "test_accuracy": round(ceiling, 4)},
        # How different the two replies of the labelled pairs are (feature distance |z(A) - z(B)|), at the last budget:
        # a rule that prefers clearly different replies shows here.
        "labelled_pair_distance": {
            "pool_mean": round(float(pool_distance.mean()), 3),
            **{arm: round(float(np.mean(d)), 3) for arm, d in distance.items()},
        },
        **report,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "wall_time_s": round(time.time() - began, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("table", "labels_to_reach_random_best", "verdict")}, indent=2))
    return 0


# -- the simulation ------------------------------------------------------------------------------


def fit(x, y, c: float, iterations: int = 50):
    """Bradley-Terry: L2-regularised logistic regression on differences, no intercept, each label in both
    orientations; the objective of sklearn's LogisticRegression(C=c, fit_intercept=False), minimised by Newton's
    method (a few 64x64 solves: with a handful of labels the data are separable and lbfgs would run to max_iter)."""
    import numpy as np

    xx, yy = np.concatenate([x, -x]), np.concatenate([y, 1 - y]).astype(float)
    w = np.zeros(xx.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xx @ w)))
        grad = c * xx.T @ (p - yy) + w
        hess = c * (xx * (p * (1 - p))[:, None]).T @ xx + np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def correct(w, x, y):
    """Per held-out pair: 1 when the model ranks it as the label does, 0.5 on a tie, else 0 (accuracy is the mean)."""
    import numpy as np

    margin = x @ w
    return np.where(margin == 0, 0.5, (margin > 0) == (y == 1)).astype(float)


def run_arm(arm: str, pool, held, seed: int, c: float, args, budgets, chosen: list | None = None) -> dict:
    """Per-pair correctness on `held` after each batch of labels, for one arm and seed. `chosen`, when given,
    receives the labelled pool indices at the end."""
    import numpy as np

    from align.rollout.pairs import ensemble_disagreement

    x, y = pool
    rng = np.random.default_rng(seed)
    labelled = list(rng.choice(len(x), size=args.batch, replace=False))  # the same first labels in every arm
    curve = {}
    while True:
        w = fit(x[labelled], y[labelled], c)
        curve[len(labelled)] = correct(w, *held)
        if len(labelled) >= budgets[-1]:
            if chosen is not None:
                chosen.extend(labelled)
            return curve
        rest = np.setdiff1d(np.arange(len(x)), labelled)
        if arm == "random":
            pick = rng.choice(rest, size=args.batch, replace=False)
        elif arm == "least_sure":
            pick = rest[np.argsort(np.abs(x[rest] @ w), kind="stable")[: args.batch]]
        else:
            members = []
            for _ in range(args.members):
                draw = rng.choice(labelled, size=len(labelled), replace=True)
                members.append(x[rest] @ fit(x[draw], y[draw], c))
            members = np.array(members).T  # one row per pool pair: each member's score difference A - B
            zeros = [0.0] * args.members
            disagreement = np.array([ensemble_disagreement(list(m), zeros) for m in members])
            pick = rest[np.argsort(-disagreement, kind="stable")[: args.batch]]
        labelled.extend(int(i) for i in pick)


def summarise(results: dict[str, list[dict[int, float]]], budgets: list[int], args) -> dict:
    import numpy as np

    def interval(values) -> dict:
        from scipy import stats

        values = np.asarray(values, dtype=float)
        mean, n = float(values.mean()), len(values)
        half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return {"mean": round(mean, 4), "ci_low": round(mean - half, 4), "ci_high": round(mean + half, 4)}

    curves = {arm: {b: interval([r[b].mean() for r in runs]) for b in budgets} for arm, runs in results.items()}

    def test_resampled(arm, b) -> dict:
        # The intervals over seeds hold the test split fixed; this one resamples its pairs too (paired bootstrap of
        # the difference averaged over seeds), so a gain that only one lucky test split shows is not mistaken for one.
        diff = np.mean([r[b] - q[b] for r, q in zip(results[arm], results["random"])], axis=0)
        draws = np.random.default_rng(0).integers(0, len(diff), size=(2000, len(diff)))
        means = diff[draws].mean(axis=1)
        return {
            "ci_low": round(float(np.quantile(means, 0.025)), 4),
            "ci_high": round(float(np.quantile(means, 0.975)), 4),
        }

    table = []
    for b in (b for b in BUDGETS if b in budgets):
        row = {"labels": b}
        for arm in ARMS:
            row[arm] = curves[arm][b]
            if arm != "random":
                row[f"{arm}_minus_random"] = interval(
                    [r[b].mean() - q[b].mean() for r, q in zip(results[arm], results["random"])]
                )
                row[f"{arm}_minus_random_test_resampled"] = test_resampled(arm, b)
        table.append(row)
    best = max(curves["random"][b]["mean"] for b in budgets)
    reach = {arm: next((b for b in budgets if curves[arm][b]["mean"] >= best), None) for arm in ARMS}
    verdict = []
    for arm in ARMS[1:]:
        wins = [row["labels"] for row in table if row[f"{arm}_minus_random"]["ci_low"] > 0]
        firm = [row["labels"] for row in table if row[f"{arm}_minus_random_test_resampled"]["ci_low"] > 0]
        losses = [row["labels"] for row in table if row[f"{arm}_minus_random"]["ci_high"] < 0]
        verdict.append(
            f"{arm}: better than random (interval over seeds above 0) at {wins or 'no'} budget(s), also with "
            f"the test pairs resampled at {firm or 'no'}; worse at {losses or 'no'} budget(s); reaches "
            f"random's best mean ({best}) with {reach[arm]} labels (random: {reach['random']})"
        )
    return {
        "curves": {arm: {str(b): v for b, v in c.items()} for arm, c in curves.items()},
        "table": table,
        "random_best_mean": best,
        "labels_to_reach_random_best": reach,
        "verdict": verdict,
    }


# -- data and features ---------------------------------------------------------------------------


def read_pairs(n: int) -> list[dict]:
    from align.data.preferences import load_preference_pairs

    rows = load_preference_pairs(str(DATA), format="hh-rlhf").rows
    return rows[:n]


def embeddings(pairs: list[dict], args):
    """(chosen, rejected) reply embeddings, one row per pair. Cached per setting for the first M pairs read
    so far: a larger --pairs embeds only the pairs beyond M."""
    import numpy as np

    from align.model_cache import cache_dir

    key = hashlib.sha256(json.dumps([DATA.name, args.layer, args.max_tokens, "reply-mean-v1"]).encode()).hexdigest()[
        :16
    ]
    cache = cache_dir() / "benchmarks" / f"active_selection-{key}.npz"
    chosen = rejected = np.zeros((0, 0), dtype=np.float32)
    seconds = 0.0
    if cache.exists():
        saved = np.load(cache)
        chosen, rejected, seconds = saved["chosen"], saved["rejected"], float(saved["seconds"])
    if len(chosen) < len(pairs):
        began = time.time()
        more_c, more_r = embed_replies(pairs[len(chosen) :], args)
        chosen = more_c if not len(chosen) else np.concatenate([chosen, more_c])
        rejected = more_r if not len(rejected) else np.concatenate([rejected, more_r])
        seconds += time.time() - began
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, chosen=chosen, rejected=rejected, seconds=seconds)
    # seconds: the time embedding every cached pair took (summed over the calls that embedded them).
    return chosen[: len(pairs)], rejected[: len(pairs)], seconds * len(pairs) / len(chosen)


def embed_replies(pairs: list[dict], args):
    import numpy as np
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.model_cache import embedded_model_dir

    path = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    body = model.model
    body.layers = body.layers[: args.layer]  # the blocks above are never computed

    def ids(messages, generation_prompt):
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False
        )
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    items = []  # (token ids, number of reply tokens at the end)
    for p in pairs:
        prefix = len(ids(p["prompt"], True))
        for reply in (p["chosen"], p["rejected"]):
            full = ids(p["prompt"] + reply, False)
            items.append((full[-args.max_tokens :], min(len(full) - prefix, args.max_tokens)))
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    vectors = np.zeros((len(items), model.config.hidden_size), dtype=np.float32)
    batch = 16
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch), desc="embedding replies", unit="batch"):
            idx = order[start : start + batch]
            width = max(len(items[i][0]) for i in idx)
            input_ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            reply = torch.zeros((len(idx), width))
            for row, i in enumerate(idx):
                seq, n_reply = items[i]
                input_ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                reply[row, len(seq) - max(n_reply, 1) : len(seq)] = 1
            hidden = body(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
            pooled = (hidden * reply[..., None]).sum(1) / reply.sum(1, keepdim=True)
            vectors[idx] = pooled.numpy()
    return vectors[0::2], vectors[1::2]


if __name__ == "__main__":
    raise SystemExit(main())
