"""A feedback round against a generated-pairs round: what the held-out evaluation says after each.

    .venv/bin/python benchmarks/feedback_vs_pairs.py \
        [--pairs runs/brand_voice-feedback-pairs] [--feedback runs/brand_voice-feedback-kto] \
        [--out benchmarks/results/feedback_vs_pairs.json]

Reads two finished `align loop` runs of recipes/brand_voice/feedback_loop.yaml (the commands are at the top of
that file): one round from the embedded base model, (a) DPO on simulated annotators' pairs of the policy's own
samples, (b) KTO on simulated users' thumbs (recipes/brand_voice/feedback_simulated.jsonl, make_feedback.py).
Both rounds' `evaluate` runs answer the same held-out prompts (greedy, seed 0): the 30 customer prompts of
prompts_eval.jsonl (brand score), eval-side harmful prompts (refusal rate) and XSTest's safe prompts
(over-refusal), each policy against the base.

Writes, for base, pairs-round policy and feedback-round policy: each metric's mean with its percentile
bootstrap interval (from the evaluate manifests), each round's paired difference against the base (the same
manifests), and the paired difference feedback - pairs computed here from the two runs' per-prompt replies
(align.evaluation.bootstrap, the evaluation's own settings). Also the labels each round trained on, its
steps' wall times, the machine and the date. Nothing is run here: a missing or unfinished loop is an error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from align.evaluation.bootstrap import bootstrap_paired_difference  # noqa: E402

# (prompt set, metric): the per-reply value each metric averages (align/stages/evaluate_policy.py).
METRICS = {
    ("brand", "brand_score"): lambda r: r["brand_score"],
    ("harmful", "refusal_rate"): lambda r: float(r["refusal"] != "compliance"),
    ("safe", "refusal_rate"): lambda r: float(r["refusal"] != "compliance"),
}
NAMES = {
    ("brand", "brand_score"): "brand_score",
    ("harmful", "refusal_rate"): "harmful_refusal",
    ("safe", "refusal_rate"): "over_refusal",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="runs/brand_voice-feedback-pairs", help="the generated-pairs loop run")
    ap.add_argument("--feedback", default="runs/brand_voice-feedback-kto", help="the feedback loop run")
    ap.add_argument("--out", default="benchmarks/results/feedback_vs_pairs.json")
    args = ap.parse_args(argv)

    rounds = {"pairs": read_round(Path(args.pairs)), "feedback": read_round(Path(args.feedback))}
    evals = {k: read_json(r["dir"] / "evaluate" / "manifest.json") for k, r in rounds.items()}
    replies = {k: read_replies(r["dir"] / "evaluate" / "replies.jsonl") for k, r in rounds.items()}
    bootstrap = evals["pairs"]["config"]["bootstrap"]
    if evals["feedback"]["config"]["bootstrap"] != bootstrap:
        raise SystemExit("the two evaluations used different bootstrap settings; rerun one with the other's")

    metrics, base_identical = {}, {}
    for key, value in METRICS.items():
        prompt_set, metric = key
        m = {k: evals[k]["metrics"][prompt_set][metric] for k in rounds}
        a, b = replies["pairs"][prompt_set], replies["feedback"][prompt_set]
        if sorted(a) != sorted(b):
            raise SystemExit(f"the two evaluations answered different {prompt_set} prompts")
        ids = sorted(a)
        for k, rows in (("pairs", a), ("feedback", b)):  # the replies are the ones the manifest's means came from
            mean = sum(value(rows[i]["policy"]) for i in ids) / len(ids)
            if abs(mean - m[k]["policy"]["mean"]) > 1e-9:
                raise SystemExit(
                    f"{k}: {prompt_set} {metric} from replies.jsonl is {mean}, the manifest says "
                    f"{m[k]['policy']['mean']}"
                )
        # Same base, same prompts, greedy decoding: the base's replies should be the same in both runs.
        base_identical[prompt_set] = all(a[i]["baseline"]["reply"] == b[i]["baseline"]["reply"] for i in ids)
        paired = bootstrap_paired_difference(
            [value(b[i]["policy"]) for i in ids],
            [value(a[i]["policy"]) for i in ids],
            resamples=bootstrap["resamples"],
            seed=bootstrap["seed"],
            level=bootstrap["level"],
        )
        metrics[NAMES[key]] = {
            "prompts": len(ids),
            "base": m["pairs"]["baseline"],
            "pairs_round": m["pairs"]["policy"],
            "feedback_round": m["feedback"]["policy"],
            "pairs_minus_base": m["pairs"]["difference"],
            "feedback_minus_base": m["feedback"]["difference"],
            "feedback_minus_pairs": paired.as_dict(),
        }
        if m["feedback"]["baseline"]["mean"] != m["pairs"]["baseline"]["mean"]:
            metrics[NAMES[key]]["base_in_feedback_run"] = m["feedback"]["baseline"]

    result = {
        "benchmark": "feedback_vs_pairs",
        "command": "python benchmarks/feedback_vs_pairs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "question": "one round from the base: DPO on simulated annotators' pairs vs KTO on simulated users' thumbs",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "2 CPU cores shared with other jobs while these ran: wall times are not speeds",
        },
        "versions": evals["pairs"].get("versions", {}),
        "loops": {k: str(r["loop"]) for k, r in rounds.items()},
        "base_replies_identical": base_identical,
        "metrics": metrics,
        "labels": {k: r["labels"] for k, r in rounds.items()},
        "wall_time_s": {k: r["wall_time_s"] for k, r in rounds.items()},
        "promoted": {k: r["promoted"] for k, r in rounds.items()},
        "evaluation": {"bootstrap": bootstrap, "sampling": evals["pairs"]["config"]["sampling"]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"metrics": metrics, "labels": result["labels"]}, indent=2))
    return 0


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the loop of recipes/brand_voice/feedback_loop.yaml to the end first")
    return json.loads(path.read_text())


def read_round(loop: Path) -> dict:
    """Round 1 of a finished loop: its directory, labels, step wall times and gate outcome."""
    state = read_json(loop / "loop.json")
    rounds = state["rounds"]
    if (
        len(rounds) < 2
        or "evaluate" not in rounds[1].get("steps", {})
        or rounds[1]["steps"]["evaluate"].get("status") != "done"
    ):
        raise SystemExit(f"{loop}: round 1 has not been evaluated yet")
    steps = rounds[1]["steps"]
    rnd_dir = loop / "round-1"
    labels: dict = {}
    if "pull" in steps:  # generated pairs labelled by simulated annotators
        pull = read_json(rnd_dir / "pull" / "manifest.json")["metrics"]
        train = read_json(rnd_dir / "labels" / "manifest.json")["metrics"]
        labels = {
            "kind": "pairwise votes (simulated annotators)",
            "records": pull["records"],
            "votes": pull["votes"],
            "usable_pairs": train["usable_pairs"],
            "ties": pull.get("ties"),
            "discards": pull.get("discards"),
        }
    if "feedback" in steps:  # users' thumbs
        m = read_json(rnd_dir / "feedback" / "manifest.json")["metrics"]
        kto = read_json(rnd_dir / "kto" / "manifest.json")["config"]["training"]
        labels = {
            "kind": "thumbs (simulated users)",
            "examples": m["usable_pairs"],
            "by_origin": m["by_origin"],
            "thumbs_up": m["desirable"],
            "thumbs_down": m["undesirable"],
            "kto_weights": {k: kto[k] for k in ("desirable_weight", "undesirable_weight")},
        }
    return {
        "loop": loop,
        "dir": rnd_dir,
        "labels": labels,
        "promoted": rounds[1].get("promoted"),
        "wall_time_s": {
            **{s: v.get("wall_time_s") for s, v in steps.items() if v.get("wall_time_s") is not None},
            "round_total": round(sum(v.get("wall_time_s") or 0 for v in steps.values()), 1),
        },
    }


def read_replies(path: Path) -> dict[str, dict[str, dict]]:
    """{prompt set: {prompt id: row}} of an evaluate run's replies.jsonl."""
    out: dict[str, dict[str, dict]] = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            out.setdefault(row["prompt_set"], {})[row["prompt_id"]] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
