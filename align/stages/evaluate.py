"""`align evaluate reward`: pairwise accuracy and mean margin of a reward model on any preference file.

Each pair is scored as prompt + chosen and prompt + rejected with the model's chat template, the
formatting the reward stage trains on. Accuracy counts a tie as half. Conversations over
`max_length` keep their last `max_length` tokens (the reply being judged) and are counted.
Writes a run with `scores.jsonl` (one line per pair: both scores and the margin) and the metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import ModelLoading
from align.data.preferences import DEFAULT_COLUMNS, Format, load_preference_pairs, sample
from align.data.records import write_jsonl
from align.models import load_reward_model, load_tokenizer, resolve_model
from align.scoring import check_reward_model, conversation_ids, pairwise_metrics, reward_scores

log = logging.getLogger(__name__)

STAGE = "evaluate reward"


@dataclass
class EvalDataConfig:
    """The preference pairs to score."""

    path: str = ""
    """Preference file, datasets directory or run directory."""
    format: Format = "auto"
    """auto | conversational | hh-rlhf | oasst | pairwise-label."""
    columns: dict[str, str] = field(default_factory=dict)
    """pairwise-label column names (see `align dpo --help`)."""
    max_pairs: int | None = None
    """Score at most this many pairs (a seeded sample)."""
    seed: int = 0
    """Seed of that sample."""


@dataclass
class Config(runs.RunOutput, ModelLoading):
    """`align evaluate reward` settings."""

    reward_model: str = ""
    """The reward model: a reward run directory (or a sequence-classification model directory)."""
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    """Pairs to score."""
    max_length: int = 512
    """Token budget per conversation; longer ones keep their last max_length tokens."""
    batch_size: int = 8
    """Scoring batch size."""


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    if not cfg.reward_model:
        raise AlignError("'reward_model' is required: the reward run directory to evaluate")
    if not cfg.data.path:
        raise AlignError("'data.path' is required: the preference pairs to score")
    source = resolve_model(cfg.reward_model, cfg.trust_remote_code)
    check_reward_model(source)
    data = load_preference_pairs(cfg.data.path, cfg.data.format, {**DEFAULT_COLUMNS, **cfg.data.columns})
    rows = sample(data.rows, cfg.data.max_pairs, cfg.data.seed)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    over = sum(
        1 for r in rows
        if max(len(conversation_ids(tokenizer, r["prompt"] + r[k])) for k in ("chosen", "rejected")) > cfg.max_length
    )
    report = {"reward_model": source.stable_ref, "data": {**data.report, "pairs_scored": len(rows), "pairs_left_truncated": over}}
    return SimpleNamespace(source=source, tokenizer=tokenizer, rows=rows, report=report)


def run(cfg: Config) -> dict:
    ready = prepare(cfg)
    source, tokenizer, rows = ready.source, ready.tokenizer, ready.rows

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("reward_model", source.record)
        run_dir.add_input("data", cfg.data.path)
        model = load_reward_model(source, cfg.dtype, cfg.trust_remote_code, pad_token_id=tokenizer.pad_token_id)
        chosen = reward_scores(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows], cfg.batch_size, cfg.max_length, "scoring chosen")
        rejected = reward_scores(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows], cfg.batch_size, cfg.max_length, "scoring rejected")
        write_jsonl(run_dir.path / "scores.jsonl", [
            {"index": i, "chosen_score": c, "rejected_score": r, "margin": c - r} for i, (c, r) in enumerate(zip(chosen, rejected))
        ])
        run_dir.add_output("scores", "scores.jsonl")
        run_dir.metrics.update(pairwise_metrics(chosen, rejected))
        run_dir.notes["data"] = ready.report["data"]
        log.info("reward model on %d pairs: accuracy %.3f, mean margin %.3f",
                 len(rows), run_dir.metrics["accuracy"], run_dir.metrics["mean_margin"])
        return runs.finish(run_dir)
