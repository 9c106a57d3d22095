"""Add reward-model scores to a generation run: `align score GENERATIONS_RUN reward_model=RUN`.

Runs are immutable, so scoring writes a new run whose `generations.jsonl` is the input's rows with
`scores` (one float per response, in response order) added. Each response is scored as the reward
stage trains: the chat template of prompt + reply (align/scoring.py). The new run's manifest keeps
the policy and sampling settings of the generation run, so `align pairs` can read either run.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from align.core import device, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import ModelLoading
from align.data.records import write_jsonl
from align.models import load_reward_model, load_tokenizer, resolve_model
from align.rollout.generations import GENERATIONS, read_generations
from align.scoring import check_reward_model, reward_scores

log = logging.getLogger(__name__)


@dataclass
class Config(runs.RunOutput, ModelLoading):
    """Config of `align score`."""

    generations: str = ""
    """A generation run (`align generate`) or an earlier score run."""
    reward_model: str = ""
    """Reward model: a reward run directory, or a Hugging Face sequence-classification directory."""
    batch_size: int = 8
    """Conversations per forward pass."""
    max_length: int | None = None
    """Cut longer conversations from the left (keeping the reply); unset keeps them whole."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise AlignError(f"'batch_size' must be >= 1, got {self.batch_size}")


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    if not cfg.generations:
        raise AlignError("'generations' is required: a run directory written by `align generate`")
    if not cfg.reward_model:
        raise AlignError("'reward_model' is required: a reward run directory (align reward) or a classifier directory")
    parent, rows = read_generations(cfg.generations)
    source = resolve_model(cfg.reward_model, cfg.trust_remote_code)
    check_reward_model(source)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    report = {"reward_model": source.stable_ref, "prompts": len(rows), "responses": sum(len(r["responses"]) for r in rows)}
    return SimpleNamespace(parent=parent, rows=rows, source=source, tokenizer=tokenizer, report=report)


def run(cfg: Config) -> dict:
    ready = prepare(cfg)
    parent, rows, source, tokenizer = ready.parent, ready.rows, ready.source, ready.tokenizer

    with runs.new_run("score", to_dict(cfg), cfg.runs_dir, cfg.name) as run:
        run.add_input("generations", cfg.generations)
        run.add_input_record("reward_model", source.record)
        model = load_reward_model(source, cfg.dtype, cfg.trust_remote_code, pad_token_id=tokenizer.pad_token_id,
                                  attn_implementation=cfg.attn_implementation, place=True)
        conversations = [
            row["prompt"] + [{"role": "assistant", "content": text}] for row in rows for text in row["responses"]
        ]
        flat = reward_scores(model, tokenizer, conversations, cfg.batch_size, cfg.max_length)
        at = 0
        for row in rows:
            row["scores"] = flat[at:at + len(row["responses"])]
            at += len(row["responses"])
        write_jsonl(Path(run.path) / GENERATIONS, rows)
        run.add_output("generations", GENERATIONS, rows=len(rows))

        parent_notes = parent.get("notes", {})
        run.notes.update(
            policy=parent_notes.get("policy"),
            sampling=parent_notes.get("sampling"),
            reward_model=source.stable_ref,
        )
        gaps = [max(r["scores"]) - min(r["scores"]) for r in rows if len(r["scores"]) >= 2]
        metrics = {
            "responses_scored": len(flat),
            "score_mean": round(statistics.fmean(flat), 4) if flat else None,
            "score_std": round(statistics.pstdev(flat), 4) if flat else None,
            "mean_score_range_per_prompt": round(statistics.fmean(gaps), 4) if gaps else None,
        }
        run.metrics.update(metrics)
        run.log_metrics(metrics)
        log.info("scored %d responses of %d prompts (mean %.3f)", len(flat), len(rows), metrics["score_mean"] or 0)
        device.record(run, cfg, model)
        return runs.finish(run)


