"""The main job's reward stage at the settings it had before align's faster training against the
shipped ones, back to back on one SFT run (before, after, before), each its own process.

    .venv/bin/python benchmarks/demo_hh_reward_before_after.py --sft RUNS/hh-harmless-.../1-sft \
        [--order before,after,before] [--output benchmarks/results/demo_hh_reward_before_after_cpu.json]

"after" is `recipes/hh_harmless/reward.yaml` as shipped; "before" is the same file with the settings
of 2026-11-23: 128 pairs that fit 192 tokens (longer ones left out), random order, no prefix sharing,
gradient checkpointing on, every block trained. Writes, per run: pairs and tokens trained, training
and stage wall time, tokens/s, peak RSS of the process; and the after/before ratios against the mean
of the before runs. The held-out accuracy of each run is not printed or written: compare models on
the same pairs with `align evaluate reward ... baseline=RUN data.split=test`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = [
    "data.max_train_pairs=128",
    "prefix_sharing=false",
    "training.train_sampling_strategy=random",
    "data.long_prompts=drop",
    "training.gradient_checkpointing=true",
    "trainable_layers=null",
]


def run(kind: str, sft: str, runs_dir: Path, index: int) -> dict:
    name = f"{index}-{kind}"
    cmd = [
        sys.executable,
        "-m",
        "align",
        "reward",
        "--config",
        str(ROOT / "recipes/hh_harmless/reward.yaml"),
        f"model={sft}",
        f"runs_dir={runs_dir}",
        f"name={name}",
        *(BEFORE if kind == "before" else []),
    ]
    load = os.getloadavg()[0]
    start = time.time()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (KB on Linux)
    wall = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"align reward ({kind}) failed: {' '.join(cmd)}")
    manifest = json.loads((runs_dir / name / "manifest.json").read_text())
    m = manifest["metrics"]
    return {
        "settings": kind,
        "pairs": manifest["notes"]["data"]["pairs_trained"],
        "tokens": m["train_num_tokens"],
        "training_s": round(m["train_runtime"], 1),
        "stage_wall_s": manifest["wall_time_s"],
        "process_wall_s": round(wall, 1),
        "tokens_per_s": round(m["train_tokens_per_second"], 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", required=True, help="the SFT run the reward models start from (make demo-hh's 1-sft)")
    ap.add_argument("--order", default="before,after,before")
    ap.add_argument("--output", default=str(ROOT / "benchmarks/results/demo_hh_reward_before_after_cpu.json"))
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="align-bench-rm-") as tmp:
        for i, kind in enumerate(args.order.split(",")):
            results.append(run(kind, args.sft, Path(tmp), i))
            print(json.dumps(results[-1]), flush=True)

    def mean(kind, key):
        return sum(r[key] for r in results if r["settings"] == kind) / sum(r["settings"] == kind for r in results)

    ratios = {
        key: round(mean("after", key) / mean("before", key), 3)
        for key in ("pairs", "tokens", "training_s", "stage_wall_s", "tokens_per_s", "peak_rss_gb")
    }
    report = {
        "benchmark": "demo_hh_reward_before_after",
        "sft": args.sft,
        "before_overrides": BEFORE,
        "host": {"platform": platform.platform(), "cores": os.cpu_count()},
        "runs": results,
        "after_over_before": ratios,
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
