"""Seconds per step of `align ppo` for each algorithm (and PPO's rollout engine), split into
generation, scoring and training.

    .venv/bin/python benchmarks/online_rl.py --reward-model RUN [--model embedded] [--steps 3]
        [--algorithms ppo rloo grpo] [--rollouts hf vllm] [--responses-per-step 8] [--group-size 2]
        [--set KEY=VALUE ...]
        [--prompts FILE] [--prompts-used N] [--eval-prompts N] [--runs-dir DIR]
        [--out benchmarks/results/online_rl.json]

Runs the stage itself (`align.stages.ppo.run`) once per algorithm at small CPU settings (8 responses
of up to 32 tokens per step unless `--responses-per-step` says otherwise, 4 prompts x 2 for
RLOO/GRPO, 1 per prompt for PPO) on the OASST prompts
(or `--prompts`; `--set eval.path=FILE` takes the held-out prompts from a file of their own),
and reads the per-step timings each run logs to metrics.jsonl: generation (`generate`), scoring (the
reward model), training (everything else: log-prob and value forwards, the update). Also reported:
the reward on the first and last step, the KL, and the held-out reward of policy vs reference.

PPO runs once per engine in `--rollouts` (`hf`: transformers' `generate`; `vllm`: one vLLM engine for
the run, in eager mode since these runs are short, fed the adapter's weights each step as
`vllm.lora=auto` says), one after the other in this process, so the engines are compared under the
same conditions; the engine's start-up is reported apart (`engine_start_s`, not in any step).
RLOO and GRPO generate through TRL's trainers (transformers here: TRL's vLLM modes need a GPU).
The 1-minute load average before and after each run is recorded: compare figures only within one
run, and only when the load stayed put.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.core import runs
from align.core.config import load_config
from align.stages import ppo

PROMPTS = Path(__file__).resolve().parents[1] / "data" / "instructions" / "oasst_prompts_en_250.jsonl"


def measure(algorithm: str, rollout: str | None, args, runs_dir: Path) -> dict:
    engine = {None: [], "hf": ["rollout=hf"], "vllm": ["rollout=vllm", "vllm.enforce_eager=true"]}[rollout]
    overrides = [
        *engine,
        f"algorithm={algorithm}",
        f"model={args.model}",
        f"reward_model={args.reward_model}",
        f"prompts={args.prompts}",
        f"runs_dir={runs_dir}",
        f"steps={args.steps}",
        f"batch_size={args.responses_per_step}",
        f"num_generations={1 if algorithm == 'ppo' else args.group_size}",
        f"max_new_tokens={args.max_new_tokens}",
        "max_length=256",
        f"max_prompts={args.prompts_used}",
        f"eval.prompts={args.eval_prompts}",
        f"eval.max_new_tokens={args.max_new_tokens}",
        "ppo.ppo_epochs=2",
        *args.set,
    ]
    load_before = os.getloadavg()[0]
    start = time.time()
    manifest = ppo.run(load_config(ppo.Config, None, overrides))
    wall = time.time() - start
    rollout_record = runs.read_manifest(manifest["path"])["notes"]["rollout"]
    lines = [json.loads(x) for x in (Path(manifest["path"]) / runs.METRICS).read_text().splitlines()]
    steps = [x for x in lines if "time_generation" in x]
    split = {k: sum(s[k] for s in steps) / len(steps) for k in ("time_generation", "time_scoring", "time_training")}
    per_step = sum(split.values())
    lengths = [
        s["response_length"] if "response_length" in s else s["completions/mean_length"] for s in steps
    ]  # PPO | TRL
    metrics = manifest["metrics"]
    return {
        "run": manifest["path"] if args.runs_dir else None,
        "rollout": rollout_record["engine"],
        "engine_start_s": rollout_record.get("start_s"),
        "policy_update": rollout_record.get("policy_update"),
        "steps": len(steps),
        "seconds_per_step": round(per_step, 2),
        "generation_s": round(split["time_generation"], 2),
        "scoring_s": round(split["time_scoring"], 2),
        "training_s": round(split["time_training"], 2),
        "generation_share": round(split["time_generation"] / per_step, 3),
        # Engines sample different responses: compare generation per new token, not only per step.
        "response_length": round(sum(lengths) / len(lengths), 1),
        "generation_tokens_per_s": round(
            sum(lengths) * args.responses_per_step / sum(s["time_generation"] for s in steps), 1
        ),
        "reward_first_step": steps[0].get("reward"),
        "reward_last_step": steps[-1].get("reward"),
        "kl_last_step": steps[-1].get("kl"),
        "held_out_policy_reward": metrics.get("rm_policy_mean_reward"),
        "held_out_reference_reward": metrics.get("rm_reference_mean_reward"),
        "held_out_gain": metrics.get("rm_mean_gain"),
        "held_out_gain_ci95": [metrics.get("rm_mean_gain_ci_low"), metrics.get("rm_mean_gain_ci_high")],
        "held_out_win_rate": metrics.get("rm_policy_win_rate"),
        "held_out_prompts": metrics.get("rm_eval_prompts"),
        "wall_time_s": round(wall, 1),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reward-model", required=True, help="an `align reward` run on the same base as --model")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--prompts", default=str(PROMPTS))
    ap.add_argument("--prompts-used", type=int, default=64)
    ap.add_argument("--eval-prompts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--algorithms", nargs="+", default=list(ppo.ALGORITHMS), choices=ppo.ALGORITHMS)
    ap.add_argument(
        "--rollouts",
        nargs="+",
        default=["hf"],
        choices=["hf", "vllm"],
        help="PPO's rollout engines, each run in turn (RLOO/GRPO generate through TRL)",
    )
    ap.add_argument(
        "--responses-per-step",
        type=int,
        default=8,
        help="responses sampled per step (the stage's batch_size; default 8)",
    )
    ap.add_argument(
        "--group-size",
        type=int,
        default=2,
        help="responses per prompt for RLOO/GRPO (default 2: 4 prompts x 2 per step)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an `align ppo` override for every run (repeatable), e.g. training.scale_rewards=batch",
    )
    ap.add_argument(
        "--runs-dir", default=None, help="keep the runs here (default: a temporary directory, removed at the end)"
    )
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "online_rl.json"))
    args = ap.parse_args()

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="align-bench-rl-") as tmp:
        runs_dir = Path(args.runs_dir or tmp)
        for algorithm in args.algorithms:
            for rollout in args.rollouts if algorithm == "ppo" else [None]:
                result = measure(algorithm, rollout, args, runs_dir)
                results.setdefault(algorithm, {})[result["rollout"]] = result
                print(algorithm, json.dumps(result), flush=True)
    report = {
        "benchmark": "online_rl",
        "settings": {
            "model": args.model,
            "reward_model": args.reward_model,
            "prompts": args.prompts,
            "steps": args.steps,
            "prompts_used": args.prompts_used,
            "eval_prompts": args.eval_prompts,
            "responses_per_step": args.responses_per_step,
            "max_new_tokens": args.max_new_tokens,
            "ppo_epochs": 2,
            "ppo_rollouts": args.rollouts,
            "vllm": "eager, vllm.lora=auto, defaults otherwise",
            "group_size": args.group_size,
            "overrides": args.set,
        },
        "host": {"platform": platform.platform(), "python": platform.python_version()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
