"""Supervised fine-tuning (TRL SFTTrainer) on conversations.

Supports: `model: embedded`, any local Hugging Face directory or an earlier run; LoRA (default) or
full fine-tuning; conversation files in the formats of `align/data/conversations.py`; replay of
general conversations mixed in at `data.replay.fraction` (a guard against forgetting; counted in the
manifest's `notes.data.replay`).
Loss falls on the last assistant turn only (TRL's prompt-completion format): the model learns the
replies, not to imitate users. Examples over `max_length` tokens are counted and left out rather
than truncated (truncation would cut the reply the loss is on).

Checkpoints (`training.save_strategy: steps`, `training.save_steps`) go into the run's `checkpoints/`, and a
run that stopped continues with `resume_from: latest` (align/core/checkpoints.py). With
`training.eval_strategy: steps` the held-out examples (`data.test_fraction`) are evaluated every
`training.eval_steps` (eval_loss, eval_mean_token_accuracy in metrics.jsonl and the trackers).

Writes a run with `model/` (adapter or full weights + tokenizer), `metrics.jsonl`, `manifest.json`.
Raises AlignError (exit 2) for a bad config, data or model path, or when prompts it leaves out were
trained on by the run it starts from (align/data/splits.py), before any run directory exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

from align.core import checkpoints, device, runs
from align.core.config import to_dict
from align.core.training import (
    Checkpointing,
    TrainStageConfig,
    attach_logging,
    bind_output_dir,
    count_trainable,
    discard_trainer_scratch,
    eval_dataset,
    eval_split,
    evaluating,
    final_train_metrics,
    trainer_refusals,
    training_arguments,
)
from align.data.conversations import SFTDataConfig, load_sft_examples, sft_pool
from align.data.length import token_budget
from align.data.splits import check_upstream
from align.models import (
    load_policy,
    load_tokenizer,
    resolve_model,
    save_model,
    trainable_setup,
)

log = logging.getLogger(__name__)

STAGE = "sft"
DEFAULT_TRAINING = {
    "learning_rate": 2e-4,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "logging_steps": 5,
    "lr_scheduler_type": "cosine",
}


@dataclass
class Config(Checkpointing, TrainStageConfig):
    """`align sft` settings."""

    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    """Conversations to fine-tune on."""


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    # Everything that can fail on user input is checked here, before the run directory exists.
    from trl import SFTConfig

    args = training_arguments(
        SFTConfig, cfg.training, {**DEFAULT_TRAINING, "max_length": cfg.max_length, "seed": cfg.seed}, dtype=cfg.dtype
    )
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    fits = token_budget(tokenizer, cfg.max_length, ("completion",))
    rows, data_report, held_out = load_sft_examples(cfg.data, fits=fits)
    split = check_upstream(STAGE, cfg.data, held_out, [source.record])
    # The held-out examples themselves (load_sft_examples gives their prompts) when evaluated during training.
    evaluation = (
        eval_split(args, None, fits(sft_pool(cfg.data)[1], "held-out examples")[0], "examples")
        if evaluating(args)
        else None
    )
    fingerprint = checkpoints.fingerprint(cfg, STAGE, args, rows, [source.record])
    resume = checkpoints.plan(cfg, fingerprint)
    report = {"model": source.stable_ref, "data": {**data_report, "examples_trained": len(rows)}, "split": split}
    if resume is not None:
        report["resume"] = {"checkpoint": str(resume.checkpoint), "step": resume.step}
    return SimpleNamespace(
        args=args,
        source=source,
        tokenizer=tokenizer,
        rows=rows,
        report=report,
        evaluation=evaluation,
        fingerprint=fingerprint,
        resume=resume,
    )


def run(cfg: Config) -> dict:
    device.check_quantization(cfg.quantization)  # this machine can load it (a dry run needs no GPU)
    ready = prepare(cfg)
    args, source, tokenizer, rows = ready.args, ready.source, ready.tokenizer, ready.rows

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("model", source.record)
        run_dir.add_input("data.train", cfg.data.train)
        if cfg.data.replay.path:
            run_dir.add_input("data.replay", cfg.data.replay.path)

        run_dir.notes["data"] = ready.report["data"]
        run_dir.notes["split"] = ready.report["split"]
        resume_path = checkpoints.take_over(run_dir, ready.resume)

        from datasets import Dataset
        from transformers import set_seed
        from trl import SFTTrainer

        set_seed(cfg.seed)
        model = load_policy(
            source,
            cfg.dtype,
            cfg.trust_remote_code,
            quantization=cfg.quantization,
            attn_implementation=cfg.attn_implementation,
        )
        lora_config = trainable_setup(model, cfg, "CAUSAL_LM", run_dir)
        bind_output_dir(args, run_dir)
        with trainer_refusals("SFTTrainer", cfg.training, building=True):
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(rows),
                eval_dataset=eval_dataset(run_dir, ready.evaluation),
                processing_class=tokenizer,
                peft_config=lora_config,
            )
        attach_logging(trainer, run_dir, {"loss": "loss", "mean_token_accuracy": "token_acc"})
        checkpoints.attach(trainer, run_dir, ready.fingerprint)
        run_dir.notes["parameters"] = count_trainable(trainer.model)
        replay = ready.report["data"].get("replay")
        log.info(
            "sft: %d examples%s, %s",
            len(rows),
            f" ({replay['examples']} of them replay)" if replay else "",
            run_dir.notes["parameters"],
        )
        with trainer_refusals("SFTTrainer", cfg.training, building=False):
            trainer.train(resume_from_checkpoint=resume_path)

        save_model(run_dir, trainer, tokenizer, source, cfg.lora, task="causal_lm")
        discard_trainer_scratch(run_dir)
        checkpoints.conclude(run_dir, cfg.keep_checkpoints)
        run_dir.metrics.update(final_train_metrics(trainer))
        device.record(run_dir, cfg, trainer.model)
        return runs.finish(run_dir)
