"""What a round trains on, and how far the loop has come since round 0.

`write_labels_run`: one run directory per round naming the label pulls it trains on (this round's,
or every round's so far) and the pushes they answered, with the pairs in `preferences.jsonl`. The
training stage reads it as `data.train`, so `align lineage` goes from a policy through this run to
each pull (votes, annotators) and push, and on to the candidates and the policy that generated them.

`since_start`: the current round's policy against round 0's on the same held-out prompts, from the
two evaluation runs' stored replies (greedy, so no model is run again): a paired bootstrap per
metric, as `align evaluate policy` computes policy vs baseline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.errors import AlignError
from align.evaluation.bootstrap import bootstrap_paired_difference

STAGE = "loop labels"
PREFERENCES = "preferences.jsonl"
# Per-reply values compared since round 0 (the evaluate-policy metrics that have one value per reply).
PER_REPLY = {
    "brand_score": lambda r: r.get("brand_score"),
    "refusal_rate": lambda r: float(r["refusal"] != "compliance"),
    "length_words": lambda r: float(r["words"]),
}


def write_labels_run(
    pulls: list[tuple[int, str]],
    pushes: list[tuple[int, str]],
    runs_dir: Path,
    name: str,
    config: dict[str, Any],
    balance: str = "none",
    kinds: dict[int, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A run with every pull's rows (in round order) and counts per round; returns its manifest.

    balance="refusal" appends copies of the smaller side's usable pairs (see `balance_refusals`).
    kinds: per round of a mixed loop, prompt key -> kind (align/loop/mix.py); the counts then say what each
    kind contributed (records, usable pairs, votes, ties)."""
    rows: list[dict[str, Any]] = []
    per_round = {}
    for n, pull in pulls:
        manifest = runs.read_manifest(pull)
        if manifest.get("stage") != "annotate pull":
            raise AlignError(f"{pull} is a '{manifest.get('stage')}' run, not an 'annotate pull' run")
        with open(runs.output_path(pull, manifest, "preferences"), encoding="utf-8") as f:
            mine = [json.loads(line) for line in f]
        rows.extend(mine)
        usable = sum(r.get("chosen") is not None and r.get("rejected") is not None for r in mine)
        metrics = manifest.get("metrics", {})
        per_round[str(n)] = {
            "records": len(mine),
            "usable_pairs": usable,
            "votes": metrics.get("votes"),
            "simulated_votes": metrics.get("simulated_votes"),
            "human_votes": metrics.get("human_votes"),
            "annotators": sorted({v["annotator"] for r in mine for v in r.get("votes", [])}),
        }
        if kinds and n in kinds:
            from align.loop.mix import kind_counts

            per_round[str(n)]["kinds"] = kind_counts(mine, kinds[n])
    counts = None
    if balance == "refusal":
        rows, counts = balance_refusals(rows)
    with runs.new_run(STAGE, config, runs_dir, name) as run:
        for n, pull in pulls:
            run.add_input(f"round{n}.pull", pull)
        for n, push in pushes:
            run.add_input(f"round{n}.push", push)
        with open(run.path / PREFERENCES, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        run.add_output("preferences", PREFERENCES, rows=len(rows))
        run.metrics.update(records=len(rows), usable_pairs=sum(v["usable_pairs"] for v in per_round.values()))
        run.notes["rounds"] = per_round
        if counts is not None:
            run.metrics.update({f"balance_{k}": v for k, v in counts.items()})
        return runs.finish(run)


def balance_refusals(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`rows` plus copies of the usable pairs on the smaller side, so that as many pairs prefer a refusal as
    prefer an answer; and the counts.

    Why: DPO moves the policy's line between refusing and answering towards whichever side has more pairs.
    In the safety loop the sides are uneven and change from round to round (a warm start that refuses more
    gives more look-alike contrast, one that refuses less gives fewer refusal pairs), so a round trained on
    20 refusal pairs against 35 answer pairs lost a third of its harmful refusals (recipes/safety/README.md,
    run 9). Copies, not dropped pairs, so no label is thrown away; each copy is marked `balance_copy: true`
    and the order is fixed (whole repeats of the smaller side, then its first pairs), so the run repeats.
    Nothing is copied when either side is empty: there is nothing to weigh it against."""
    from align.evaluation.refusal import detect_refusal

    sides: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for r in rows:
        if r.get("chosen") and r.get("rejected"):
            sides[detect_refusal(r["chosen"][-1]["content"]).refused].append(r)  # a pull's chosen: [reply]
    refusals, answers = len(sides[True]), len(sides[False])
    counts = {"prefer_refusal": refusals, "prefer_answer": answers, "copies": 0}
    if not refusals or not answers or refusals == answers:
        return rows, counts
    small = sides[refusals < answers]
    need = abs(refusals - answers)
    copies = [{**small[i % len(small)], "balance_copy": True} for i in range(need)]
    counts["copies"] = need
    return rows + copies, counts


def since_start(
    start_eval: str, now_eval: str, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, dict[str, float]]]:
    """{set: {metric: {mean, ci_low, ci_high, n}}} of (policy now) - (policy at round 0), paired by prompt."""
    start, now = _policy_replies(start_eval), _policy_replies(now_eval)
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(start) & set(now)):
        prompt_set = key[0]
        for metric, value in PER_REPLY.items():
            a, b = value(now[key]), value(start[key])
            if a is None or b is None:
                continue
            out.setdefault(prompt_set, {}).setdefault(metric, ([], []))
            out[prompt_set][metric][0].append(a)
            out[prompt_set][metric][1].append(b)
    return {
        s: {m: bootstrap_paired_difference(a, b, resamples, seed, level).as_dict() for m, (a, b) in ms.items()}
        for s, ms in out.items()
    }


def _policy_replies(eval_run: str) -> dict[tuple[str, str], dict[str, Any]]:
    manifest = runs.read_manifest(eval_run)
    with open(runs.output_path(eval_run, manifest, "replies"), encoding="utf-8") as f:
        return {(r["prompt_set"], r["prompt_id"]): r["policy"] for r in map(json.loads, f)}


def usable_pairs(labels_run: str | Path) -> int:
    return int(runs.read_manifest(labels_run)["metrics"]["usable_pairs"])
