"""A finished `align loop` run as a result file: each round's outcome, metrics, labels and wall times.

    .venv/bin/python benchmarks/loop_results.py runs/brand_voice-loop \
        --config recipes/brand_voice/loop.yaml --out benchmarks/results/demo_brand_voice_loop.json

Reads the loop directory only (its loop.json and the run directories it names: each round's `evaluate`,
`versus_start` and `pull` manifests); nothing is run. Per round it writes the outcome (start, promoted or held
back, and which gates failed), the score table's metrics with their 95% intervals (brand score, harmful
refusal, over-refusal: the policy, its paired difference from the previous policy and, where the loop compared
them, from the starting model), the labels pulled (records, votes, simulated and human votes) and each step's
wall time. Then the loop's total wall time (the sum of its steps), the machine, the date, the config path and
the git commit.

The loop does not record the config file's path or the commit it ran at: `--config` names the file (the
resolved config is in loop.json either way) and the commit, cpu count and processor are those of the checkout
and machine this script runs on, so run it where the loop ran. A loop that has not finished is an error: a
result file describes a finished run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from align.core import runs  # noqa: E402
from align.core.errors import AlignError  # noqa: E402
from align.loop.state import LoopState  # noqa: E402
from align.loop.summary import _done, _order, outcome  # noqa: E402

# (prompt set, metric, key in the result file): the columns of `align loop`'s score table.
METRICS = (
    ("brand", "brand_score", "brand_score"),
    ("harmful", "refusal_rate", "harmful_refusal"),
    ("safe", "refusal_rate", "over_refusal"),
    ("brand", "length_words", "words"),
)


def loop_results(loop_dir: Path, config: str | None = None, command: str | None = None) -> dict:
    state = LoopState.load(loop_dir)
    if state is None:
        raise AlignError(f"{loop_dir} holds no loop.json; give the loop_dir of a finished `align loop`")
    if state.data.get("phase") != "finished":
        raise AlignError(f"{loop_dir}: the loop is '{state.data.get('phase')}', not finished; rerun this when it is")
    rounds = [_round(state, rnd) for rnd in state.rounds]
    evaluation = next((r["evaluate_run"] for r in reversed(rounds) if r.get("evaluate_run")), None)
    host = runs.read_manifest(evaluation).get("host", {}) if evaluation else {}
    versions = runs.read_manifest(evaluation).get("versions", {}) if evaluation else {}
    return {
        "benchmark": "loop_results",
        "command": command,
        "loop_dir": str(loop_dir),
        "loop_id": state.data["loop_id"],
        "recipe": state.data["recipe"],
        "config": config,
        "started": state.data["created"],
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(loop_dir),
        "machine": {"cpus": os.cpu_count(), "processor": _processor(), "platform": host.get("platform")},
        "versions": {k: versions[k] for k in ("torch", "transformers", "trl") if k in versions},
        "current_policy_round": state.data["current"]["round"],
        "total_wall_time_s": round(sum(sum(r["wall_time_s"].values()) for r in rounds), 1),
        "rounds": rounds,
    }


def _round(state: LoopState, rnd: dict) -> dict:
    steps = rnd["steps"]
    evaluation, versus = _done(state, steps, "evaluate"), _done(state, steps, "versus_start")
    ev = runs.read_manifest(evaluation)["metrics"] if evaluation else {}
    vs = runs.read_manifest(versus)["metrics"] if versus else {}
    metrics = {}
    for prompt_set, metric, key in METRICS:
        m = ev.get(prompt_set, {}).get(metric)
        if m:
            # Round 0's evaluate compares the warm start with the starting model; later rounds with the previous policy.
            metrics[key] = {
                "policy": m["policy"],
                "vs_previous": m["difference"],
                "vs_start": (vs.get(prompt_set, {}).get(metric) or {}).get("difference"),
            }
    pull = _done(state, steps, "pull")
    labels = None
    if pull:
        p = runs.read_manifest(pull)["metrics"]
        labels = {k: p.get(k) for k in ("records", "votes", "simulated_votes", "human_votes", "ties")}
    gates = rnd.get("gates") or {}
    return {
        "round": rnd["round"],
        "outcome": outcome(rnd),
        "failed_gates": [g["name"] for g in gates.get("gates", []) if not g["passed"]],
        "reasons": list(rnd.get("reasons", [])),
        "metrics": metrics,
        "labels": labels,
        "wall_time_s": {
            k: float(v["wall_time_s"])
            for k, v in sorted(steps.items(), key=lambda kv: _order(kv[0]))
            if v.get("status") == "done" and v.get("wall_time_s") is not None
        },
        "evaluate_run": evaluation,
    }


def _git_commit(loop_dir) -> str | None:
    """The commit of the checkout the loop ran in (its run directory lies inside it), not this script's."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=loop_dir, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _processor() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop_dir", type=Path, help="the finished loop's directory (holds loop.json)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write, e.g. benchmarks/results/NAME.json")
    parser.add_argument("--config", help="the loop config the run used (recorded as given; loop.json has no path)")
    args = parser.parse_args(argv)
    try:
        argv = sys.argv[1:] if argv is None else argv
        data = loop_results(args.loop_dir, args.config, "python benchmarks/loop_results.py " + " ".join(argv))
    except AlignError as exc:
        print(f"loop_results: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.out} ({len(data['rounds'])} rounds, {data['total_wall_time_s']:.0f} s of steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
