"""Direct preference optimisation (TRL DPOTrainer) of a policy on preference pairs.

The policy starts from `model` (usually the SFT run, its adapter merged in). With LoRA (default) the
reference policy is that same model with the new adapter disabled: one copy of the weights in
memory. With full fine-tuning align passes TRL an explicit reference (a second copy of the starting
policy): TRL's own fallback would reload the checkpoint by name and miss merged SFT adapters.

`loss_type` is any of TRL's DPO losses (sigmoid = the DPO paper, ipo, hinge, robust, ...), or a list
of them combined with `training.loss_weights`. Pairs over `max_length` are counted and left out.
After training the stage reports TRL's implicit-reward accuracy and margin on the held-out split.

`reward_model` (optional, e.g. the reward run of the same pipeline): after training, the policy and
the reference answer up to `reward_eval.prompts` held-out prompts (greedy) and the reward model
scores both; the manifest gets their mean rewards and the policy's win rate. This is the reward-model
view of the change, and it ties the reward run into the DPO run's lineage.

Agreement from pulled annotations: `data.min_agreement` filters pairs; TRL's global
`training.label_smoothing` (conservative DPO) treats labels as noisy with that flip probability.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import (
    TrainStageConfig,
    attach_logging,
    bind_output_dir,
    count_trainable,
    discard_trainer_scratch,
    final_train_metrics,
    training_arguments,
)
from align.data.length import token_budget
from align.data.preferences import PreferenceDataConfig, load_splits
from align.models import load_policy, load_tokenizer, peft_config, resolve_model, save_model

log = logging.getLogger(__name__)

STAGE = "dpo"
DEFAULT_TRAINING = {
    "learning_rate": 5e-5,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 2,
    "logging_steps": 5,
    "lr_scheduler_type": "linear",
}
# TRL 1.16's DPO losses (trl/trainer/dpo_config.py). Checked here so a typo fails before loading.
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)


@dataclass
class RewardEvalConfig:
    """Scoring policy vs reference replies with a reward model after training."""

    prompts: int = 16
    """Held-out prompts to answer (0 turns the evaluation off)."""
    max_new_tokens: int = 48
    """Reply length budget for the evaluation."""
    batch_size: int = 8
    """Generation and scoring batch size."""


@dataclass
class Config(TrainStageConfig):
    """`align dpo` settings."""

    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    """Preference pairs (and the held-out split metrics are measured on)."""
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    """TRL DPO loss(es): sigmoid, ipo, hinge, robust, apo_zero, ... (a list combines them)."""
    beta: float = 0.1
    """Strength of the KL penalty to the reference (higher: stay closer)."""
    reward_model: str | None = None
    """Optional reward-model run used to score policy vs reference replies after training."""
    reward_eval: RewardEvalConfig = field(default_factory=RewardEvalConfig)
    """Settings of that evaluation."""

    def __post_init__(self):
        super().__post_init__()
        for loss in self.loss_type:
            if loss not in LOSS_TYPES:
                from align.core.errors import nearest

                raise AlignError(f"unknown loss_type '{loss}'{nearest(loss, LOSS_TYPES)}; one of {', '.join(LOSS_TYPES)}")
        if self.beta <= 0:
            raise AlignError(f"'beta' must be > 0, got {self.beta}")


def run(cfg: Config) -> dict:
    from trl import DPOConfig

    if {"loss_type", "beta", "max_length"} & set(cfg.training):
        raise AlignError("set loss_type, beta and max_length at the top level of the config, not under training:")
    args = training_arguments(DPOConfig, cfg.training, {
        **DEFAULT_TRAINING, "max_length": cfg.max_length, "seed": cfg.seed,
        "loss_type": cfg.loss_type, "beta": cfg.beta,
    })
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    reward_source = resolve_model(cfg.reward_model, cfg.trust_remote_code) if cfg.reward_model else None
    if reward_source is not None and reward_source.task != "reward":
        raise AlignError(f"reward_model {cfg.reward_model} is a {reward_source.task} run, not a reward model")
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    train, test = load_splits(cfg.data, fits=token_budget(tokenizer, cfg.max_length))

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("model", source.record)
        if reward_source is not None:
            run_dir.add_input_record("reward_model", reward_source.record)
        run_dir.add_input("data.train", cfg.data.train)
        if cfg.data.test:
            run_dir.add_input("data.test", cfg.data.test)

        rows = train.rows
        run_dir.notes["data"] = {**train.report, "pairs_trained": len(rows)}
        test_rows = test.rows if test is not None else None
        if test is not None:
            run_dir.notes["test_data"] = test.report

        from datasets import Dataset
        from transformers import set_seed
        from trl import DPOTrainer

        set_seed(cfg.seed)
        model = load_policy(source, cfg.dtype, cfg.trust_remote_code, quantization=cfg.quantization)
        # LoRA: reference = adapter disabled (TRL does this when ref_model is None and peft_config is set).
        ref_model = None if cfg.lora.enabled else load_policy(source, cfg.dtype, cfg.trust_remote_code)
        bind_output_dir(args, run_dir)
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=Dataset.from_list(_trainer_rows(rows)),
            processing_class=tokenizer,
            peft_config=peft_config(cfg.lora, "CAUSAL_LM") if cfg.lora.enabled else None,
        )
        attach_logging(trainer, run_dir, {
            "loss": "loss", "rewards/accuracies": "acc", "rewards/margins": "margin",
        })
        run_dir.notes["parameters"] = count_trainable(trainer.model)
        log.info("dpo: %d pairs, loss %s, beta %s, %s", len(rows), "+".join(cfg.loss_type), cfg.beta,
                 run_dir.notes["parameters"])
        trainer.train()

        save_model(run_dir, trainer, tokenizer, source, cfg.lora, task="causal_lm")
        discard_trainer_scratch(run_dir)
        run_dir.metrics.update(final_train_metrics(trainer))
        if test_rows:
            held_out = trainer.evaluate(eval_dataset=Dataset.from_list(_trainer_rows(test_rows)))
            run_dir.metrics.update({k.replace("eval_", "test_"): v for k, v in held_out.items()
                                    if k.startswith("eval_rewards") or k == "eval_loss"})
            run_dir.metrics["test_pairs"] = len(test_rows)
            log.info("dpo on %d held-out pairs: reward accuracy %.3f, margin %.3f", len(test_rows),
                     held_out.get("eval_rewards/accuracies", float("nan")), held_out.get("eval_rewards/margins", float("nan")))
        if reward_source is not None and cfg.reward_eval.prompts > 0:
            prompts = [r["prompt"] for r in (test_rows or rows)][: cfg.reward_eval.prompts]
            from align.evaluation.policy_reward import compare_with_reward_model

            run_dir.metrics.update(compare_with_reward_model(
                trainer.model, tokenizer, reward_source, prompts, cfg.reward_eval, cfg.dtype, cfg.max_length,
                disable_adapter=cfg.lora.enabled, reference=ref_model,
            ))
        return runs.finish(run_dir)


def _trainer_rows(rows: list[dict]) -> list[dict]:
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
