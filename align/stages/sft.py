"""Supervised fine-tuning (TRL SFTTrainer) on conversations.

Supports: `model: embedded`, any local Hugging Face directory or an earlier run; LoRA (default) or
full fine-tuning; conversation files in the formats of `align/data/conversations.py`; replay of
general conversations mixed in at `data.replay.fraction` (a guard against forgetting; counted in the
manifest's `notes.data.replay`).
Loss falls on the last assistant turn only (TRL's prompt-completion format): the model learns the
replies, not to imitate users. Examples over `max_length` tokens are counted and left out rather
than truncated (truncation would cut the reply the loss is on).

Writes a run with `model/` (adapter or full weights + tokenizer), `metrics.jsonl`, `manifest.json`.
Raises AlignError (exit 2) for a bad config, data or model path, or when prompts it leaves out were
trained on by the run it starts from (align/data/splits.py), before any run directory exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

from align.core import device, runs
from align.core.config import to_dict
from align.core.training import (
    TrainStageConfig,
    attach_logging,
    bind_output_dir,
    count_trainable,
    discard_trainer_scratch,
    final_train_metrics,
    trainer_refusals,
    training_arguments,
)
from align.data.conversations import SFTDataConfig, load_sft_examples
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
class Config(TrainStageConfig):
    """`align sft` settings."""

    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    """Conversations to fine-tune on."""


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    # Everything that can fail on user input is checked here, before the run directory exists.
    from trl import SFTConfig

    args = training_arguments(SFTConfig, cfg.training, {**DEFAULT_TRAINING, "max_length": cfg.max_length, "seed": cfg.seed},
                              dtype=cfg.dtype)
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    rows, data_report, held_out = load_sft_examples(cfg.data, fits=token_budget(tokenizer, cfg.max_length, ("completion",)))
    split = check_upstream(STAGE, cfg.data, held_out, [source.record])
    report = {"model": source.stable_ref, "data": {**data_report, "examples_trained": len(rows)}, "split": split}
    return SimpleNamespace(args=args, source=source, tokenizer=tokenizer, rows=rows, report=report)


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

        from datasets import Dataset
        from transformers import set_seed
        from trl import SFTTrainer

        set_seed(cfg.seed)
        model = load_policy(source, cfg.dtype, cfg.trust_remote_code, quantization=cfg.quantization,
                            attn_implementation=cfg.attn_implementation)
        lora_config = trainable_setup(model, cfg, "CAUSAL_LM", run_dir)
        bind_output_dir(args, run_dir)
        with trainer_refusals("SFTTrainer", cfg.training, building=True):
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(rows),
                processing_class=tokenizer,
                peft_config=lora_config,
            )
        attach_logging(trainer, run_dir, {"loss": "loss", "mean_token_accuracy": "token_acc"})
        run_dir.notes["parameters"] = count_trainable(trainer.model)
        replay = ready.report["data"].get("replay")
        log.info("sft: %d examples%s, %s", len(rows), f" ({replay['examples']} of them replay)" if replay else "",
                 run_dir.notes["parameters"])
        with trainer_refusals("SFTTrainer", cfg.training, building=False):
            trainer.train()

        save_model(run_dir, trainer, tokenizer, source, cfg.lora, task="causal_lm")
        discard_trainer_scratch(run_dir)
        run_dir.metrics.update(final_train_metrics(trainer))
        device.record(run_dir, cfg, trainer.model)
        return runs.finish(run_dir)

