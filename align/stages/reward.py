"""Reward model training (TRL RewardTrainer, Bradley-Terry loss on preference pairs).

The reward model starts from a policy, usually the SFT run (`model: runs/sft-...`): its earlier
adapters are merged in and a fresh one-output score head is added. With LoRA (default) the adapter
and the score head are trained; `lora.enabled: false` trains all weights (on a 135M model this was
as fast per pair on CPU and more accurate; LoRA's gain is memory on large models).

A pair over `max_length` tokens keeps the last turns of its prompt that fit (`data.long_prompts`,
counted), or is counted and left out before training (TRL would drop it with only a progress-bar
line). Batches group pairs of similar length (transformers' length-grouped sampler, TRL's default
is random order); the share of padding in them is recorded (`train_padding_fraction`). After
training, pairwise accuracy and mean margin are measured on the held-out split (`data.test` or
`data.test_fraction`) with exactly the training formatting; the stage refuses to start when a run
it builds on trained on those prompts (align/data/splits.py). `data.validation_fraction` sets aside
pairs of the training side, scored the same way (`validation_*` metrics), for choosing settings
(LoRA or full, size, learning rate) without reading the test split.

Checkpoints (`training.save_strategy: steps`, `training.save_steps`) go into the run's `checkpoints/`, and a
run that stopped continues with `resume_from: latest` (align/core/checkpoints.py). With
`training.eval_strategy: steps` the trainer measures loss, accuracy and margin every `training.eval_steps`
on the validation split (`data.validation_fraction`), else the test split (eval_* in metrics.jsonl).

`margin`: with pulled annotations, TRL's margin term (loss = -log sigmoid(r_c - r_r - m)) can ask
for a larger gap on pairs annotators agreed on (`agreement`) or marked as strong (`strength`).
`data.weighting` reads each pair's `p_chosen` instead: label_smoothing is the soft Bradley-Terry target
-[p log sigmoid(r_c - r_r) + (1 - p) log sigmoid(r_r - r_c)], weight scales the pair's loss by 2p - 1;
`data.ties` (davidson | rao_kupper) trains on pairs judged a tie with a tie model of Bradley-Terry.
Both replace only TRL's loss (align/core/preference_losses.py), and neither combines with `margin`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace
from typing import Literal

from align.core import checkpoints, device, preference_losses, prefix_sharing, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.prefix_sharing import PrefixSharing, reward_trainer_class
from align.core.training import (
    Checkpointing,
    TrainStageConfig,
    attach_logging,
    bind_output_dir,
    count_trainable,
    discard_trainer_scratch,
    eval_dataset,
    eval_split,
    final_train_metrics,
    trainer_refusals,
    training_arguments,
)
from align.data.length import LENGTH, count_padding, grouping_refusal, pair_budget
from align.data.preferences import PreferenceDataConfig, load_splits
from align.data.splits import check_upstream
from align.models import (
    load_reward_model,
    load_tokenizer,
    resolve_model,
    save_model,
    trainable_setup,
)
from align.scoring import pair_scores, pairwise_metrics

log = logging.getLogger(__name__)

STAGE = "reward"
DEFAULT_TRAINING = {
    "learning_rate": 1e-4,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "logging_steps": 5,
    "lr_scheduler_type": "linear",
    # Batches of similar length (transformers' LengthGroupedSampler over the measured `length` column,
    # which TRL's column pruning would otherwise remove before the sampler reads it).
    "train_sampling_strategy": "group_by_length",
    "remove_unused_columns": False,
}


@dataclass
class Config(Checkpointing, TrainStageConfig):
    """`align reward` settings."""

    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    """Preference pairs (and the held-out split the accuracy is measured on)."""
    margin: Literal["none", "agreement", "strength"] = "none"
    """Per-pair margin from pulled annotations: none | agreement | strength (see docstring)."""
    eval_batch_size: int = 8
    """Batch size for scoring the held-out pairs."""
    prefix_sharing: PrefixSharing = "auto"
    """Compute each pair's prompt once (one row [prompt, chosen, rejected]): auto | true | false (align/core/prefix_sharing.py)."""


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    # Everything that can fail on user input is checked here, before the run directory exists.
    from trl import RewardConfig

    args = training_arguments(
        RewardConfig,
        cfg.training,
        {**DEFAULT_TRAINING, "max_length": cfg.max_length, "seed": cfg.seed},
        dtype=cfg.dtype,
    )
    grouping_refusal(args)
    if cfg.margin != "none" and preference_losses.label_aware(cfg.data):
        raise AlignError(
            f"margin={cfg.margin} is TRL's margin term, and data.weighting={cfg.data.weighting}, "
            f"data.ties={cfg.data.ties} replace that loss; use one: margin=none, or data.weighting=none and data.ties=drop"
        )
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    train, test = load_splits(cfg.data, fits=pair_budget(tokenizer, cfg.max_length, cfg.data.long_prompts))
    split = check_upstream(STAGE, cfg.data, test.prompts if test is not None else [], [source.record])
    rows, missing_margin = _with_margins(train.rows, cfg.margin)
    data = {**train.report, "pairs_trained": len(rows)}
    if cfg.data.ties != "drop":
        data["ties_trained"] = sum(bool(r.get("tie")) for r in rows)
    if cfg.margin != "none":
        data["pairs_without_margin"] = missing_margin
    report = {
        "model": source.stable_ref,
        "data": data,
        "test_data": test.report if test is not None else None,
        "split": split,
    }
    if train.validation is not None:
        report["validation_data"] = train.validation.report
    evaluation = eval_split(
        args,
        train.validation.rows if train.validation is not None else None,
        test.rows if test is not None else None,
        "pairs",
    )
    # eval_batch_size scores the held-out pairs after training: it does not change what is trained.
    fingerprint = checkpoints.fingerprint(
        cfg, STAGE, args, _trainer_rows(rows, cfg.data), [source.record], free=("eval_batch_size",)
    )
    resume = checkpoints.plan(cfg, fingerprint)
    if resume is not None:
        report["resume"] = {"checkpoint": str(resume.checkpoint), "step": resume.step}
    return SimpleNamespace(
        args=args,
        source=source,
        tokenizer=tokenizer,
        rows=rows,
        test=test,
        validation=train.validation,
        report=report,
        evaluation=evaluation,
        fingerprint=fingerprint,
        resume=resume,
    )


def run(cfg: Config) -> dict:
    device.check_quantization(cfg.quantization)  # this machine can load it (a dry run needs no GPU)
    ready = prepare(cfg)
    args, source, tokenizer, rows, test = ready.args, ready.source, ready.tokenizer, ready.rows, ready.test

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("model", source.record)
        run_dir.add_input("data.train", cfg.data.train)
        if cfg.data.test:
            run_dir.add_input("data.test", cfg.data.test)

        run_dir.notes["data"] = ready.report["data"]
        run_dir.notes["split"] = ready.report["split"]
        resume_path = checkpoints.take_over(run_dir, ready.resume)

        from datasets import Dataset
        from transformers import set_seed

        set_seed(cfg.seed)
        model = load_reward_model(
            source,
            cfg.dtype,
            cfg.trust_remote_code,
            pad_token_id=tokenizer.pad_token_id,
            quantization=cfg.quantization,
            attn_implementation=cfg.attn_implementation,
        )
        lora_config = trainable_setup(model, cfg, "SEQ_CLS", run_dir)
        bind_output_dir(args, run_dir)
        trainer_class = reward_trainer_class(cfg.prefix_sharing)
        if preference_losses.label_aware(cfg.data):
            trainer_class = preference_losses.reward_trainer_class(trainer_class, cfg.data)
        to_rows = partial(_trainer_rows, data=cfg.data)
        with trainer_refusals("RewardTrainer", cfg.training, building=True):
            trainer = trainer_class(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(to_rows(rows)),
                eval_dataset=eval_dataset(run_dir, ready.evaluation, to_rows),
                processing_class=tokenizer,
                peft_config=lora_config,
            )
        attach_logging(trainer, run_dir, {"loss": "loss", "accuracy": "acc", "margin": "margin"})
        checkpoints.attach(trainer, run_dir, ready.fingerprint)
        padding = count_padding(trainer)
        run_dir.notes["parameters"] = count_trainable(trainer.model)
        log.info("reward: %d pairs, %s", len(rows), run_dir.notes["parameters"])
        with trainer_refusals("RewardTrainer", cfg.training, building=False):
            trainer.train(resume_from_checkpoint=resume_path)
        run_dir.notes["prefix_sharing"] = prefix_sharing.report(trainer, cfg.prefix_sharing)

        save_model(run_dir, trainer, tokenizer, source, cfg.lora, task="reward")
        discard_trainer_scratch(run_dir)
        checkpoints.conclude(run_dir, cfg.keep_checkpoints)
        run_dir.metrics.update(
            {f"train_{k}" if not k.startswith("train_") else k: v for k, v in final_train_metrics(trainer).items()}
        )
        run_dir.metrics["train_padding_fraction"] = padding.fraction
        run_dir.notes["batches"] = padding.report(str(args.train_sampling_strategy))
        for split_name, held in (("validation", ready.validation), ("test", test)):
            if held is None:
                continue
            scored = evaluate_pairs(trainer.model, tokenizer, held.rows, cfg.max_length, cfg.eval_batch_size)
            scored["pairs"] = len(held.rows)
            run_dir.metrics.update({f"{split_name}_{k}": v for k, v in scored.items()})
            run_dir.notes[f"{split_name}_data"] = held.report
            log.info(
                "reward model on %d %s pairs: accuracy %.3f, mean margin %.3f",
                scored["pairs"],
                split_name,
                scored["accuracy"],
                scored["mean_margin"],
            )
        device.record(run_dir, cfg, trainer.model)
        return runs.finish(run_dir)


def evaluate_pairs(model, tokenizer, rows, max_length: int, batch_size: int) -> dict[str, float]:
    """Pairwise accuracy and mean margin; over-long conversations keep their last max_length tokens."""
    return pairwise_metrics(*pair_scores(model, tokenizer, rows, batch_size, max_length))


def _with_margins(rows: list[dict], margin: str) -> tuple[list[dict], int]:
    """Attach TRL's `margin` column from a pulled field. A pair without the field (strength is an
    optional question) gets margin 0, i.e. the plain Bradley-Terry loss; how many is counted."""
    if margin == "none":
        return rows, 0
    if not any(r.get(margin) is not None for r in rows):
        raise AlignError(
            f"margin={margin} but no training pair has a '{margin}' field (it comes from `align annotate pull`); "
            "use margin=none for this data"
        )
    missing = sum(1 for r in rows if r.get(margin) is None)
    if missing:
        log.warning("%d of %d pairs have no '%s'; they train with margin 0", missing, len(rows), margin)
    return [{**r, "margin": float(r.get(margin) or 0.0)} for r in rows], missing


def _trainer_rows(rows: list[dict], data: PreferenceDataConfig | None = None) -> list[dict]:
    # Only the columns RewardTrainer reads (and, with data.weighting/ties, the loss): extra fields (votes, ids)
    # would confuse its collator.
    keep = ("prompt", "chosen", "rejected", "margin", LENGTH)
    return preference_losses.with_label_columns([{k: r[k] for k in keep if k in r} for r in rows], rows, data)
