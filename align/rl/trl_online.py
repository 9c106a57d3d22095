"""RLOO and GRPO through TRL 1.16's RLOOTrainer / GRPOTrainer, with align's reward model.

The reward model (adapters merged, frozen) is passed as TRL's reward function together with its
tokenizer; TRL then scores `apply_chat_template(prompt + completion)`, the reward stage's own
formatting. The policy gets a LoRA adapter through `peft_config`, so TRL's reference is the same
model with the adapter disabled. Generation: transformers' `generate` unless `training.use_vllm`
is set (`vllm_mode: colocate` on one GPU, `server` against `trl vllm-serve`); on this CPU
transformers is what runs.

Checkpoints (`checkpoint_every`, `checkpoint_dir`, `resume_from`) are transformers' own: the trainer
writes the adapter, optimizer, scheduler, RNG states and trainer state into its scratch directory,
and `publish_checkpoints` then moves each one into `checkpoint_dir/step-N` with align's
`checkpoint.json` beside it (renamed into place, so a half-written checkpoint never looks complete).
A resumed run hands that directory to `Trainer.train(resume_from_checkpoint=...)`, which restores
all of it and skips the prompts already used.

Logged per step besides TRL's own metrics: `time_generation` (TRL's `_generate`), `time_scoring`
(its reward computation), `time_training` (the rest of the step), and `reward_with_kl` = reward -
beta * kl * mean completion length, where `kl` is TRL's per-token estimate (k3, not PPO's k1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from align.core.errors import AlignError
from align.core.training import (
    attach_logging,
    bind_output_dir,
    count_trainable,
    discard_trainer_scratch,
    final_train_metrics,
    training_arguments,
)
from align.models import load_policy, load_reward_model, peft_config

log = logging.getLogger(__name__)

# Set from the top-level config (one name per setting across the three algorithms).
OWNED = {
    "max_steps": "steps",
    "per_device_train_batch_size": "batch_size",
    "num_generations": "num_generations",
    "max_completion_length": "max_new_tokens",
    "temperature": "temperature",
    "beta": "kl_coef",
    "learning_rate": "learning_rate",
    "seed": "seed",
}
METRIC_NAMES = {
    "reward": "reward",
    "reward_with_kl": "reward+kl",
    "kl": "kl",
    "entropy": "entropy",
    "completions/mean_length": "len",
    "clip_ratio/region_mean": "clip",
}


def trl_config_class(algorithm: str):
    from trl import GRPOConfig, RLOOConfig

    return {"rloo": RLOOConfig, "grpo": GRPOConfig}[algorithm]


def trl_arguments(cfg):
    """TRL's config for `cfg.algorithm`, built (and checked) before any run directory exists."""
    for key, ours in OWNED.items():
        if key in cfg.training:
            raise AlignError(f"'training.{key}' is set by align from '{ours}'; set {ours} at the top level instead")
    # The offline stages accept these (align/core/checkpoints.py); align ppo has its own for both.
    for key, ours in (
        ("save_strategy", "checkpoint_every and checkpoint_dir"),
        ("save_steps", "checkpoint_every"),
        ("eval_strategy", "eval.prompts (held-out prompts scored after training)"),
    ):
        if key in cfg.training:
            raise AlignError(f"'training.{key}' is not used by align ppo; set {ours} at the top level instead")
    return training_arguments(
        trl_config_class(cfg.algorithm),
        cfg.training,
        {
            "max_steps": cfg.steps,
            "per_device_train_batch_size": cfg.batch_size,
            "num_generations": cfg.num_generations,
            "max_completion_length": cfg.max_new_tokens,
            "temperature": cfg.temperature,
            "beta": cfg.kl_coef,
            "learning_rate": cfg.learning_rate,
            "seed": cfg.seed,
            "logging_steps": 1,
            "lr_scheduler_type": "constant",
        },
        dtype=cfg.dtype,
    )


def train_trl(cfg, args, source, reward_source, tokenizer, reward_tokenizer, prompts, run_dir, resume=None):
    """Train with TRL's trainer; returns the peft policy. `resume`: the checkpoint record to continue from."""
    from datasets import Dataset

    # TRL's trainer places both (the reward model through accelerate, as an evaluation-mode model).
    reward_model = (
        load_reward_model(
            reward_source,
            cfg.dtype,
            cfg.trust_remote_code,
            pad_token_id=reward_tokenizer.pad_token_id,
            attn_implementation=cfg.attn_implementation,
        )
        .requires_grad_(False)
        .eval()
    )
    policy = load_policy(source, cfg.dtype, cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
    bind_output_dir(args, run_dir)
    if cfg.checkpoint_every:
        from transformers.trainer_utils import SaveStrategy

        args.save_strategy, args.save_steps = SaveStrategy.STEPS, cfg.checkpoint_every
    # The offline stages count input tokens for their tok/s; an online trainer's batches are prompts in text
    # form, which transformers cannot count, and it warned on every step ("Tried to track the number of
    # tokens seen"). The generation and training timings logged below say where the time goes.
    args.include_num_input_tokens_seen = "no"
    trainer = _timed(cfg.algorithm)(
        model=policy,
        reward_funcs=reward_model,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p.messages} for p in prompts]),
        processing_class=tokenizer,
        reward_processing_classes=reward_tokenizer,
        peft_config=peft_config(cfg.lora, "CAUSAL_LM", policy, cfg.trainable_layers),
    )
    attach_logging(trainer, run_dir, METRIC_NAMES)
    if cfg.checkpoint_every:
        trainer.add_callback(publish_checkpoints(cfg, prompts))
    run_dir.notes["parameters"] = count_trainable(trainer.model)
    log.info(
        "%s: %d steps x %d responses (%d per prompt), beta %s, %s",
        cfg.algorithm,
        cfg.steps,
        cfg.batch_size,
        cfg.num_generations,
        cfg.kl_coef,
        run_dir.notes["parameters"],
    )
    if resume is not None:
        log.info("resuming from %s at step %d", cfg.resume_from, resume["step"])
        run_dir.metrics["first_step"] = resume["step"] + 1
    trainer.train(resume_from_checkpoint=cfg.resume_from)
    discard_trainer_scratch(run_dir)
    metrics = final_train_metrics(trainer)
    run_dir.metrics.update({k if k.startswith("train_") else f"train_{k}": v for k, v in metrics.items()})
    first = next((e["reward"] for e in trainer.state.log_history if "reward" in e), None)
    if first is not None:
        run_dir.metrics["train_first_reward"] = first
    for key in ("time_generation", "time_scoring", "time_training"):
        run_dir.metrics[f"total_{key}_s"] = round(sum(e.get(key, 0.0) for e in trainer.state.log_history), 2)
    return trainer.model


def publish_checkpoints(cfg, prompts):
    """A transformers callback: each checkpoint the trainer has just written (all files, all ranks) is
    moved to `checkpoint_dir/step-N` by the main process; the last step's is dropped (the run itself
    holds the result)."""
    import shutil

    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from align.core import distributed
    from align.rl.checkpoints import publish_checkpoint

    class PublishCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            # Every rank writes its own RNG state into the checkpoint: wait for all before moving it.
            distributed.barrier(distributed.world_size())
            if state.is_world_process_zero:
                written = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
                if state.global_step < cfg.steps:
                    publish_checkpoint(cfg, state.global_step, prompts, lambda tmp: shutil.move(str(written), str(tmp)))
                else:
                    shutil.rmtree(written, ignore_errors=True)
            distributed.barrier(distributed.world_size())

    return PublishCheckpoints()


def _timed(algorithm: str):
    """TRL's trainer class with generation and scoring timed into its logged metrics."""
    from trl import GRPOTrainer, RLOOTrainer

    base = {"rloo": RLOOTrainer, "grpo": GRPOTrainer}[algorithm]

    class Timed(base):
        def _generate(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super()._generate(*args, **kwargs)
            finally:
                self._seconds["generation"] += time.perf_counter() - start

        def _calculate_rewards(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super()._calculate_rewards(*args, **kwargs)
            finally:
                self._seconds["scoring"] += time.perf_counter() - start

        def log(self, logs, start_time=None):
            now = time.perf_counter()
            if "loss" in logs and self.model.training:
                # Steps since the previous log; the first one is timed from the start of training.
                elapsed = now - (self._last_log or self._train_start)
                logs["time_generation"] = self._seconds["generation"]
                logs["time_scoring"] = self._seconds["scoring"]
                logs["time_training"] = max(elapsed - self._seconds["generation"] - self._seconds["scoring"], 0.0)
                self._seconds = {"generation": 0.0, "scoring": 0.0}
                self._last_log = now
                metrics = self._metrics["train"]
                if metrics.get("reward") and metrics.get("completions/mean_length"):
                    kl = sum(metrics["kl"]) / len(metrics["kl"]) if metrics.get("kl") else 0.0
                    reward = sum(metrics["reward"]) / len(metrics["reward"])
                    length = sum(metrics["completions/mean_length"]) / len(metrics["completions/mean_length"])
                    logs["reward_with_kl"] = reward - self.beta * kl * length
            super().log(logs, start_time)

        def train(self, *args, **kwargs):
            self._train_start, self._last_log = time.perf_counter(), None
            self._seconds = {"generation": 0.0, "scoring": 0.0}
            return super().train(*args, **kwargs)

    return Timed
