"""Direct preference optimisation (TRL DPOTrainer) of a policy on preference pairs.

The policy starts from `model` (usually the SFT run, its adapter merged in). With LoRA (default) the
reference policy is that same model with the new adapter disabled: one copy of the weights in
memory. With full fine-tuning align passes TRL an explicit reference (a second copy of the starting
policy): TRL's own fallback would reload the checkpoint by name and miss merged SFT adapters.

`loss_type` is any of TRL's DPO losses (sigmoid = the DPO paper, ipo, hinge, robust, ...), or a list
of them combined with `training.loss_weights`. A pair over `max_length` keeps the last turns of its
prompt that fit (`data.long_prompts`) or is counted and left out. Batches group pairs of similar
length (transformers' length-grouped sampler; TRL's default is random order) and their padding
share is recorded (`train_padding_fraction`).
After training the stage reports TRL's implicit-reward accuracy and margin on the held-out split.

`reward_model` (optional, e.g. the reward run of the same pipeline): after training, the policy and
the reference answer up to `reward_eval.prompts` held-out prompts (greedy; without a held-out split
the stage refuses rather than score training prompts) and the reward model
scores both; the manifest gets their mean rewards and the policy's win rate, and
`held_out_replies.jsonl` the replies with their scores. This is the reward-model
view of the change, and it ties the reward run into the DPO run's lineage.

Checkpoints (`training.save_strategy: steps`, `training.save_steps`) go into the run's `checkpoints/`, and a
run that stopped continues with `resume_from: latest` (align/core/checkpoints.py). With
`training.eval_strategy: steps` TRL's DPO loss and implicit-reward accuracy and margin are measured every
`training.eval_steps` on the validation split (`data.validation_fraction`), else the test split.

Agreement from pulled annotations: `data.min_agreement` filters pairs. `data.weighting` reads each
pair's `p_chosen` (`align annotate pull`): label_smoothing is conservative DPO with a per-pair
eps = 1 - p_chosen, weight scales the pair's loss by 2 p_chosen - 1. `data.ties` (davidson |
rao_kupper) trains on pairs judged a tie with a tie model of Bradley-Terry (Chen et al. 2024) instead
of dropping them. Both replace only TRL's loss (align/core/preference_losses.py) and need TRL's
default loss (loss_type sigmoid). TRL's own global `training.label_smoothing` is read only by its
robust, exo_pair and aot losses (TRL 1.16's sigmoid loss ignores it), so with other losses it is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace

from align.core import checkpoints, device, preference_losses, prefix_sharing, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.prefix_sharing import PrefixSharing, dpo_trainer_class
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
    load_policy,
    load_tokenizer,
    resolve_model,
    save_model,
    trainable_setup,
)
from align.scoring import check_reward_model

log = logging.getLogger(__name__)

STAGE = "dpo"
DEFAULT_TRAINING = {
    "learning_rate": 5e-5,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 2,
    "logging_steps": 5,
    "lr_scheduler_type": "linear",
    # Batches of similar length (transformers' LengthGroupedSampler over the measured `length` column,
    # which TRL's column pruning would otherwise remove before the sampler reads it).
    "train_sampling_strategy": "group_by_length",
    "remove_unused_columns": False,
}
# TRL 1.16's DPO losses (trl/trainer/dpo_config.py). Checked here so a typo fails before loading.
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
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
class Config(Checkpointing, TrainStageConfig):
    """`align dpo` settings."""

    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    """Preference pairs (and the held-out split metrics are measured on)."""
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    """TRL DPO loss(es): sigmoid, ipo, hinge, robust, apo_zero, ... (a list combines them)."""
    beta: float = 0.1
    """Strength of the KL penalty to the reference (higher: stay closer)."""
    reference: str | None = None
    """The reference policy: unset = the starting `model` (with LoRA, the new adapter disabled); or a run or
    model directory, e.g. the first SFT policy while `model` is the previous round's (the feedback loop's
    `reference: start`). Must share the model's tokenizer."""
    reward_model: str | None = None
    """Optional reward-model run used to score policy vs reference replies after training."""
    reward_eval: RewardEvalConfig = field(default_factory=RewardEvalConfig)
    """Settings of that evaluation."""
    prefix_sharing: PrefixSharing = "auto"
    """Compute each pair's prompt once (one row [prompt, chosen, rejected]): auto | true | false (align/core/prefix_sharing.py)."""

    def __post_init__(self):
        super().__post_init__()
        for loss in self.loss_type:
            if loss not in LOSS_TYPES:
                from align.core.errors import nearest

                raise AlignError(
                    f"unknown loss_type '{loss}'{nearest(loss, LOSS_TYPES)}; one of {', '.join(LOSS_TYPES)}"
                )
        if self.beta <= 0:
            raise AlignError(f"'beta' must be > 0, got {self.beta}")


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    # Everything that can fail on user input is checked here, before the run directory exists.
    from trl import DPOConfig

    if {"loss_type", "beta", "max_length"} & set(cfg.training):
        raise AlignError("set loss_type, beta and max_length at the top level of the config, not under training:")
    args = training_arguments(
        DPOConfig,
        cfg.training,
        {
            **DEFAULT_TRAINING,
            "max_length": cfg.max_length,
            "seed": cfg.seed,
            "loss_type": cfg.loss_type,
            "beta": cfg.beta,
        },
        dtype=cfg.dtype,
    )
    grouping_refusal(args)
    check_label_losses(cfg, args)
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    reward_source = resolve_model(cfg.reward_model, cfg.trust_remote_code) if cfg.reward_model else None
    if reward_source is not None:
        check_reward_model(reward_source)
    reference = resolve_model(cfg.reference, cfg.trust_remote_code) if cfg.reference else None
    if reference is not None and reference.task != "causal_lm":
        raise AlignError(
            f"reference={cfg.reference} is a {reference.task} model, not a policy; give an SFT/DPO run or model directory"
        )
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    if reference is not None:
        ref_vocab = load_tokenizer(reference, cfg.trust_remote_code).get_vocab()
        if ref_vocab != tokenizer.get_vocab():
            raise AlignError(
                f"reference={cfg.reference} has a different tokenizer than model={cfg.model}; "
                "DPO compares their log-probabilities token by token, so they must share one"
            )
    train, test = load_splits(cfg.data, fits=pair_budget(tokenizer, cfg.max_length, cfg.data.long_prompts))
    split = check_upstream(
        STAGE,
        cfg.data,
        test.prompts if test is not None else [],
        [source.record, reward_source.record if reward_source is not None else None],
    )
    if reward_source is not None and cfg.reward_eval.prompts > 0 and (test is None or not test.rows):
        # Scoring replies to prompts the policy was just trained on would say nothing about held-out behaviour.
        raise AlignError(
            f"reward_model is set but there are no held-out prompts to compare policy and reference on "
            f"(data.test unset, data.test_fraction={cfg.data.test_fraction}); set data.test_fraction (e.g. 0.1) "
            "or data.test, or turn the comparison off with reward_eval.prompts=0"
        )
    report = {
        "model": source.stable_ref,
        "reward_model": reward_source.stable_ref if reward_source else None,
        "data": {
            **train.report,
            "pairs_trained": len(train.rows),
            **({"ties_trained": sum(bool(r.get("tie")) for r in train.rows)} if cfg.data.ties != "drop" else {}),
        },
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
    # The reward-model comparison runs after training: it does not change what is trained.
    fingerprint = checkpoints.fingerprint(
        cfg,
        STAGE,
        args,
        _trainer_rows(train.rows, cfg.data),
        [source.record, reference.record if reference is not None else None],
        free=("reward_model", "reward_eval"),
    )
    resume = checkpoints.plan(cfg, fingerprint)
    if resume is not None:
        report["resume"] = {"checkpoint": str(resume.checkpoint), "step": resume.step}
    return SimpleNamespace(
        args=args,
        source=source,
        reward_source=reward_source,
        reference=reference,
        tokenizer=tokenizer,
        train=train,
        test=test,
        report=report,
        evaluation=evaluation,
        fingerprint=fingerprint,
        resume=resume,
    )


def run(cfg: Config) -> dict:
    device.check_quantization(cfg.quantization)  # this machine can load it (a dry run needs no GPU)
    ready = prepare(cfg)
    args, source, reward_source, tokenizer = ready.args, ready.source, ready.reward_source, ready.tokenizer
    train, test = ready.train, ready.test

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("model", source.record)
        if reward_source is not None:
            run_dir.add_input_record("reward_model", reward_source.record)
        if ready.reference is not None:
            run_dir.add_input_record("reference", ready.reference.record)
        run_dir.add_input("data.train", cfg.data.train)
        if cfg.data.test:
            run_dir.add_input("data.test", cfg.data.test)

        rows = train.rows
        run_dir.notes["data"] = ready.report["data"]
        run_dir.notes["split"] = ready.report["split"]
        test_rows = test.rows if test is not None else None
        if test is not None:
            run_dir.notes["test_data"] = test.report
        resume_path = checkpoints.take_over(run_dir, ready.resume)

        from datasets import Dataset
        from transformers import set_seed

        set_seed(cfg.seed)
        model = load_policy(
            source,
            cfg.dtype,
            cfg.trust_remote_code,
            quantization=cfg.quantization,
            attn_implementation=cfg.attn_implementation,
        )
        # LoRA: reference = adapter disabled (TRL does this when ref_model is None and peft_config is set),
        # unless another reference is named.
        if ready.reference is not None:
            ref_model = load_policy(
                ready.reference, cfg.dtype, cfg.trust_remote_code, attn_implementation=cfg.attn_implementation
            )
        else:
            ref_model = (
                None
                if cfg.lora.enabled
                else load_policy(source, cfg.dtype, cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
            )
        lora_config = trainable_setup(model, cfg, "CAUSAL_LM", run_dir)
        bind_output_dir(args, run_dir)
        trainer_class = dpo_trainer_class(cfg.prefix_sharing)
        if preference_losses.label_aware(cfg.data):
            trainer_class = preference_losses.dpo_trainer_class(trainer_class, cfg.data)
        to_rows = partial(_trainer_rows, data=cfg.data)
        with trainer_refusals("DPOTrainer", cfg.training, building=True):
            trainer = trainer_class(
                model=model,
                ref_model=ref_model,
                args=args,
                train_dataset=Dataset.from_list(to_rows(rows)),
                eval_dataset=eval_dataset(run_dir, ready.evaluation, to_rows),
                processing_class=tokenizer,
                peft_config=lora_config,
            )
        attach_logging(
            trainer,
            run_dir,
            {
                "loss": "loss",
                "rewards/accuracies": "acc",
                "rewards/margins": "margin",
            },
        )
        checkpoints.attach(trainer, run_dir, ready.fingerprint)
        padding = count_padding(trainer)
        run_dir.notes["parameters"] = count_trainable(trainer.model)
        log.info(
            "dpo: %d pairs, loss %s, beta %s, %s",
            len(rows),
            "+".join(cfg.loss_type),
            cfg.beta,
            run_dir.notes["parameters"],
        )
        with trainer_refusals("DPOTrainer", cfg.training, building=False):
            trainer.train(resume_from_checkpoint=resume_path)
        run_dir.notes["prefix_sharing"] = prefix_sharing.report(trainer, cfg.prefix_sharing)

        save_model(run_dir, trainer, tokenizer, source, cfg.lora, task="causal_lm")
        discard_trainer_scratch(run_dir)
        checkpoints.conclude(run_dir, cfg.keep_checkpoints)
        run_dir.metrics.update(final_train_metrics(trainer))
        run_dir.metrics["train_padding_fraction"] = padding.fraction
        run_dir.notes["batches"] = padding.report(str(args.train_sampling_strategy))
        validation = train.validation
        if validation is not None:
            run_dir.notes["validation_data"] = validation.report
        for split_name, held_rows in (
            ("validation", validation.rows if validation is not None else None),
            ("test", test_rows),
        ):
            if not held_rows:
                continue
            held_out = trainer.evaluate(eval_dataset=Dataset.from_list(to_rows(held_rows)))
            run_dir.metrics.update(
                {
                    k.replace("eval_", f"{split_name}_"): v
                    for k, v in held_out.items()
                    if k.startswith("eval_rewards") or k == "eval_loss"
                }
            )
            run_dir.metrics[f"{split_name}_pairs"] = len(held_rows)
            log.info(
                "dpo on %d %s pairs: reward accuracy %.3f, margin %.3f",
                len(held_rows),
                split_name,
                held_out.get("eval_rewards/accuracies", float("nan")),
                held_out.get("eval_rewards/margins", float("nan")),
            )
        if reward_source is not None and cfg.reward_eval.prompts > 0:
            # One reply per distinct prompt: a prompt with several pairs would otherwise count several times.
            distinct = {json.dumps(r["prompt"], sort_keys=True): r["prompt"] for r in test_rows}
            prompts = list(distinct.values())[: cfg.reward_eval.prompts]
            from align.evaluation.policy_reward import compare_with_reward_model, replies_output

            run_dir.metrics.update(
                compare_with_reward_model(
                    trainer.model,
                    tokenizer,
                    reward_source,
                    prompts,
                    cfg.reward_eval,
                    cfg.dtype,
                    cfg.max_length,
                    disable_adapter=cfg.lora.enabled and ref_model is None,
                    reference=ref_model,
                    replies_path=replies_output(run_dir),
                )
            )
        device.record(run_dir, cfg, trainer.model)
        return runs.finish(run_dir)


# TRL's DPO losses that read its global `label_smoothing`.
READS_LABEL_SMOOTHING = ("robust", "exo_pair", "aot", "aot_unpaired")


def check_label_losses(cfg: Config, args) -> None:
    """Refuse settings whose effect would be silently lost: TRL's global label_smoothing with losses that ignore
    it, and `data.weighting` / `data.ties` with anything but TRL's default DPO loss (preference_losses.py)."""
    if getattr(args, "label_smoothing", 0.0) and not set(cfg.loss_type) & set(READS_LABEL_SMOOTHING):
        raise AlignError(
            f"training.label_smoothing={args.label_smoothing} is read only by TRL's {', '.join(READS_LABEL_SMOOTHING)} losses "
            f"(loss_type={'+'.join(cfg.loss_type)} ignores it); for conservative DPO from annotator agreement use "
            "data.weighting=label_smoothing on a pull run (per-pair eps = 1 - p_chosen), or loss_type=robust"
        )
    if not preference_losses.label_aware(cfg.data):
        return
    what = f"data.weighting={cfg.data.weighting}, data.ties={cfg.data.ties}"
    others = {
        "loss_type": cfg.loss_type != ["sigmoid"],
        "training.f_divergence_type": args.f_divergence_type != "reverse_kl",
        "training.ld_alpha": args.ld_alpha is not None,
        "training.use_weighting": bool(args.use_weighting),
        "training.label_smoothing": bool(args.label_smoothing),
    }
    clashes = [k for k, bad in others.items() if bad]
    if clashes:
        raise AlignError(
            f"{what} replace TRL's default DPO loss (sigmoid, reverse KL) and cannot be combined with "
            f"{', '.join(clashes)}; remove those or set data.weighting=none and data.ties=drop"
        )


def _trainer_rows(rows: list[dict], data: PreferenceDataConfig | None = None) -> list[dict]:
    out = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], LENGTH: r[LENGTH]} for r in rows]
    return preference_losses.with_label_columns(out, rows, data)
