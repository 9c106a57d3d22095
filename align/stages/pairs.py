"""Build candidate pairs for annotators from a generation run: `align pairs GENERATIONS_RUN`.

One pair per prompt, chosen from its N responses by `selection` (align/rollout/pairs.py): `random`,
`refusal_contrast`, or, on a run scored with `align score`, `least_sure` (smallest reward gap),
`best_vs_worst`, `ensemble_disagreement` (scored with a reward ensemble, `align reward-ensemble`) or
`dpo_margin` (scored with `policy=` and `reference=`: DPO's implicit reward margin). The uncertainty
rules write each pair's `uncertainty` (bits), which `align annotate push max_records=N` ranks by.
Empty responses are dropped and identical ones merged first; prompts left with fewer than two
distinct responses are counted in the manifest and logged, not silently dropped.

Output `pairs` = pairs.jsonl, the input of `align annotate push`, one row per pair:

    {"prompt": [messages], "response_a": "...", "response_b": "...",
     "policy": "<model ref or run path>", "sampling": {...}, "scores": [a, b] | null,
     "source": "file:line", "prompt_id": "...", "selection": "random", "uncertainty": 0.37 | null}
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.data.records import write_jsonl
from align.evaluation.refusal import detect_refusal
from align.rollout.generations import read_generations
from align.rollout.pairs import (
    NEEDS_LOGRATIOS,
    NEEDS_MEMBERS,
    NEEDS_SCORES,
    UNCERTAINTY,
    Selection,
    choose_pair,
    distinct,
    prompt_rng,
)

log = logging.getLogger(__name__)

PAIRS = "pairs.jsonl"


@dataclass
class Config(runs.RunOutput):
    """Config of `align pairs`."""

    generations: str = ""
    """A generation run (`align generate`), or a score run (`align score`) for the score-based rules."""
    selection: Selection = "random"
    """random | least_sure (smallest reward gap; needs scores) | best_vs_worst (needs scores) |
    refusal_contrast (a refusal and an answer when a prompt has both, by align.evaluation.refusal; else random) |
    ensemble_disagreement (the pair a reward ensemble disagrees on most; needs ensemble scores) |
    dpo_margin (the smallest |DPO implicit reward margin|; needs policy/reference log-ratios)."""
    seed: int = 0
    """Seed of the random choices (which pair, and which response is shown as A)."""
    beta: float = 0.1
    """dpo_margin only: DPO's beta, scaling the margin (it changes each pair's uncertainty, not which pair)."""

    def __post_init__(self):
        if self.beta <= 0:
            raise AlignError(f"'beta' must be > 0, got {self.beta}")


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted (what `--dry-run` prints)."""
    _, rows, scored = prepare(cfg)
    return {
        "generations": str(Path(cfg.generations).resolve()),
        "prompts": len(rows),
        "responses": sum(len(r["responses"]) for r in rows),
        "scored": scored,
    }


def prepare(cfg: Config) -> tuple[dict, list[dict], bool]:
    """(the generation run's manifest, its rows, whether every row has scores), checked."""
    if not cfg.generations:
        raise AlignError("'generations' is required: a run directory written by `align generate` or `align score`")
    manifest, rows = read_generations(cfg.generations)
    notes = manifest.get("notes", {})
    sampling = notes.get("sampling") or {}
    n = sampling.get("n", max(len(r["responses"]) for r in rows))
    if n < 2:
        raise AlignError(
            f"{cfg.generations}: sampled n={n} response per prompt; a pair needs at least 2. "
            "Re-run `align generate` with sampling.n=2 or more"
        )
    scored = all(isinstance(r.get("scores"), list) and len(r["scores"]) == len(r["responses"]) for r in rows)
    if cfg.selection in NEEDS_SCORES and not scored:
        raise AlignError(
            f"selection '{cfg.selection}' needs reward scores, but {cfg.generations} has none; "
            f"run `align score {cfg.generations} reward_model=RUN` and give that run, or use selection=random"
        )
    for needs, field_name, how in (
        (NEEDS_MEMBERS, "member_scores", "reward_model=ENSEMBLE_RUN (align reward-ensemble)"),
        (NEEDS_LOGRATIOS, "logratios", "policy=POLICY reference=REFERENCE"),
    ):
        if cfg.selection in needs and not all(_per_response(r, field_name) for r in rows):
            raise AlignError(
                f"selection '{cfg.selection}' needs '{field_name}' for every response, but {cfg.generations} lacks "
                f"them; run `align score {cfg.generations} {how}` and give that run"
            )
    return manifest, rows, scored


def _per_response(row: dict, key: str) -> bool:
    return isinstance(row.get(key), list) and len(row[key]) == len(row["responses"])


def run(cfg: Config) -> dict:
    manifest, rows, scored = prepare(cfg)
    notes = manifest.get("notes", {})
    sampling = notes.get("sampling") or {}
    policy = notes.get("policy") or str(Path(cfg.generations).resolve())

    with runs.new_run("pairs", to_dict(cfg), cfg.runs_dir, cfg.name) as run:
        run.add_input("generations", cfg.generations)
        pairs, duplicates, empty, too_few = [], 0, 0, []
        for row in rows:
            candidates = distinct(
                row["responses"],
                row["scores"] if scored else None,
                row["member_scores"] if cfg.selection in NEEDS_MEMBERS else None,
                row["logratios"] if cfg.selection in NEEDS_LOGRATIOS else None,
            )
            if cfg.selection == "refusal_contrast":
                for c in candidates:
                    c.refused = detect_refusal(c.text).refused
            empty += sum(1 for text in row["responses"] if not text.strip())
            duplicates += len(row["responses"]) - len(candidates)
            rng = prompt_rng(cfg.seed, str(row.get("prompt_id", row.get("source", ""))))
            choice = choose_pair(candidates, cfg.selection, rng, cfg.beta)
            if choice is None:
                too_few.append(row.get("source", "?"))
                continue
            pairs.append(
                {
                    "prompt": row["prompt"],
                    "response_a": choice.a.text,
                    "response_b": choice.b.text,
                    "policy": policy,
                    "sampling": sampling,
                    "scores": [choice.a.score, choice.b.score] if scored else None,
                    "source": row.get("source"),
                    "prompt_id": row.get("prompt_id"),
                    "selection": cfg.selection,
                    "uncertainty": None if choice.uncertainty is None else round(choice.uncertainty, 6),
                    **(
                        {"contrast": choice.a.refused != choice.b.refused}
                        if cfg.selection == "refusal_contrast"
                        else {}
                    ),
                }
            )
        if not pairs:
            raise AlignError(
                f"{cfg.generations}: no prompt has two distinct responses ({len(rows)} prompts); "
                "sample with a higher sampling.temperature or a larger sampling.n"
            )
        if too_few:
            log.warning(
                "%d of %d prompts have fewer than 2 distinct responses and give no pair (first: %s)",
                len(too_few),
                len(rows),
                too_few[0],
            )
        write_jsonl(Path(run.path) / PAIRS, pairs)
        run.add_output("pairs", PAIRS, rows=len(pairs))
        run.notes.update(policy=policy, sampling=sampling, prompts_without_pair=too_few[:100])
        gaps = [abs(p["scores"][0] - p["scores"][1]) for p in pairs if p["scores"]]
        metrics = {
            "prompts": len(rows),
            "pairs": len(pairs),
            "prompts_fewer_than_2_distinct": len(too_few),
            "duplicate_responses_merged": duplicates - empty,
            "empty_responses_dropped": empty,
            "mean_score_gap": round(statistics.fmean(gaps), 4) if gaps else None,
        }
        if cfg.selection in UNCERTAINTY:
            metrics["mean_uncertainty_bits"] = round(statistics.fmean(p["uncertainty"] for p in pairs), 4)
        if cfg.selection == "refusal_contrast":
            metrics["refusal_contrast_pairs"] = sum(p["contrast"] for p in pairs)
        run.metrics.update(metrics)
        run.log_metrics(metrics)
        log.info("%d pairs from %d prompts (selection %s)", len(pairs), len(rows), cfg.selection)
        return runs.finish(run)
