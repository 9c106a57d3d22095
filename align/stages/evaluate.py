"""`align evaluate reward`: pairwise accuracy and mean margin of a reward model on any preference file.

Each pair is scored as prompt + chosen and prompt + rejected with the model's chat template, the
formatting the reward stage trains on. Accuracy counts a tie as half. Conversations over
`max_length` keep their last `max_length` tokens (the reply being judged) and are counted.
Writes a run with `scores.jsonl` (one line per pair: both scores and the margin) and the metrics.

`data.split=test` scores only the held-out side of the split the training stages make (prompt hash
with `data.test_fraction` and `data.seed`, as `align reward` holds out), so a reward model trained on
the same file can be scored on prompts it never saw. `baseline=RUN` scores a second reward model on
the very same pairs and reports the accuracy difference with a paired bootstrap interval (pairs
resampled as units): the question "is the new reward model better than the last one" answered
on one set, not on two runs' different held-out samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Literal

from align.core import device, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import ModelLoading
from align.data.preferences import DEFAULT_COLUMNS, Format, load_preference_pairs, sample, split_pairs
from align.data.records import write_jsonl
from align.evaluation.bootstrap import BootstrapSettings, bootstrap_mean, bootstrap_paired_difference
from align.models import load_reward_model, load_tokenizer, resolve_model
from align.scoring import check_reward_model, conversation_ids, pair_scores, pair_wins, pairwise_metrics

log = logging.getLogger(__name__)

STAGE = "evaluate reward"


@dataclass
class EvalDataConfig:
    """The preference pairs to score."""

    path: str = ""
    """Preference file, datasets directory, run directory, or hub dataset `hf:<org>/<name>?split=test&subset=...`."""
    format: Format = "auto"
    """auto | conversational | implicit | hh-rlhf | oasst | pairwise-label (align/data/preferences.py; unpaired data has no pairs to score)."""
    columns: dict[str, str] = field(default_factory=dict)
    """pairwise-label column names (see `align dpo --help`)."""
    split: Literal["all", "test", "train"] = "all"
    """all: every pair; test (or train): only that side of the training stages' prompt-hash split."""
    test_fraction: float = 0.1
    """With split=test|train: the held-out share, as the training stage's data.test_fraction."""
    max_pairs: int | None = None
    """Score at most this many pairs (a seeded sample)."""
    seed: int = 0
    """Seed of the split (as the training stage's data.seed) and of that sample."""


@dataclass
class Config(runs.RunOutput, ModelLoading):
    """`align evaluate reward` settings."""

    reward_model: str = ""
    """The reward model: a reward run directory (or a sequence-classification model directory)."""
    baseline: str | None = None
    """Another reward model scored on the same pairs: the accuracy difference gets a paired interval."""
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    """Pairs to score."""
    max_length: int = 512
    """Token budget per conversation; longer ones keep their last max_length tokens."""
    batch_size: int = 8
    """Scoring batch size."""
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    """Intervals: accuracy, and the difference to the baseline (pairs resampled as units)."""


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    if not cfg.reward_model:
        raise AlignError("'reward_model' is required: the reward run directory to evaluate")
    if not cfg.data.path:
        raise AlignError("'data.path' is required: the preference pairs to score")
    if cfg.data.split != "all" and not 0 < cfg.data.test_fraction < 1:
        raise AlignError(
            f"'data.test_fraction' must be between 0 and 1 with data.split={cfg.data.split}, "
            f"got {cfg.data.test_fraction}"
        )
    source = resolve_model(cfg.reward_model, cfg.trust_remote_code)
    check_reward_model(source)
    baseline = None
    if cfg.baseline:
        baseline = resolve_model(cfg.baseline, cfg.trust_remote_code)
        check_reward_model(baseline)
    data = load_preference_pairs(cfg.data.path, cfg.data.format, {**DEFAULT_COLUMNS, **cfg.data.columns})
    rows = data.rows
    if cfg.data.split != "all":
        train, test = split_pairs(rows, cfg.data.test_fraction, cfg.data.seed)
        rows = test if cfg.data.split == "test" else train
        if not rows:
            raise AlignError(
                f"{cfg.data.path}: no pairs on the {cfg.data.split} side of the split "
                f"(test_fraction {cfg.data.test_fraction}, seed {cfg.data.seed}); raise data.test_fraction"
            )
    rows = sample(rows, cfg.data.max_pairs, cfg.data.seed)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    if baseline is not None:
        # Both models score the same token ids, so their tokenizers must agree.
        other = load_tokenizer(baseline, cfg.trust_remote_code)
        if other.get_vocab() != tokenizer.get_vocab() or other.chat_template != tokenizer.chat_template:
            raise AlignError(
                f"baseline {cfg.baseline} has another tokenizer or chat template than {cfg.reward_model}: "
                "compare reward models built on the same base model"
            )
    over = sum(
        1
        for r in rows
        if max(len(conversation_ids(tokenizer, r["prompt"] + r[k])) for k in ("chosen", "rejected")) > cfg.max_length
    )
    report = {
        "reward_model": source.stable_ref,
        "data": {**data.report, "split": cfg.data.split, "pairs_scored": len(rows), "pairs_left_truncated": over},
    }
    if baseline is not None:
        report["baseline"] = baseline.stable_ref
    return SimpleNamespace(source=source, baseline=baseline, tokenizer=tokenizer, rows=rows, report=report)


def score_pairs(source, cfg: Config, tokenizer, rows: list[dict], label: str) -> tuple[list[float], list[float]]:
    """Load one reward model and score every pair with it (freed on return, before the next model loads)."""
    model = load_reward_model(
        source,
        cfg.dtype,
        cfg.trust_remote_code,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=cfg.attn_implementation,
        place=True,
    )
    return pair_scores(model, tokenizer, rows, cfg.batch_size, cfg.max_length, label)


def run(cfg: Config) -> dict:
    ready = prepare(cfg)
    source, tokenizer, rows = ready.source, ready.tokenizer, ready.rows

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("reward_model", source.record)
        run_dir.add_input("data", cfg.data.path)
        chosen, rejected = score_pairs(source, cfg, tokenizer, rows, "scoring")
        lines = [
            {"index": i, "chosen_score": c, "rejected_score": r, "margin": c - r}
            for i, (c, r) in enumerate(zip(chosen, rejected))
        ]
        wins = pair_wins(chosen, rejected)
        run_dir.metrics.update(pairwise_metrics(chosen, rejected))
        boot = cfg.bootstrap
        run_dir.metrics["accuracy_ci95"] = bootstrap_mean(wins, boot.resamples, boot.seed).as_dict()
        if ready.baseline is not None:
            run_dir.add_input_record("baseline", ready.baseline.record)
            base_chosen, base_rejected = score_pairs(ready.baseline, cfg, tokenizer, rows, "baseline:")
            for line, c, r in zip(lines, base_chosen, base_rejected):
                line.update(baseline_chosen_score=c, baseline_rejected_score=r, baseline_margin=c - r)
            base = pairwise_metrics(base_chosen, base_rejected)
            run_dir.metrics.update({"baseline_accuracy": base["accuracy"], "baseline_mean_margin": base["mean_margin"]})
            diff = bootstrap_paired_difference(wins, pair_wins(base_chosen, base_rejected), boot.resamples, boot.seed)
            run_dir.metrics["accuracy_difference"] = diff.as_dict()
        write_jsonl(run_dir.path / "scores.jsonl", lines)
        run_dir.add_output("scores", "scores.jsonl")
        run_dir.notes["data"] = ready.report["data"]
        m = run_dir.metrics
        log.info(
            "reward model on %d pairs: accuracy %.3f [%.3f, %.3f], mean margin %.3f",
            len(rows),
            m["accuracy"],
            m["accuracy_ci95"]["ci_low"],
            m["accuracy_ci95"]["ci_high"],
            m["mean_margin"],
        )
        if ready.baseline is not None:
            d = m["accuracy_difference"]
            log.info(
                "baseline: accuracy %.3f; difference %+.3f [%+.3f, %+.3f] (paired)",
                m["baseline_accuracy"],
                d["mean"],
                d["ci_low"],
                d["ci_high"],
            )
        device.record(run_dir, cfg)
        return runs.finish(run_dir)
