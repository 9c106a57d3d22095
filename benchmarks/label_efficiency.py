"""Does a label method reach the same held-out brand score with fewer labels? One DPO round per arm (issue 32, part 6).

    .venv/bin/python benchmarks/label_efficiency.py            # the full grid (a GPU, or a long CPU night)
    .venv/bin/python benchmarks/label_efficiency.py --quick    # budgets 16 and 64, seed 0, adversary team,
                                                               # majority vs Dawid-Skene (what fits a shared CPU)
    .venv/bin/python benchmarks/label_efficiency.py --budgets 16 --seeds 1 --teams adversary --arms majority dawid_skene

Every arm starts from the same policy (the embedded SmolLM2-135M-Instruct), spends a budget of N records (8, 16,
32, 64) labelled by a simulated team of known quality, trains one DPO round on the labels with the brand-voice
loop's DPO settings (recipes/brand_voice/loop.yaml: LoRA, beta 0.1, lr 2e-4, 2 epochs, batch 4, max_length 384),
and is scored by `align evaluate policy` on the recipe's held-out customer prompts (prompts_eval.jsonl, greedy, 160
new tokens): the brand score with its bootstrap interval and its paired difference against the start. The start is
evaluated once; every arm reuses its replies (`baseline_replies`).

Records: the recipe's candidate pairs of benchmarks/label_agreement.py (every pair of two different samples of
the embedded model on the training customer prompts; 288 records from 48 prompt rows). Votes come from
`align annotate simulate`'s own decision rule and labels from the pull's code, as in label_agreement.py
(the Argilla round trip is skipped). Teams: `noisy_biased` (two careful, noise 0.05, and one with noise 0.4 and
position bias 0.3) and `adversary` (two careful and one who always answers against the judge).

Arms, one factor changed at a time from `majority` (majority labels, random records, ties dropped):
- `dawid_skene`: the same records and votes, labels from the reliability estimate (pull label_model=dawid_skene)
  trained with `data.weighting=label_smoothing` (per-pair eps = 1 - p_chosen);
- `uncertainty`: half the budget random, a 4-member `align reward-ensemble` trained on those labels, the other
  half the records its members disagree on most (pairs selection=ensemble_disagreement, BALD), majority labels;
- `ties_kept`: majority labels on the same random records, tied records trained on with `data.ties=davidson`.
Random records are drawn with the seed, so `majority`, `dawid_skene` and `ties_kept` see the same records and
votes at a budget and seed: their differences are paired.

The JSON lists every arm that ran with its brand score, its difference against the start and its labels
(records, votes, usable pairs, ties), and every arm of the requested grid that did not run (`not_run`), so a
partial run says what it is. Per (team, budget, arm) over seeds: mean and t-interval of the brand score, and the
paired difference against `majority`. The plot shows brand score against budget per arm and team.
Departure from the issue: the safety recipe's refusal metrics are not measured here (the evaluation runs the
brand prompts only, to keep an arm to one short generation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from label_agreement import CANDIDATES, RUBRIC, make_records, pulled_rows, read_candidates, teams  # noqa: E402

from align.annotate.reliability import label_rows  # noqa: E402
from align.evaluation.brand_voice import BrandRubric  # noqa: E402

BUDGETS = (8, 16, 32, 64)
SEEDS = 3
TEAMS = ("noisy_biased", "adversary")
ARMS = {
    "majority": {"label_model": "majority", "selection": "random", "ties": "drop"},
    "dawid_skene": {"label_model": "dawid_skene", "selection": "random", "ties": "drop"},
    "uncertainty": {"label_model": "majority", "selection": "uncertainty", "ties": "drop"},
    "ties_kept": {"label_model": "majority", "selection": "random", "ties": "davidson"},
}
QUICK = {"budgets": [16, 64], "seeds": 1, "teams": ["adversary"], "arms": ["majority", "dawid_skene"]}
ENSEMBLE_MEMBERS = 4
ALIGN = [sys.executable, "-c", "import sys; from align.cli import main; sys.exit(main())"]
DPO = [
    "--config",
    "configs/dpo/default.yaml",
    "model=embedded",
    "max_length=384",
    "beta=0.1",
    "data.test_fraction=0.0",
    "data.check_upstream_split=false",
    "training.learning_rate=2.0e-4",
    "training.num_train_epochs=2",
    "training.per_device_train_batch_size=4",
    "training.gradient_accumulation_steps=1",
    "training.logging_steps=2",
]
EVALUATE = [
    "--config",
    "configs/evaluate/policy.yaml",
    "baseline=embedded",
    "harmful.paths=[]",
    "safe.paths=[]",
    "vllm.enforce_eager=true",
]


def align(*args: str) -> None:
    """One align command; its output goes to the log, a failure stops the benchmark."""
    print("$ align " + " ".join(args), flush=True)
    subprocess.run([*ALIGN, *args], cwd=ROOT, check=True)


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


def evaluate(policy: str, out: Path, name: str, baseline_replies: Path | None) -> dict:
    extra = [f"baseline_replies={baseline_replies}"] if baseline_replies else []
    align("evaluate", "policy", *EVALUATE, f"policy={policy}", f"runs_dir={out}", f"name={name}", *extra)
    brand = manifest(out / name)["metrics"]["brand"]["brand_score"]
    return {
        "policy": brand["policy"],
        "difference": brand["difference"],
        "run": str((out / name).relative_to(ROOT)) if (out / name).is_relative_to(ROOT) else str(out / name),
    }


def draw(records: list[dict], budget: int, seed: int, selection: str, disputed) -> list[dict]:
    """The records an arm spends its budget on: a seeded random draw, or half random and half chosen by
    `disputed(warm, rest, k)` (the same first half as the random draw of half the budget). The probe
    benchmark (label_efficiency_probe.py) draws with this too."""
    order = list(range(len(records)))
    random.Random(f"records:{seed}").shuffle(order)
    if selection == "random":
        return [records[i] for i in order[:budget]]
    warm = [records[i] for i in order[: budget // 2]]
    rest = [records[i] for i in order[budget // 2 :]]
    return warm + disputed(warm, rest, budget - len(warm))


def select(records: list[dict], budget: int, seed: int, arm: dict, team, work: Path) -> list[dict]:
    return draw(
        records, budget, seed, arm["selection"], lambda warm, rest, k: most_disputed(warm, rest, k, seed, team, work)
    )


def most_disputed(warm: list[dict], pool: list[dict], k: int, seed: int, team, work: Path) -> list[dict]:
    """The k records of `pool` a reward ensemble trained on `warm`'s majority labels disagrees on most (BALD)."""
    from align.models import load_reward_model, load_tokenizer, resolve_model
    from align.rollout.pairs import ensemble_disagreement
    from align.scoring import reward_members, reward_scores

    data = work / "warm.jsonl"
    rows = pulled_rows(warm, team, seed)
    label_rows(rows, "majority")
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    align(
        "reward-ensemble",
        "reward.config=configs/reward/default.yaml",
        "reward.model=embedded",
        f"reward.data.train={data}",
        "reward.data.test_fraction=0.0",
        "reward.data.check_upstream_split=false",
        f"bootstrap.members={ENSEMBLE_MEMBERS}",
        f"runs_dir={work}",
        "name=ensemble",
    )
    texts = sorted({(json.dumps(r["prompt"]), t) for r in pool for t in (r["response_a"], r["response_b"])})
    conversations = [json.loads(p) + [{"role": "assistant", "content": t.strip()}] for p, t in texts]
    per_member = []
    for member in reward_members(str(work / "ensemble")):
        source = resolve_model(member)
        tokenizer = load_tokenizer(source)
        model = load_reward_model(source, "float32", pad_token_id=tokenizer.pad_token_id)
        per_member.append(reward_scores(model, tokenizer, conversations, 8, 512, "ensemble member"))
    scores = {key: [m[i] for m in per_member] for i, key in enumerate(texts)}
    rng = random.Random(f"disputed:{seed}")
    ranked = sorted(
        pool,
        key=lambda r: (
            -ensemble_disagreement(
                scores[(json.dumps(r["prompt"]), r["response_a"])], scores[(json.dumps(r["prompt"]), r["response_b"])]
            ),
            rng.random(),
        ),
    )
    return ranked[:k]


def labels(records: list[dict], team, seed: int, arm: dict) -> tuple[list[dict], dict]:
    rows = pulled_rows(records, team, seed)
    for rec, row in zip(records, rows):
        row["prompt"] = rec["prompt"]
    notes = label_rows(rows, arm["label_model"])
    usable = sum(r["chosen"] is not None for r in rows)
    return rows, {
        "records": len(rows),
        "votes": sum(len(r["votes"]) for r in rows),
        "usable_pairs": usable,
        "ties": sum(r["majority"] == "tie" for r in rows),
        "reliability": notes["reliability"],
        "labels_changed_from_majority": notes["labels_changed_from_majority"],
    }


def run_arm(
    team_name: str, budget: int, seed: int, arm_name: str, records: list[dict], out: Path, start_eval: Path
) -> dict:
    arm = ARMS[arm_name]
    team = teams()[team_name]
    name = f"{team_name}-b{budget}-s{seed}-{arm_name}"
    work = out / f"{name}-work"
    saved = work / "arm.json"
    if saved.exists():  # a cut run resumes: an arm that finished is read back, not trained again
        return json.loads(saved.read_text(encoding="utf-8"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    chosen = select(records, budget, seed, arm, team, work)
    rows, spent = labels(chosen, team, seed, arm)
    data = work / "preferences.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    options = [f"data.ties={arm['ties']}"]
    if arm["label_model"] == "dawid_skene":
        options.append("data.weighting=label_smoothing")
    align("dpo", *DPO, f"data.train={data}", *options, f"runs_dir={out}", f"name={name}-dpo")
    result = evaluate(str(out / f"{name}-dpo"), out, f"{name}-eval", start_eval)
    arm_result = {
        "team": team_name,
        "budget": budget,
        "seed": seed,
        "arm": arm_name,
        **arm,
        "labels": spent,
        "dpo_options": options,
        "brand_score": result["policy"],
        "vs_start": result["difference"],
        "eval_run": result["run"],
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    saved.write_text(json.dumps(arm_result, indent=2) + "\n", encoding="utf-8")
    return arm_result


def interval(values: list[float]) -> dict:
    from scipy.stats import t as student_t

    mean = statistics.fmean(values)
    half = (
        student_t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
        if len(values) > 1
        else None
    )
    return {
        "mean": round(mean, 4),
        "ci_low": round(mean - half, 4) if half is not None else None,
        "ci_high": round(mean + half, 4) if half is not None else None,
        "n": len(values),
    }


def summarise(arms: list[dict]) -> list[dict]:
    """Per (team, budget, arm): brand score over seeds, and its paired difference against majority."""
    out = []
    keys = sorted({(a["team"], a["budget"], a["arm"]) for a in arms})
    for team, budget, arm in keys:
        mine = {
            a["seed"]: a["brand_score"]["mean"]
            for a in arms
            if (a["team"], a["budget"], a["arm"]) == (team, budget, arm)
        }
        base = {
            a["seed"]: a["brand_score"]["mean"]
            for a in arms
            if (a["team"], a["budget"], a["arm"]) == (team, budget, "majority")
        }
        row = {"team": team, "budget": budget, "arm": arm, "brand_score": interval(list(mine.values()))}
        paired = [mine[s] - base[s] for s in mine if s in base]
        if arm != "majority" and paired:
            row["minus_majority"] = interval(paired)
        out.append(row)
    return out


def plot(summary: list[dict], start: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    team_names = sorted({r["team"] for r in summary})
    fig, axes = plt.subplots(1, len(team_names), figsize=(5.5 * len(team_names), 4), squeeze=False)
    for ax, team in zip(axes[0], team_names):
        for arm in ARMS:
            rows = sorted((r for r in summary if r["team"] == team and r["arm"] == arm), key=lambda r: r["budget"])
            if not rows:
                continue
            x = [r["budget"] for r in rows]
            y = [r["brand_score"]["mean"] for r in rows]
            err = [
                [
                    m - (r["brand_score"]["ci_low"] if r["brand_score"]["ci_low"] is not None else m)
                    for m, r in zip(y, rows)
                ],
                [
                    (r["brand_score"]["ci_high"] if r["brand_score"]["ci_high"] is not None else m) - m
                    for m, r in zip(y, rows)
                ],
            ]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=arm)
        ax.axhline(start["mean"], color="grey", linestyle="--", label="start")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("label budget (records)")
        ax.set_ylabel("held-out brand score")
        ax.set_title(f"team: {team}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--teams", nargs="+", default=list(TEAMS), choices=list(teams()))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "label_efficiency")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_efficiency.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "label_efficiency.png")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from --out's JSON")
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: write the JSON and plot from the arms of the grid that finished (a cut run)",
    )
    args = parser.parse_args()
    if args.replot:
        data = json.loads(args.out.read_text(encoding="utf-8"))
        plot(data["summary"], data["start_brand_score"], args.plot)
        return
    if args.quick:
        args.budgets, args.seeds, args.teams, args.arms = (
            QUICK["budgets"],
            QUICK["seeds"],
            QUICK["teams"],
            QUICK["arms"],
        )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    records = make_records(read_candidates([CANDIDATES]), BrandRubric.load(RUBRIC))
    grid = [(t, b, s, a) for t in args.teams for b in args.budgets for s in range(args.seeds) for a in args.arms]
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    start_eval = args.runs_dir / "start-eval"
    if not (start_eval / "manifest.json").exists():
        evaluate("embedded", args.runs_dir, "start-eval", None)
    start = manifest(start_eval)["metrics"]["brand"]["brand_score"]["policy"]
    done: list[dict] = []
    data = {}
    if args.finished_only:
        grid = [c for c in grid if (args.runs_dir / f"{c[0]}-b{c[1]}-s{c[2]}-{c[3]}-work" / "arm.json").exists()]
    for i, (team, budget, seed, arm) in enumerate(grid):
        print(f"[{i + 1}/{len(grid)}] team {team}, budget {budget}, seed {seed}, arm {arm}", flush=True)
        done.append(run_arm(team, budget, seed, arm, records, args.runs_dir, start_eval))
        data = result(args, grid, done, start, len(records))
        args.out.write_text(
            json.dumps(data, indent=2) + "\n", encoding="utf-8"
        )  # after every arm: a cut run keeps its arms
        plot(data["summary"], start, args.plot)
    print(f"wrote {args.out} ({len(done)} arms)")


def result(args, grid, done: list[dict], start: dict, pool: int) -> dict:
    ran = {(a["team"], a["budget"], a["seed"], a["arm"]) for a in done}
    full = [(t, b, s, a) for t in TEAMS for b in BUDGETS for s in range(SEEDS) for a in ARMS]
    command = "python benchmarks/label_efficiency.py" + (
        " --quick"
        if args.quick
        else f" --budgets {' '.join(map(str, args.budgets))} --seeds {args.seeds} --teams {' '.join(args.teams)} "
        f"--arms {' '.join(args.arms)}"
    )
    return {
        "question": "held-out brand score after one DPO round from the embedded model, per label budget, for majority "
        "vs reliability-weighted labels, random vs uncertainty selection, ties dropped vs kept",
        "command": command,
        "start_brand_score": start,
        "records_in_pool": pool,
        "grid_requested": {"teams": args.teams, "budgets": args.budgets, "seeds": args.seeds, "arms": args.arms},
        "arms_run": done,
        "not_run": [{"team": t, "budget": b, "seed": s, "arm": a} for t, b, s, a in full if (t, b, s, a) not in ran],
        "summary": summarise(done),
        "complete": len(ran) == len(full),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(note="shared machine, no GPU"),
    }


def machine(note: str | None = None) -> dict:
    """What the result JSON records of the machine it ran on (the probe benchmark uses it too)."""
    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    return {**out, "note": note} if note else out


if __name__ == "__main__":
    main()
