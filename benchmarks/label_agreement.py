"""Label agreement with the judge's truth on the brand-voice recipe's own candidates: majority vs Dawid-Skene.

    .venv/bin/python benchmarks/label_agreement.py [--seeds 5] [--generations RUN_OR_FILE ...]

The question (issue 32, "Done means"): with a simulated team that contains a bad annotator, do the
reliability-weighted labels (`align annotate pull label_model=dawid_skene`) agree with the judge's truth more
often than majority vote (`label_model=majority`), on the recipe's data rather than a synthetic task?

Candidates: replies of the embedded SmolLM2-135M-Instruct to the recipe's TRAINING customer prompts
(recipes/brand_voice/prompts_train.jsonl), four samples per prompt at temperature 1.0, 160 new tokens, as the
loop's generate step samples them. By default they are read from benchmarks/results/label_agreement_candidates.jsonl,
which holds the customer-prompt rows of two `align generate` runs of a brand_voice loop (rounds 1 and 2,
seeds 0 and 100003, policy embedded; the safety prompts of those rounds are left out: the rubric does not judge
them). `--generations` reads other generate runs (or generations.jsonl files) instead. Every pair of two
different samples of one prompt is a record (6 per prompt).

Truth: the brand-voice rubric (recipes/brand_voice/rubric.yaml), the judge the simulated annotators use; a
pair whose two rubric scores differ by less than the recipe's tie_margin (0.02) is a tie and not scored.

Annotators: exactly `align annotate simulate`'s decision (align.annotate.judges.choose, seeded by seed,
username and record id), on the A/B order push would show (a seeded coin per record), turned into votes
and labels by the pull's own code (align.annotate.votes.vote_from_answers / aggregate and
align.annotate.reliability.label_rows). Only the HTTP round trip through Argilla is skipped: that path is
tested on its own (tests/annotate/, the integration test with label_model=dawid_skene). Teams, 3 votes per
record (every annotator answers every record, as the recipe's push sets annotators_per_record: 3):
- `recipe`: the recipe's own team (recipes/brand_voice/annotators.yaml);
- `noisy_biased`: two careful annotators (noise 0.05) and one with noise 0.4 and position bias 0.3;
- `adversary`: two careful annotators and one who always answers against the judge (noise 1.0).

Per team and seed: label accuracy over the records with a non-tie truth that get a label (a majority of a or
b; a posterior != 0.5), coverage (share of those records with a label), correct labels per 100 votes, and the
Brier score of p_chosen. Intervals: mean +- t(0.975, seeds-1) * sd / sqrt(seeds) over seeds, and the same
for the paired difference Dawid-Skene - majority. No model is trained or run: it takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from align.annotate.judges import choose, last_user_text, prompt_key  # noqa: E402
from align.annotate.reliability import label_rows  # noqa: E402
from align.annotate.simulate import Annotator, read_annotators  # noqa: E402
from align.annotate.simulate import Config as SimulateConfig  # noqa: E402
from align.annotate.votes import aggregate, vote_from_answers  # noqa: E402
from align.evaluation.brand_voice import BrandRubric  # noqa: E402

CANDIDATES = ROOT / "benchmarks" / "results" / "label_agreement_candidates.jsonl"
RUBRIC = ROOT / "recipes" / "brand_voice" / "rubric.yaml"
TRAIN_PROMPTS = ROOT / "recipes" / "brand_voice" / "prompts_train.jsonl"
RECIPE_TEAM = ROOT / "recipes" / "brand_voice" / "annotators.yaml"
TIE_MARGIN = 0.02  # recipes/brand_voice/loop.yaml's simulate.tie_margin
CAREFUL = {"noise": 0.05, "bias_a": 0.0}


def teams() -> dict[str, list[Annotator]]:
    """The simulated teams, as `align annotate simulate` reads them (username, noise, bias_a, discard)."""
    return {
        "recipe": read_annotators(str(RECIPE_TEAM)),
        "noisy_biased": [
            Annotator("careful1", **CAREFUL),
            Annotator("careful2", **CAREFUL),
            Annotator("noisy_biased", noise=0.4, bias_a=0.3),
        ],
        "adversary": [
            Annotator("careful1", **CAREFUL),
            Annotator("careful2", **CAREFUL),
            Annotator("adversary", noise=1.0, bias_a=0.0),
        ],
    }


def read_candidates(paths: list[Path]) -> list[dict]:
    """Generate rows (prompt, responses) whose prompt is one of the recipe's training customer prompts."""
    keys = {
        " ".join(json.loads(line)["prompt"].split()).lower()
        for line in TRAIN_PROMPTS.read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    rows = []
    for path in paths:
        path = path / "generations.jsonl" if path.is_dir() else path
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if prompt_key(row["prompt"]) in keys:
                rows.append({"prompt": row["prompt"], "responses": row["responses"]})
    return rows


def make_records(rows: list[dict], rubric: BrandRubric) -> list[dict]:
    """Every pair of two different samples of one prompt, with the rubric score of each candidate."""
    records = []
    for i, row in enumerate(rows):
        text = last_user_text(row["prompt"])
        scores = [rubric.judge(text, r).score for r in row["responses"]]
        for x, y in itertools.combinations(range(len(row["responses"])), 2):
            if row["responses"][x].strip() == row["responses"][y].strip():
                continue
            records.append(
                {
                    "id": f"p{i}-{x}{y}",
                    "prompt": row["prompt"],
                    "response_a": row["responses"][x],
                    "response_b": row["responses"][y],
                    "score_a": scores[x],
                    "score_b": scores[y],
                }
            )
    return records


def truth(record: dict) -> str | None:
    gap = record["score_a"] - record["score_b"]
    return None if abs(gap) < TIE_MARGIN else ("a" if gap > 0 else "b")


def pulled_rows(records: list[dict], team: list[Annotator], seed: int) -> list[dict]:
    """What `align annotate pull` would write for these records after the team answered them."""
    cfg = SimulateConfig(judge="brand_voice", tie_margin=TIE_MARGIN, seed=seed)
    order = random.Random(f"ab-order:{seed}")  # push: a coin per record for which candidate is shown as A
    rows = []
    for rec in records:
        shown_a = "a" if order.random() < 0.5 else "b"
        shown = (rec["score_a"], rec["score_b"]) if shown_a == "a" else (rec["score_b"], rec["score_a"])
        votes = []
        for annotator in team:
            answer = choose(annotator, cfg, rec["id"], shown)
            if answer["status"] != "submitted":
                continue
            vote = vote_from_answers(answer["values"], shown_a)
            votes.append({**vote, "annotator": annotator.username})
        majority = aggregate(votes)["majority"]
        better, worse = {"a": (rec["response_a"], rec["response_b"]), "b": (rec["response_b"], rec["response_a"])}.get(
            majority, (None, None)
        )
        rows.append(
            {
                "response_a": rec["response_a"],
                "response_b": rec["response_b"],
                "votes": votes,
                "majority": majority,
                "chosen": [{"role": "assistant", "content": better}] if better is not None else None,
                "rejected": [{"role": "assistant", "content": worse}] if worse is not None else None,
            }
        )
    return rows


def label_of(row: dict) -> str | None:
    """The candidate a labelled row prefers (a or b), None when it has no label (tie, no majority, p = 0.5)."""
    if row.get("chosen") is None or row.get("majority") == "tie":
        return None
    return "a" if row["chosen"][0]["content"] == row["response_a"] else "b"


def score(records: list[dict], rows: list[dict]) -> dict:
    truths = [truth(r) for r in records]
    judged = [(t, row) for t, row in zip(truths, rows) if t is not None]
    labelled = [(t, label_of(row), row.get("p_chosen")) for t, row in judged if label_of(row) is not None]
    correct = sum(t == lab for t, lab, _ in labelled)
    votes = sum(len(row["votes"]) for _, row in judged)
    brier = [((1.0 if t == lab else 0.0) - p) ** 2 for t, lab, p in labelled if p is not None]
    return {
        "accuracy": correct / len(labelled) if labelled else float("nan"),
        "coverage": len(labelled) / len(judged) if judged else float("nan"),
        "correct_per_100_votes": 100.0 * correct / votes if votes else float("nan"),
        "brier": sum(brier) / len(brier) if brier else float("nan"),
    }


def interval(values: list[float]) -> dict:
    from scipy.stats import t as student_t

    mean = statistics.fmean(values)
    half = (
        student_t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
        if len(values) > 1
        else 0.0
    )
    return {"mean": round(mean, 4), "ci_low": round(mean - half, 4), "ci_high": round(mean + half, 4), "n": len(values)}


def run(seeds: int, generations: list[Path]) -> dict:
    rubric = BrandRubric.load(RUBRIC)
    rows = read_candidates(generations)
    records = make_records(rows, rubric)
    truths = [truth(r) for r in records]
    results = []
    for team_name, team in teams().items():
        per_model: dict[str, list[dict]] = {"majority": [], "dawid_skene": []}
        reliability: dict[str, list[float]] = {}
        for seed in range(seeds):
            for model in per_model:
                pulled = pulled_rows(records, team, seed)
                notes = label_rows(pulled, model)
                per_model[model].append(score(records, pulled))
                if model == "dawid_skene":
                    for who, r in notes["reliability"].items():
                        reliability.setdefault(who, []).append(r)
        row = {
            "team": team_name,
            "annotators": [
                {"username": a.username, "noise": a.noise, "bias_a": a.bias_a, "discard": a.discard} for a in team
            ],
        }
        for model, scores in per_model.items():
            row[model] = {k: interval([s[k] for s in scores]) for k in scores[0]}
        for key in ("accuracy", "correct_per_100_votes", "coverage"):
            row[f"dawid_skene_minus_majority_{key}"] = interval(
                [d[key] - m[key] for d, m in zip(per_model["dawid_skene"], per_model["majority"])]
            )
        row["estimated_reliability"] = {who: interval(v) for who, v in reliability.items()}
        results.append(row)
    sources = [p / "generations.jsonl" if p.is_dir() else p for p in generations]
    return {
        "question": "label accuracy against the brand rubric (the judge's truth) of majority vs one-coin Dawid-Skene "
        "labels, on the brand_voice recipe's candidate pairs, with simulated teams of known quality",
        "command": "python benchmarks/label_agreement.py" + (f" --seeds {seeds}" if seeds != 5 else ""),
        "candidates": [
            {
                "path": str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p),
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
            for p in sources
        ],
        "prompts": len(rows),
        "records": len(records),
        "records_tied_by_the_judge": sum(t is None for t in truths),
        "tie_margin": TIE_MARGIN,
        "seeds": seeds,
        "votes_per_record": 3,
        "results": results,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--generations",
        nargs="+",
        type=Path,
        default=[CANDIDATES],
        help="generate runs or generations.jsonl files (default: the shipped candidates)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_agreement.json")
    parser.add_argument(
        "--write-candidates",
        type=Path,
        default=None,
        help="also write the recipe prompts' rows of --generations here (how the shipped file was made)",
    )
    args = parser.parse_args()
    start = time.monotonic()
    if args.write_candidates:
        rows = read_candidates(args.generations)
        args.write_candidates.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
        print(f"wrote {len(rows)} rows to {args.write_candidates}")
        return
    data = run(args.seeds, args.generations)
    data["wall_time_s"] = round(time.monotonic() - start, 1)
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    for row in data["results"]:
        m, d = row["majority"]["accuracy"], row["dawid_skene"]["accuracy"]
        diff = row["dawid_skene_minus_majority_accuracy"]
        print(
            f"{row['team']:>13}: majority {m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]  "
            f"dawid_skene {d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]  "
            f"difference {diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"
        )
    print(
        f"{data['records']} records ({data['records_tied_by_the_judge']} tied by the judge) from {data['prompts']} "
        f"prompts; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
