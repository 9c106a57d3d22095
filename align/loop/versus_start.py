"""A round's policy against the loop's starting model: the numbers `against: start` gates read.

Each round's `align evaluate policy` compares its candidate with the policy the round started from, so a
gate there can only say "no worse than last round": a warm start that loses every refusal, followed by
rounds that keep it at zero, passes "no fall in harmful refusals" from 0 to 0. The loop therefore also
compares every round's policy with the model the loop started from (`policy` in the loop config: the
base, before any warm start), on the same held-out prompts, and writes it as a run of its own:

    round-<n>/versus_start/manifest.json    metrics shaped as evaluate policy's: <set>.<metric>.<policy|baseline|difference>.<stat>
    round-<n>/versus_start/replies.jsonl    per prompt: the round's policy reply and the starting model's, as judged

Both sides are replies that were generated and judged, not differences added up: the policy's come from the
round's evaluation, the starting model's from round 0's evaluation, in which it was the baseline (greedy
decoding, so generating them again would give the same text). They are paired by prompt, and the metrics are
evaluate policy's own `set_metrics` (paired bootstrap over prompts, the evaluation's bootstrap settings).
Pairing is refused (`StartMismatch`) when the two evaluations did not answer the same prompts the same way
(engine, dtype, decoding): the loop then evaluates the starting model again with the current settings.
Reward-model scores are left out: the two evaluations may have used different reward models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.config import build
from align.core.errors import AlignError
from align.data.records import write_jsonl
from align.evaluation.bootstrap import BootstrapSettings
from align.stages.evaluate_policy import REPLIES, SETS, set_metrics
from align.stages.evaluate_policy import STAGE as EVALUATE

STAGE = "loop versus start"
# Per-reply fields that depend on the reward model of one evaluation, not on the reply: not carried over.
REWARD_FIELDS = ("reward",)


class StartMismatch(AlignError):
    """The round's evaluation and the starting model's answered different prompts, or decoded differently."""


def write_versus_start_run(
    evaluation: str | Path, start_evaluation: str | Path, runs_dir: str | Path, name: str = "versus_start"
) -> dict[str, Any]:
    """Pair `evaluation`'s policy replies with `start_evaluation`'s baseline replies (the starting model's);
    a run with the paired replies and evaluate-policy-shaped metrics. Returns its manifest."""
    now, start = runs.read_manifest(evaluation), runs.read_manifest(start_evaluation)
    for path, manifest in ((evaluation, now), (start_evaluation, start)):
        if manifest.get("stage") != EVALUATE:
            raise AlignError(f"{path} is a '{manifest.get('stage')}' run, not an '{EVALUATE}' run")
    _same_decoding(now, start, evaluation, start_evaluation)
    start_rows = {(r["prompt_set"], r["prompt_id"]): r for r in _replies(start_evaluation, start)}
    rows = []
    for row in _replies(evaluation, now):
        earlier = start_rows.get((row["prompt_set"], row["prompt_id"]))
        if earlier is None or earlier["prompt"] != row["prompt"]:
            raise StartMismatch(
                f"{start_evaluation} did not answer {row['prompt_set']} prompt {row['prompt_id']} "
                f"({row.get('source')}) as {evaluation} did"
            )
        rows.append(
            {k: row[k] for k in ("prompt_set", "prompt_id", "source", "prompt")}
            | {"policy": _judged(row["policy"]), "baseline": _judged(earlier["baseline"])}
        )
    boot = build(BootstrapSettings, now.get("config", {}).get("bootstrap", {}))
    config = {"evaluation": str(evaluation), "start_evaluation": str(start_evaluation)}
    with runs.new_run(STAGE, config, runs_dir, name) as run:
        run.add_input("evaluation", evaluation)
        run.add_input("start_evaluation", start_evaluation)
        write_jsonl(Path(run.path) / REPLIES, rows)
        run.add_output("replies", REPLIES, rows=len(rows))
        for prompt_set in SETS:
            mine = [r for r in rows if r["prompt_set"] == prompt_set]
            if mine:
                run.metrics[prompt_set] = set_metrics(mine, boot)
        run.metrics["prompts"] = len(rows)
        run.notes.update(
            policy=now.get("notes", {}).get("policy"),
            baseline=start.get("notes", {}).get("baseline"),
            policy_replies_from=str(evaluation),
            baseline_replies_from=str(start_evaluation),
        )
        return runs.finish(run)


def _same_decoding(now: dict, start: dict, evaluation, start_evaluation) -> None:
    a, b = now.get("notes", {}), start.get("notes", {})
    same = {
        "engine": (a.get("engine"), b.get("engine")),
        "sampling": (a.get("sampling"), b.get("sampling")),
        "dtype": (now.get("config", {}).get("dtype"), start.get("config", {}).get("dtype")),
    }
    differ = [f"{k} {x!r} in {evaluation}, {y!r} in {start_evaluation}" for k, (x, y) in same.items() if x != y]
    if differ:
        raise StartMismatch(f"the evaluations were generated differently: {'; '.join(differ)}")


def _replies(path, manifest: dict) -> list[dict[str, Any]]:
    with open(runs.output_path(path, manifest, "replies"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _judged(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in REWARD_FIELDS}
