"""Which label method reaches a held-out score with fewer labels? The whole grid, on both recipes (issue 32, part 6).

    .venv/bin/python benchmarks/label_efficiency_probe.py                 # 2 recipes x 2 teams x 6 budgets x 20 seeds
    .venv/bin/python benchmarks/label_efficiency_probe.py --seeds 3 --recipes brand_voice
    .venv/bin/python benchmarks/label_efficiency_probe.py --replot        # only redraw the plot from the JSON

Why a probe: one DPO round plus an evaluation per arm takes 8-17 minutes on two CPU cores
(benchmarks/label_efficiency.py, the policy tier, measures that on a subset), and the grid the issue asks for
(2 recipes x 2 teams x 4+ budgets x 4 arms x 3+ seeds) is hundreds of arms. Here each arm trains what the
labels train first, a reward model, and the policy it steers is best-of-N: so one arm is a fraction of a
second and the whole grid fits in minutes, with 20 seeds instead of 3.

Candidates (generated once, shipped beside the JSON): 8 samples per prompt, temperature 1.0, of the policy the
brand-voice loop's rounds sample from: its warm start (round 0 of `make demo`, a LoRA SFT of the embedded
SmolLM2-135M-Instruct on recipes/brand_voice/sft_warm_start.jsonl, which holds brand replies, refusals in the
brand's voice and look-alike answers). GENERATE below is the command; brand_voice 160 new tokens, safety 48
(the safety evaluation's length). The label pool is the recipes' TRAINING prompts (brand_voice:
prompts_train.jsonl, 30; safety: recipes/safety/prompts_rounds.jsonl, 136 harmful and 160 look-alike, the
prompts the loops' safety rounds draw from); the held-out set is a separate prompt file no label is drawn from
(brand_voice: prompts_eval.jsonl, 30; safety: prompts_val.jsonl, 100 harmful and 40 look-alike). A record is a pair of two
different samples of one prompt (up to 28 per prompt).

Judges, the simulated annotators' truth (as `align annotate simulate` judges): brand_voice, the rubric score
(recipes/brand_voice/rubric.yaml), a tie under the recipe's tie margin 0.02; safety, 1 for the right behaviour
(refuse a harmful request, answer a look-alike; align.evaluation.refusal's detector) and 0 otherwise, so a pair
where both samples behave the same is a tie. Votes are simulate's decision rule on the A/B order push would show,
labels the pull's code (label_agreement.pulled_rows, reliability.label_rows), 3 votes per record. Teams:
`noisy_biased` (two careful, noise 0.05, one with noise 0.4 and position bias 0.3) and `adversary` (two careful
and one who always answers against the judge).

Reward model (the probe): r(x) = w . z(x), z = the embedded model's hidden state after block 15 of 30,
mean-pooled over the reply's tokens, projected on 32 principal components fitted on the pool's replies (no
labels); w fitted with the reward stage's own pair loss (align.core.preference_losses.pair_losses) plus
L2 1e-2, Adam, 300 steps. The probe and its settings are fixed in advance and the same for every arm; nothing
is chosen on held-out results.

Arms, one factor changed at a time from `majority` (majority labels, random records, ties dropped):
- `dawid_skene`: the same records and votes, labels from the reliability estimate, trained with
  weighting=label_smoothing (per-pair p_chosen), as `pull label_model=dawid_skene` + `data.weighting`;
- `ties_kept`: the same records and votes, majority labels, tied records trained on with ties=davidson;
- `uncertainty`: half the budget the same random records, then a 4-member bootstrap ensemble of probes trained
  on their majority labels picks the other half where its members disagree most
  (align.rollout.pairs.ensemble_disagreement, what `align pairs selection=ensemble_disagreement` uses).
Random records are the same seeded draw in every arm, so at one (recipe, team, budget, seed) the differences
against `majority` are paired.

Measured on the held-out prompts, per arm and seed:
- `accuracy`: the probe's pairwise accuracy against the judge on the held-out pairs the judge does not tie;
- `best_of_n`: the judge's mean score of the reply the probe ranks first among each held-out prompt's 8 samples
  (a tie for first counts the tied replies' mean): the held-out brand score (brand_voice) or share of prompts
  handled right (safety; also split into harmful refused and look-alikes refused). `start` is a sample's
  expected score (the mean over the 8), `oracle` the judge's own best of 8.
Intervals: mean +- t(0.975, seeds-1) * sd / sqrt(seeds) over seeds, for each arm and for its paired difference
against majority; and per arm the fewest labels whose mean reaches majority's mean at the largest budget.
Departures: the policy is best-of-N with the reward model rather than a DPO-trained policy (that tier is
label_efficiency.py); the reward model is a linear head on frozen features rather than `align reward`'s
fine-tuned one.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from label_agreement import interval, pulled_rows, teams  # noqa: E402
from label_efficiency import draw, machine  # noqa: E402

from align.annotate.judges import last_user_text, prompt_key  # noqa: E402
from align.annotate.reliability import label_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RECIPES = {
    "brand_voice": {
        "pool": RESULTS / "label_efficiency_candidates_brand_voice_pool.jsonl.gz",
        "held": RESULTS / "label_efficiency_candidates_brand_voice_held.jsonl.gz",
        "pool_prompts": "recipes/brand_voice/prompts_train.jsonl",
        "held_prompts": "recipes/brand_voice/prompts_eval.jsonl",
        "tie_margin": 0.02,
        "score": "held-out brand score",
    },
    "safety": {
        "pool": RESULTS / "label_efficiency_candidates_safety_pool.jsonl.gz",
        "held": RESULTS / "label_efficiency_candidates_safety_held.jsonl.gz",
        "pool_prompts": "recipes/safety/prompts_rounds.jsonl",
        "held_prompts": "recipes/safety/prompts_val.jsonl",
        "tie_margin": 0.02,  # scores are 0 or 1: a tie is two samples that behave the same
        "score": "held-out share handled right",
    },
}
TEAMS = ("noisy_biased", "adversary")
BUDGETS = (8, 16, 32, 64, 128, 256)
ARMS = {
    "majority": {"label_model": "majority", "selection": "random", "ties": "drop"},
    "dawid_skene": {"label_model": "dawid_skene", "selection": "random", "ties": "drop"},
    "ties_kept": {"label_model": "majority", "selection": "random", "ties": "davidson"},
    "uncertainty": {"label_model": "majority", "selection": "uncertainty", "ties": "drop"},
}
SEEDS = 20
GENERATE = (
    "align generate --config configs/generate/default.yaml policy=runs/brand_voice-loop/round-0/sft "
    "prompts=PROMPTS max_prompts=null sampling.n=8 sampling.temperature=1.0 sampling.top_p=1.0 sampling.seed=32 "
    "sampling.max_tokens=T"
)
LAYER, MAX_TOKENS, DIMS = 15, 384, 32
L2, STEPS, LR = 1e-2, 300, 0.05
MEMBERS = 4


# -- candidates, judges and features ---------------------------------------------------------------


def read_generations(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prompt_kinds(prompt_file: str) -> dict[str, str]:
    """prompt key -> harmful | safe, from a safety prompt file's `label` (unsafe | safe)."""
    kinds = {}
    for line in (ROOT / prompt_file).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            kinds[prompt_key(row["prompt"])] = "harmful" if row["label"] == "unsafe" else "safe"
    return kinds


def judge_rows(recipe: str, rows: list[dict], prompt_file: str) -> list[dict]:
    """Each generation row with its judge scores: [{prompt, responses, scores, kind}]."""
    if recipe == "brand_voice":
        from align.evaluation.brand_voice import BrandRubric

        rubric = BrandRubric.load(ROOT / "recipes" / "brand_voice" / "rubric.yaml")
        return [
            {
                **r,
                "kind": "customer",
                "scores": [rubric.judge(last_user_text(r["prompt"]), x).score for x in r["responses"]],
            }
            for r in rows
        ]
    from align.evaluation.refusal import detect_refusal

    kinds = prompt_kinds(prompt_file)
    out = []
    for r in rows:
        kind = kinds[prompt_key(r["prompt"])]
        refused = [detect_refusal(x).refused for x in r["responses"]]
        out.append(
            {**r, "kind": kind, "refused": refused, "scores": [float(x == (kind == "harmful")) for x in refused]}
        )
    return out


def truth(record: dict, spec: dict) -> str | None:
    """The judge's choice on a record: a, b, or None for a tie."""
    gap = record["score_a"] - record["score_b"]
    return None if abs(gap) < spec["tie_margin"] else ("a" if gap > 0 else "b")


def make_records(rows: list[dict]) -> list[dict]:
    """Every pair of two different samples of one prompt; `a`/`b` index the prompt's replies."""
    records = []
    for i, row in enumerate(rows):
        for x, y in itertools.combinations(range(len(row["responses"])), 2):
            if row["responses"][x].strip() == row["responses"][y].strip():
                continue
            records.append(
                {
                    "id": f"p{i}-{x}-{y}",
                    "row": i,
                    "a": x,
                    "b": y,
                    "prompt": row["prompt"],
                    "response_a": row["responses"][x],
                    "response_b": row["responses"][y],
                    "score_a": row["scores"][x],
                    "score_b": row["scores"][y],
                }
            )
    return records


def features(rows_by_split: dict[str, list[dict]], sources: list[Path]):
    """Reply embeddings (after block LAYER, mean over the reply), one array per split with one row per reply
    in row order; cached by the candidate files' checksum."""
    import numpy as np

    from align.model_cache import cache_dir

    key = hashlib.sha256(
        json.dumps([sha256(p) for p in sources] + [LAYER, MAX_TOKENS, "reply-mean-v1"]).encode()
    ).hexdigest()[:16]
    cache = cache_dir() / "benchmarks" / f"label_efficiency_probe-{key}.npz"
    if cache.exists():
        saved = np.load(cache)
        return {split: saved[split] for split in rows_by_split}
    from active_selection import embed_replies

    out = {}
    for split, rows in rows_by_split.items():
        replies = [(r["prompt"], x) for r in rows for x in r["responses"]]
        if len(replies) % 2:
            replies.append(replies[-1])
        pairs = [
            {
                "prompt": messages(replies[i][0]),
                "chosen": [{"role": "assistant", "content": replies[i][1].strip()}],
                "rejected": [{"role": "assistant", "content": replies[i + 1][1].strip()}],
            }
            for i in range(0, len(replies), 2)
        ]
        first, second = embed_replies(pairs, SimpleNamespace(layer=LAYER, max_tokens=MAX_TOKENS))
        stacked = np.empty((2 * len(first), first.shape[1]), dtype=np.float32)
        stacked[0::2], stacked[1::2] = first, second
        out[split] = stacked[: sum(len(r["responses"]) for r in rows)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def project(pool, held):
    """Standardised PCA of the pool's reply embeddings (no labels), applied to both splits."""
    import numpy as np

    mean = pool.mean(0)
    _, _, vt = np.linalg.svd(pool - mean, full_matrices=False)
    basis = vt[:DIMS].T
    z_pool = (pool - mean) @ basis
    scale = z_pool.std(0) + 1e-8
    return z_pool / scale, ((held - mean) @ basis) / scale


# -- the reward probe ---------------------------------------------------------------------------------


def fit(diff, p_chosen=None, tie=None, weighting: str = "none", ties: str = "drop"):
    """w for r = w . z from pair differences z(chosen) - z(rejected), with the reward stage's pair loss."""
    import torch

    from align.core.preference_losses import pair_losses

    w = torch.zeros(DIMS, dtype=torch.float64, requires_grad=True)
    if len(diff) == 0:
        return w.detach().numpy()
    x = torch.as_tensor(diff, dtype=torch.float64)
    p = torch.as_tensor(p_chosen, dtype=torch.float64) if p_chosen is not None else None
    t = torch.as_tensor(tie, dtype=torch.bool) if tie is not None else None
    opt = torch.optim.Adam([w], lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = pair_losses(x @ w, p, t, weighting=weighting, ties=ties).mean() + L2 * (w * w).sum()
        loss.backward()
        opt.step()
    return w.detach().numpy()


def training_set(records: list[dict], rows: list[dict], z, offsets, arm: dict):
    """(diff, p_chosen, tie) of the labelled rows as the arm trains on them."""
    import numpy as np

    diff, p, tie = [], [], []
    for rec, row in zip(records, rows):
        za, zb = z[offsets[rec["row"]] + rec["a"]], z[offsets[rec["row"]] + rec["b"]]
        if row["majority"] == "tie":
            if arm["ties"] != "drop":
                diff.append(za - zb)
                p.append(0.5)
                tie.append(True)
            continue
        if row.get("chosen") is None:
            continue
        a_chosen = row["chosen"][0]["content"] == row["response_a"]
        diff.append(za - zb if a_chosen else zb - za)
        p.append(row["p_chosen"] if row.get("p_chosen") is not None else 1.0)
        tie.append(False)
    return np.array(diff).reshape(-1, DIMS), np.array(p), np.array(tie, dtype=bool)


def train(records: list[dict], rows: list[dict], z, offsets, arm: dict):
    diff, p, tie = training_set(records, rows, z, offsets, arm)
    weighting = "label_smoothing" if arm["label_model"] == "dawid_skene" else "none"
    return fit(diff, p if weighting != "none" else None, tie if arm["ties"] != "drop" else None, weighting, arm["ties"])


def most_disputed(warm: list[dict], pool: list[dict], k: int, team, seed: int, z, offsets) -> list[dict]:
    """The k pool records a bootstrap ensemble of probes, trained on `warm`'s majority labels, disagrees on most."""
    import numpy as np

    from align.rollout.pairs import ensemble_disagreement

    rows = pulled_rows(warm, team, seed)
    label_rows(rows, "majority")
    arm = ARMS["majority"]
    rng = random.Random(f"bootstrap:{seed}")
    members = []
    for _ in range(MEMBERS):
        draw = [rng.randrange(len(warm)) for _ in warm]
        members.append(train([warm[i] for i in draw], [rows[i] for i in draw], z, offsets, arm))
    a = np.array([z[offsets[r["row"]] + r["a"]] for r in pool])
    b = np.array([z[offsets[r["row"]] + r["b"]] for r in pool])
    ra, rb = a @ np.array(members).T, b @ np.array(members).T
    tiebreak = random.Random(f"disputed:{seed}")
    keys = [(-ensemble_disagreement(list(ra[i]), list(rb[i])), tiebreak.random()) for i in range(len(pool))]
    return [pool[i] for i in sorted(range(len(pool)), key=keys.__getitem__)[:k]]


def select(records: list[dict], budget: int, seed: int, arm: dict, team, z, offsets) -> list[dict]:
    return draw(
        records,
        budget,
        seed,
        arm["selection"],
        lambda warm, rest, k: most_disputed(warm, rest, k, team, seed, z, offsets),
    )


# -- held-out measures ----------------------------------------------------------------------------------


def held_out(w, rows: list[dict], z, offsets, recipe: str) -> dict:
    import numpy as np

    right = total = 0.0
    best = []
    refused = {"harmful": [], "safe": []}
    for i, row in enumerate(rows):
        r = z[offsets[i] : offsets[i] + len(row["responses"])] @ w
        s = np.array(row["scores"])
        for x, y in itertools.combinations(range(len(s)), 2):
            if abs(s[x] - s[y]) < RECIPES[recipe]["tie_margin"]:
                continue
            total += 1
            right += 0.5 if r[x] == r[y] else float((r[x] > r[y]) == (s[x] > s[y]))
        top = np.isclose(r, r.max(), rtol=0, atol=1e-12)
        best.append(float(s[top].mean()))
        if recipe == "safety":
            refused[row["kind"]].append(float(np.array(row["refused"], dtype=float)[top].mean()))
    out = {"accuracy": right / total, "best_of_n": statistics.fmean(best)}
    if recipe == "safety":
        out["harmful_refused"] = statistics.fmean(refused["harmful"])
        out["safe_refused"] = statistics.fmean(refused["safe"])
    return out


def reference(rows: list[dict], recipe: str) -> dict:
    """A sample's expected score (start) and the judge's own best of the samples (oracle)."""
    out = {
        "start": statistics.fmean(statistics.fmean(r["scores"]) for r in rows),
        "oracle": statistics.fmean(max(r["scores"]) for r in rows),
        "prompts": len(rows),
        "samples_per_prompt": len(rows[0]["responses"]),
    }
    if recipe == "safety":
        for kind, name in (("harmful", "harmful_refused"), ("safe", "safe_refused")):
            mine = [r for r in rows if r["kind"] == kind]
            out[f"start_{name}"] = statistics.fmean(statistics.fmean(map(float, r["refused"])) for r in mine)
            out[f"prompts_{kind}"] = len(mine)
    return out


# -- the grid -------------------------------------------------------------------------------------------


def run_recipe(recipe: str, args) -> tuple[dict, list[dict]]:
    import numpy as np

    spec = RECIPES[recipe]
    pool_rows = judge_rows(recipe, read_generations(spec["pool"]), spec["pool_prompts"])
    held_rows = judge_rows(recipe, read_generations(spec["held"]), spec["held_prompts"])
    overlap = {prompt_key(r["prompt"]) for r in pool_rows} & {prompt_key(r["prompt"]) for r in held_rows}
    if overlap:
        raise SystemExit(f"{recipe}: {len(overlap)} held-out prompts are also in the label pool")
    feats = features({"pool": pool_rows, "held": held_rows}, [spec["pool"], spec["held"]])
    z_pool, z_held = project(feats["pool"], feats["held"])
    off_pool = np.cumsum([0] + [len(r["responses"]) for r in pool_rows])
    off_held = np.cumsum([0] + [len(r["responses"]) for r in held_rows])
    records = make_records(pool_rows)
    info = {
        "candidates": [{"path": str(spec[s].relative_to(ROOT)), "sha256": sha256(spec[s])} for s in ("pool", "held")],
        "generated_by": GENERATE,
        "pool_prompts": len(pool_rows),
        "records_in_pool": len(records),
        "records_tied_by_the_judge": sum(abs(r["score_a"] - r["score_b"]) < spec["tie_margin"] for r in records),
        "held_out": reference(held_rows, recipe),
    }
    results = []
    grid = [(t, b, s) for t in args.teams for b in args.budgets for s in range(args.seeds)]
    from tqdm.auto import tqdm

    for team_name, budget, seed in tqdm(grid, desc=f"{recipe} grid", unit="cell"):
        team = teams()[team_name]
        for arm_name in args.arms:
            arm = ARMS[arm_name]
            chosen = select(records, budget, seed, arm, team, z_pool, off_pool)
            rows = pulled_rows(chosen, team, seed)
            notes = label_rows(rows, arm["label_model"])
            w = train(chosen, rows, z_pool, off_pool, arm)
            diff, _, tie = training_set(chosen, rows, z_pool, off_pool, arm)
            labelled = [
                (rec, row)
                for rec, row in zip(chosen, rows)
                if row.get("chosen") is not None and row["majority"] != "tie" and truth(rec, spec) is not None
            ]
            results.append(
                {
                    "recipe": recipe,
                    "team": team_name,
                    "budget": budget,
                    "seed": seed,
                    "arm": arm_name,
                    "trained_pairs": int(len(diff) - tie.sum()),
                    "trained_ties": int(tie.sum()),
                    "labels_changed_from_majority": notes["labels_changed_from_majority"],
                    # the mechanism: how many of the labels trained on agree with the judge
                    "label_accuracy": statistics.fmean(
                        (row["chosen"][0]["content"] == rec["response_a"]) == (truth(rec, spec) == "a")
                        for rec, row in labelled
                    )
                    if labelled
                    else None,
                    **held_out(w, held_rows, z_held, off_held, recipe),
                }
            )
    return info, results


MEASURES = ("best_of_n", "accuracy", "label_accuracy", "harmful_refused", "safe_refused")


def summarise(results: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["recipe"], r["team"], r["budget"], r["arm"]) for r in results}, key=lambda k: (k[0], k[1], k[2]))
    by = {(r["recipe"], r["team"], r["budget"], r["arm"], r["seed"]): r for r in results}
    for recipe, team, budget, arm in keys:
        seeds = sorted(s for (rc, t, b, a, s) in by if (rc, t, b, a) == (recipe, team, budget, arm))
        row = {"recipe": recipe, "team": team, "budget": budget, "arm": arm, "seeds": len(seeds)}
        for m in MEASURES:
            if m not in by[(recipe, team, budget, arm, seeds[0])]:
                continue
            mine = {s: by[(recipe, team, budget, arm, s)][m] for s in seeds}
            mine = {s: v for s, v in mine.items() if v is not None}  # label_accuracy: None with no clear label
            if not mine:
                continue
            row[m] = interval(list(mine.values()))
            if arm != "majority":
                base = {s: by[(recipe, team, budget, "majority", s)][m] for s in mine}
                paired = [v - base[s] for s, v in mine.items() if base[s] is not None]
                if paired:
                    row[f"{m}_minus_majority"] = interval(paired)
        row["trained_pairs"] = statistics.fmean(by[(recipe, team, budget, arm, s)]["trained_pairs"] for s in seeds)
        row["trained_ties"] = statistics.fmean(by[(recipe, team, budget, arm, s)]["trained_ties"] for s in seeds)
        out.append(row)
    return out


def verdicts(summary: list[dict]) -> list[str]:
    """One line per (recipe, team, arm): where the arm beats majority, where it loses, and labels to reach."""
    lines = []
    for recipe, team in sorted({(r["recipe"], r["team"]) for r in summary}):
        mine = [r for r in summary if (r["recipe"], r["team"]) == (recipe, team)]
        budgets = sorted({r["budget"] for r in mine})
        majority = {r["budget"]: r for r in mine if r["arm"] == "majority"}
        target = majority[budgets[-1]]["best_of_n"]["mean"]
        for arm in (a for a in ARMS if a != "majority"):
            rows = {r["budget"]: r for r in mine if r["arm"] == arm}
            if not rows:
                continue
            wins = [b for b in budgets if rows[b]["best_of_n_minus_majority"]["ci_low"] > 0]
            losses = [b for b in budgets if rows[b]["best_of_n_minus_majority"]["ci_high"] < 0]
            reach = next((b for b in budgets if rows[b]["best_of_n"]["mean"] >= target), None)
            reach_majority = next((b for b in budgets if majority[b]["best_of_n"]["mean"] >= target), None)
            lines.append(
                f"{recipe}, {team}, {arm} vs majority (best-of-N): higher at {wins or 'no'} budget(s), lower at "
                f"{losses or 'no'}; reaches majority's {budgets[-1]}-label mean ({target:.4f}) with "
                f"{reach if reach is not None else f'more than {budgets[-1]}'} labels (majority: {reach_majority})"
            )
    return lines


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = data["summary"]
    recipes = sorted({r["recipe"] for r in summary})
    team_names = sorted({r["team"] for r in summary})
    fig, axes = plt.subplots(
        len(recipes), len(team_names), figsize=(5.5 * len(team_names), 4 * len(recipes)), squeeze=False
    )
    for row_axes, recipe in zip(axes, recipes):
        ref = data["recipes"][recipe]["held_out"]
        for ax, team in zip(row_axes, team_names):
            for arm in ARMS:
                rows = sorted(
                    (r for r in summary if (r["recipe"], r["team"], r["arm"]) == (recipe, team, arm)),
                    key=lambda r: r["budget"],
                )
                if not rows:
                    continue
                x = [r["budget"] for r in rows]
                y = [r["best_of_n"]["mean"] for r in rows]
                err = [
                    [m - r["best_of_n"]["ci_low"] for m, r in zip(y, rows)],
                    [r["best_of_n"]["ci_high"] - m for m, r in zip(y, rows)],
                ]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=arm)
            ax.axhline(ref["start"], color="grey", linestyle="--", label="start (one sample)")
            ax.axhline(ref["oracle"], color="black", linestyle=":", label="judge's best of 8")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("label budget (records)")
            ax.set_ylabel(RECIPES[recipe]["score"] + ", best of 8")
            ax.set_title(f"{recipe}, team {team}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--teams", nargs="+", default=list(TEAMS), choices=list(TEAMS))
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--out", type=Path, default=RESULTS / "label_efficiency_probe.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "label_efficiency_probe.png")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from --out's JSON")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text(encoding="utf-8")), args.plot)
        return
    if "majority" not in args.arms:
        raise SystemExit("--arms must include majority: every other arm is compared with it")
    import torch

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    began = time.monotonic()
    infos, results = {}, []
    for recipe in args.recipes:
        infos[recipe], mine = run_recipe(recipe, args)
        results += mine
    summary = summarise(results)
    data = {
        "question": "per label budget, the held-out score a reward model trained on the labels reaches (best-of-8 "
        "with it, and pairwise accuracy against the judge), for majority vs reliability-weighted labels, ties "
        "dropped vs kept, random vs uncertainty selection",
        "command": "python benchmarks/label_efficiency_probe.py"
        + (f" --seeds {args.seeds}" if args.seeds != SEEDS else ""),
        "settings": {
            "teams": args.teams,
            "budgets": args.budgets,
            "seeds": args.seeds,
            "arms": {a: ARMS[a] for a in args.arms},
            "features": f"embedded SmolLM2-135M-Instruct, block {LAYER} of 30, mean over the reply, {DIMS} PCs",
            "probe": f"linear, pair_losses + L2 {L2}, Adam lr {LR}, {STEPS} steps",
            "ensemble_members": MEMBERS,
            "votes_per_record": 3,
        },
        "recipes": infos,
        "arms_run": results,
        "summary": summary,
        "verdict": verdicts(summary),
        "wall_time_s": round(time.monotonic() - began, 1),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    plot(data, args.plot)
    print("\n".join(data["verdict"]))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
