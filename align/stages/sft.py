"""Supervised fine-tuning (TRL SFTTrainer) on conversations.

Supports: `model: embedded`, any local Hugging Face directory or an earlier run; LoRA (default) or
full fine-tuning; conversation files in the formats of `align/data/conversations.py`.
Loss falls on the last assistant turn only (TRL's prompt-completion format): the model learns the
replies, not to imitate users. Examples over `max_length` tokens are counted and left out rather
than truncated (truncation would cut the reply the loss is on).

Writes a run with `model/` (adapter or full weights + tokenizer), `metrics.jsonl`, `manifest.json`.
Raises AlignError (exit 2) for a bad config, data or model path, before any run directory exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from align.core import runs
from align.core.config import to_dict
from align.core.training import (
    attach_logging,
    TrainStageConfig,
    bind_output_dir,
    count_trainable,
    discard_trainer_scratch,
    final_train_metrics,
    training_arguments,
)
from align.data.conversations import SFTDataConfig, load_sft_examples
from align.data.length import token_budget
from align.models import load_policy, load_tokenizer, peft_config, resolve_model, save_model

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


def run(cfg: Config) -> dict:
    # Everything that can fail on user input is checked before the run directory exists.
    from trl import SFTConfig

    args = training_arguments(SFTConfig, cfg.training, {**DEFAULT_TRAINING, "max_length": cfg.max_length, "seed": cfg.seed})
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    rows, data_report = load_sft_examples(cfg.data, fits=token_budget(tokenizer, cfg.max_length, ("completion",)))

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("model", source.record)
        run_dir.add_input("data.train", cfg.data.train)

        run_dir.notes["data"] = {**data_report, "examples_trained": len(rows)}

        from datasets import Dataset
        from transformers import set_seed
        from trl import SFTTrainer

        set_seed(cfg.seed)
        model = load_policy(source, cfg.dtype, cfg.trust_remote_code, quantization=cfg.quantization)
        bind_output_dir(args, run_dir)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config(cfg.lora, "CAUSAL_LM") if cfg.lora.enabled else None,
        )
        attach_logging(trainer, run_dir, {"loss": "loss", "mean_token_accuracy": "token_acc"})
        run_dir.notes["parameters"] = count_trainable(trainer.model)
        log.info("sft: %d examples, %s", len(rows), run_dir.notes["parameters"])
        trainer.train()

        save_model(run_dir, trainer, tokenizer, source, cfg.lora, task="causal_lm")
        discard_trainer_scratch(run_dir)
        run_dir.metrics.update(final_train_metrics(trainer))
        return runs.finish(run_dir)

