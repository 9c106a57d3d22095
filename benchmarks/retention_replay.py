"""Does replay keep what the model knew? Brand-voice SFT on the embedded model with and without replay.

    .venv/bin/python benchmarks/retention_replay.py [--replay-fraction 0.25] [--epochs 4] \
        [--ifeval-limit 60] [--ifeval-tokens 256] [--out benchmarks/results/retention_replay.json]

Two SFT runs that differ only in `data.replay`: the brand-voice recipe's first round
(recipes/brand_voice/sft_train.jsonl, the README's settings: LoRA, lr 3e-4, batch 6) alone, and the
same with general conversations mixed in at `--replay-fraction` of the examples (OASST's
best-ranked replies, data/preferences/oasst_en_100_tree.jsonl, Apache-2.0, format
preference-chosen). Then, with the two policies compared directly (paired, same prompts):

- `align evaluate retention POLICY_REPLAY --baseline POLICY_PLAIN`: IFEval on a seeded subset,
  strict and loose, prompt and instruction level, for both, with the paired difference;
- `align evaluate policy` on the 30 held-out brand prompts: the brand-voice score of both.

The base model's IFEval figure on the same subset comes from `--base-run` (an `align evaluate
retention` run with the same ifeval settings whose policy is the base, or whose baseline is, with
`--base-side baseline`: e.g. the main job's policy evaluated against its base) when given, so the
base is not generated again. Writes one JSON with the settings, every figure with its interval, and wall times; the run
directories stay under `--runs-dir` for inspection.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="starting model (a tiny local one for a smoke run)")
    ap.add_argument("--brand-tokens", type=int, default=160)
    ap.add_argument("--brand-prompts", type=int, default=30, help="a seeded sample of the 30 held-out brand prompts")
    ap.add_argument("--plain-run", help="reuse this SFT run (without replay) instead of training it")
    ap.add_argument("--replay-run", help="reuse this SFT run (with replay) instead of training it")
    ap.add_argument("--replay-path", default=str(DATA / "preferences" / "oasst_en_100_tree.jsonl"))
    ap.add_argument("--replay-format", default="preference-chosen")
    ap.add_argument("--replay-fraction", type=float, default=0.25)
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--ifeval-limit", type=int, default=60)
    ap.add_argument("--ifeval-tokens", type=int, default=256)
    ap.add_argument("--engine", default="hf", help="generation engine for both evaluations (hf | vllm | auto)")
    ap.add_argument("--base-run", help="an `align evaluate retention` run with the same ifeval settings")
    ap.add_argument(
        "--base-side",
        choices=["policy", "baseline"],
        default="policy",
        help="which model of --base-run is the base (baseline: a policy evaluated against its base)",
    )
    ap.add_argument("--runs-dir", default=str(REPO / "runs" / "retention_replay"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "retention_replay.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from align.cli import main as align
    from align.core import runs

    runs_dir = Path(args.runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    timings: dict[str, float] = {}

    def stage(label: str, argv: list[str]) -> dict:
        name = f"{label}-{stamp}"
        start = time.time()
        code = align([*argv, f"runs_dir={runs_dir}", f"name={name}"])
        timings[label] = round(time.time() - start, 1)
        if code != 0:
            raise SystemExit(f"{label}: `align {' '.join(argv)}` exited {code}")
        return runs.read_manifest(runs_dir / name)

    sft = [
        "sft",
        f"model={args.model}",
        f"data.train={REPO / 'recipes/brand_voice/sft_train.jsonl'}",
        f"max_length={args.max_length}",
        "training.learning_rate=3e-4",
        f"training.num_train_epochs={args.epochs}",
        "training.per_device_train_batch_size=6",
        "seed=0",
    ]
    plain = runs.read_manifest(args.plain_run) if args.plain_run else stage("sft-plain", sft)
    replay = (
        runs.read_manifest(args.replay_run)
        if args.replay_run
        else stage(
            "sft-replay",
            [
                *sft,
                f"data.replay.path={args.replay_path}",
                f"data.replay.format={args.replay_format}",
                f"data.replay.fraction={args.replay_fraction}",
                "data.replay.seed=0",
            ],
        )
    )
    retention = stage(
        "retention",
        [
            "evaluate",
            "retention",
            replay["path"],
            "--baseline",
            plain["path"],
            "--config",
            str(REPO / "configs/evaluate/retention.yaml"),
            f"engine={args.engine}",
            "drift.paths=[]",
            f"ifeval.limit={args.ifeval_limit}",
            f"ifeval.max_tokens={args.ifeval_tokens}",
            "vllm.lora=merge",
        ],
    )
    brand = stage(
        "brand",
        [
            "evaluate",
            "policy",
            replay["path"],
            f"baseline={plain['path']}",
            f"engine={args.engine}",
            f"brand.paths=[{REPO / 'recipes/brand_voice/prompts_eval.jsonl'}]",
            f"brand.max_prompts={args.brand_prompts}",
            f"brand_rubric={REPO / 'recipes/brand_voice/rubric.yaml'}",
            f"sampling.max_tokens={args.brand_tokens}",
            "vllm.lora=merge",
        ],
    )

    ifeval = retention["metrics"]["ifeval"]
    result = {
        "command": " ".join(sys.argv),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "sft": {
            name: {
                "run": m["path"],
                "examples": m["notes"]["data"]["examples_trained"],
                "wall_time_s": m.get("wall_time_s"),
                "config_training": m["config"].get("training"),
                "replay": m["notes"]["data"].get("replay"),
                "train_loss": m["metrics"].get("train_loss"),
                "steps": m["metrics"].get("global_step"),
            }
            for name, m in (("plain", plain), ("replay", replay))
        },
        "ifeval": {
            "prompts": retention["notes"]["ifeval"]["prompts"],
            "max_tokens": args.ifeval_tokens,
            "unscored": retention["notes"]["ifeval"]["unscored"],
            # The retention run's policy is the replay model and its baseline the plain one.
            **{
                level: {"replay": m["policy"], "plain": m["baseline"], "replay_minus_plain": m["difference"]}
                for level, m in ifeval.items()
            },
        },
        "brand_score": {
            "replay": brand["metrics"]["brand"]["brand_score"]["policy"],
            "plain": brand["metrics"]["brand"]["brand_score"]["baseline"],
            "replay_minus_plain": brand["metrics"]["brand"]["brand_score"]["difference"],
        },
        "refusal_rate_brand_prompts": {
            "replay": brand["metrics"]["brand"]["refusal_rate"]["policy"]["mean"],
            "plain": brand["metrics"]["brand"]["refusal_rate"]["baseline"]["mean"],
        },
        "wall_time_s": timings,
        "runs": {"retention": retention["path"], "brand": brand["path"]},
    }
    if args.base_run:
        base = runs.read_manifest(args.base_run)
        same = {k: base["config"]["ifeval"][k] for k in ("limit", "seed", "max_tokens")}
        if same != {"limit": args.ifeval_limit, "seed": 0, "max_tokens": args.ifeval_tokens}:
            raise SystemExit(
                f"--base-run {args.base_run} used ifeval {same}; this run uses limit {args.ifeval_limit}, "
                f"seed 0, max_tokens {args.ifeval_tokens}"
            )
        result["ifeval_base"] = {level: m[args.base_side] for level, m in base["metrics"]["ifeval"].items()}
        result["runs"]["base"] = base["path"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ifeval", "brand_score", "wall_time_s")}, indent=2))
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
