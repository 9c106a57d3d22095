"""Kahneman-Tversky optimisation (TRL KTOTrainer) of a policy on unpaired preferences.

KTO (Ethayarajh et al. 2024) learns from completions labelled desirable or undesirable one at a
time, so it trains on feedback that never came in pairs: thumbs up or down on single replies
(`data.format: unpaired`, rows `{prompt, completion, label}`). Paired data trains too: each pair
gives one desirable example (its chosen reply) and one undesirable example (its rejected reply), as
TRL's `unpair_preference_dataset` does. Built like `align dpo`: the policy starts from `model`
(usually the SFT run); with LoRA (default) the reference is that model with the new adapter
disabled, with full fine-tuning a second copy of it (TRL's fallback would reload the checkpoint by
name and miss merged SFT adapters). `loss_type` is TRL's `kto` (the paper's) or `apo_zero_unpaired`.

Class imbalance: TRL's `training.desirable_weight` and `training.undesirable_weight` weigh the two
losses. The KTO paper (eq. 8) keeps lambda_D * n_D / (lambda_U * n_U) within [1, 4/3], n_D and n_U
being the desirable and undesirable examples. The stage counts them, records the ratio and the
`desirable_weight` range that satisfies the rule (`notes.balance`, also in `--dry-run`) and warns
when the weights fall outside it; it changes no weight itself.

Order (a departure from TRL, which trains in file order): KTO estimates its KL term from mismatched
examples; TRL rotates the completions within each batch of `per_device_train_batch_size` (an example
is also scored with its neighbour's completion), which is why it needs sequential sampling and
batches of at least 2 for `kto`. Left in file order, the two examples of an unpaired pair would sit
side by side and the "mismatched" completion would answer the same prompt. So align shuffles the
examples once with `seed` and moves apart any that would be KL partners with the same prompt
(`notes.order` counts the ones no order could separate).

An example over `max_length` keeps the last turns of its prompt (`data.long_prompts`) or is counted
and left out; TRL would cut the end of its completion. After training the stage reports TRL's KTO
loss, the implicit rewards of desirable and undesirable completions, their margin and the KL
estimate on the held-out split (`test_*`) and on validation examples (`validation_*`);
`training.eval_strategy` measures the validation examples (else the test ones) during training too.
Checkpoints (`training.save_strategy: steps`) and `resume_from: latest|PATH` work as in sft, reward and dpo
(align/core/checkpoints.py): a stopped run continues from its furthest checkpoint on the same settings,
model and examples.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

from align.core import checkpoints, device, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import (
    Checkpointing,
    TrainStageConfig,
    attach_logging,
    bind_output_dir,
    count_trainable,
    discard_trainer_scratch,
    eval_split,
    final_train_metrics,
    trainer_refusals,
    training_arguments,
)
from align.data.length import count_padding, within_budget
from align.data.preferences import PreferenceDataConfig, load_splits
from align.data.splits import check_upstream, prompt_key
from align.models import load_policy, load_tokenizer, resolve_model, save_model, trainable_setup

log = logging.getLogger(__name__)

STAGE = "kto"
DEFAULT_TRAINING = {
    # LoRA's rate, as align dpo (TRL's KTOConfig default, 1e-6, is meant for full fine-tuning).
    "learning_rate": 5e-5,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "logging_steps": 5,
    "lr_scheduler_type": "linear",
}
# The KTO paper's eq. 8: lambda_D * n_D / (lambda_U * n_U) in [1, 4/3].
BALANCE_RANGE = (1.0, 4 / 3)


@dataclass
class Config(Checkpointing, TrainStageConfig):
    """`align kto` settings."""

    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    """Unpaired examples (prompt, completion, label) or preference pairs (each gives two examples); the
    `max_*_pairs` limits count examples here."""
    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    """TRL's KTO loss: kto (the paper's, with the KL estimate) or apo_zero_unpaired (APO-zero, no KL term)."""
    beta: float = 0.1
    """Strength of the pull to the reference (higher: stay closer)."""

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise AlignError(f"'beta' must be > 0, got {self.beta}")


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    # Everything that can fail on user input is checked here, before the run directory exists.
    from trl import KTOConfig

    if {"loss_type", "beta", "max_length"} & set(cfg.training):
        raise AlignError("set loss_type, beta and max_length at the top level of the config, not under training:")
    args = training_arguments(
        KTOConfig,
        cfg.training,
        {
            **DEFAULT_TRAINING,
            "max_length": cfg.max_length,
            "seed": cfg.seed,
            "loss_type": cfg.loss_type,
            "beta": cfg.beta,
        },
    )
    if cfg.loss_type == "kto":
        # TRL's KTOTrainer raises on both, but only once the model is loaded.
        if args.train_sampling_strategy != "sequential":
            raise AlignError(
                f"training.train_sampling_strategy={args.train_sampling_strategy} breaks KTO's KL estimate, "
                "which pairs each example with its neighbour in a fixed order (align shuffles the examples "
                "once itself); remove it, or use loss_type=apo_zero_unpaired"
            )
        if args.per_device_train_batch_size < 2:
            raise AlignError(
                f"training.per_device_train_batch_size={args.per_device_train_batch_size}: KTO's KL estimate "
                "needs at least 2 examples per batch; set it to 2 or more"
            )
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    train, test = load_splits(
        cfg.data, fits=example_budget(tokenizer, cfg.max_length, cfg.data.long_prompts), unpaired=True
    )
    # Evaluation during training (training.eval_strategy) measures validation examples, else the test ones.
    during = eval_split(
        args,
        train.validation.rows if train.validation is not None else None,
        test.rows if test is not None else None,
        "examples",
    )
    split = check_upstream(STAGE, cfg.data, test.prompts if test is not None else [], [source.record])
    balance = class_balance(train.rows, args.desirable_weight, args.undesirable_weight)
    report = {
        "model": source.stable_ref,
        "data": {**train.report, "examples_trained": len(train.rows)},
        "test_data": test.report if test is not None else None,
        "split": split,
        "balance": balance,
    }
    if train.validation is not None:
        report["validation_data"] = train.validation.report
    fingerprint = checkpoints.fingerprint(cfg, STAGE, args, _trainer_rows(train.rows), [source.record])
    resume = checkpoints.plan(cfg, fingerprint)
    if resume is not None:
        report["resume"] = {"checkpoint": str(resume.checkpoint), "step": resume.step}
    return SimpleNamespace(
        args=args,
        source=source,
        tokenizer=tokenizer,
        train=train,
        test=test,
        during=during,
        report=report,
        fingerprint=fingerprint,
        resume=resume,
    )


def run(cfg: Config) -> dict:
    device.check_quantization(cfg.quantization)  # this machine can load it (a dry run needs no GPU)
    ready = prepare(cfg)
    args, source, tokenizer, train, test = ready.args, ready.source, ready.tokenizer, ready.train, ready.test

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("model", source.record)
        run_dir.add_input("data.train", cfg.data.train)
        if cfg.data.test:
            run_dir.add_input("data.test", cfg.data.test)
        for key in ("data", "split", "balance"):
            run_dir.notes[key] = ready.report[key]
        if test is not None:
            run_dir.notes["test_data"] = test.report
        rows, kl_same_prompt = kl_order(train.rows, cfg.seed, args.per_device_train_batch_size)
        run_dir.notes["order"] = {"shuffled_with_seed": cfg.seed, "kl_partners_with_same_prompt": kl_same_prompt}
        resume_path = checkpoints.take_over(run_dir, ready.resume)

        from datasets import Dataset
        from transformers import set_seed
        from trl import KTOTrainer

        set_seed(cfg.seed)
        model = load_policy(
            source,
            cfg.dtype,
            cfg.trust_remote_code,
            quantization=cfg.quantization,
            attn_implementation=cfg.attn_implementation,
        )
        # LoRA: reference = adapter disabled (TRL does this when ref_model is None and the model has an adapter).
        ref_model = (
            None
            if cfg.lora.enabled
            else load_policy(source, cfg.dtype, cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
        )
        lora_config = trainable_setup(model, cfg, "CAUSAL_LM", run_dir)
        bind_output_dir(args, run_dir)
        eval_dataset = None
        if ready.during is not None:
            run_dir.notes["eval_during_training"] = {"split": ready.during[0], "examples": len(ready.during[1])}
            eval_dataset = Dataset.from_list(
                _trainer_rows(kl_order(ready.during[1], cfg.seed, args.per_device_train_batch_size)[0])
            )
        with trainer_refusals("KTOTrainer", cfg.training, building=True):
            trainer = KTOTrainer(
                model=model,
                ref_model=ref_model,
                args=args,
                train_dataset=Dataset.from_list(_trainer_rows(rows)),
                eval_dataset=eval_dataset,
                processing_class=tokenizer,
                peft_config=lora_config,
            )
        attach_logging(trainer, run_dir, {"loss": "loss", "rewards/margins": "margin", "kl": "kl"})
        checkpoints.attach(trainer, run_dir, ready.fingerprint)
        padding = count_padding(trainer)
        run_dir.notes["parameters"] = count_trainable(trainer.model)
        log.info(
            "kto: %d examples (%d desirable), loss %s, beta %s, %s",
            len(rows),
            ready.report["balance"]["desirable"],
            cfg.loss_type,
            cfg.beta,
            run_dir.notes["parameters"],
        )
        with trainer_refusals("KTOTrainer", cfg.training, building=False):
            trainer.train(resume_from_checkpoint=resume_path)

        save_model(run_dir, trainer, tokenizer, source, cfg.lora, task="causal_lm")
        discard_trainer_scratch(run_dir)
        checkpoints.conclude(run_dir, cfg.keep_checkpoints)
        run_dir.metrics.update(final_train_metrics(trainer))
        run_dir.metrics["train_padding_fraction"] = padding.fraction
        run_dir.notes["batches"] = padding.report(
            str(getattr(args.train_sampling_strategy, "value", args.train_sampling_strategy))
        )
        validation = train.validation
        if validation is not None:
            run_dir.notes["validation_data"] = validation.report
        for split_name, held in (("validation", validation), ("test", test)):
            if held is None or not held.rows:
                continue
            ordered, _ = kl_order(held.rows, cfg.seed, args.per_device_train_batch_size)
            held_out = trainer.evaluate(eval_dataset=Dataset.from_list(_trainer_rows(ordered)))
            run_dir.metrics.update(
                {
                    k.replace("eval_", f"{split_name}_"): v
                    for k, v in held_out.items()
                    if k.startswith("eval_rewards") or k in ("eval_loss", "eval_kl")
                }
            )
            run_dir.metrics[f"{split_name}_examples"] = len(held.rows)
            log.info(
                "kto on %d %s examples: loss %.4f, reward margin %.3f",
                len(held.rows),
                split_name,
                held_out.get("eval_loss", float("nan")),
                held_out.get("eval_rewards/margins", float("nan")),
            )
        device.record(run_dir, cfg, trainer.model)
        return runs.finish(run_dir)


def example_budget(tokenizer, max_length: int, long_prompts: str):
    """`fits(rows, what)` for `load_splits`: prompt + completion within `max_length` tokens, long prompts
    cut or dropped per `data.long_prompts`."""
    return lambda rows, what: within_budget(rows, tokenizer, max_length, ("completion",), what, long_prompts)


def class_balance(rows: list[dict[str, Any]], desirable_weight: float, undesirable_weight: float) -> dict[str, Any]:
    """Desirable/undesirable counts against the KTO paper's rule (eq. 8); warns when the weights break it."""
    desirable = sum(1 for r in rows if r["label"])
    undesirable = len(rows) - desirable
    out: dict[str, Any] = {
        "desirable": desirable,
        "undesirable": undesirable,
        "desirable_weight": desirable_weight,
        "undesirable_weight": undesirable_weight,
    }
    if not desirable or not undesirable:
        log.warning(
            "kto: the training examples are all %s; KTO then only pushes %s completions",
            "desirable" if desirable else "undesirable",
            "up" if desirable else "down",
        )
        return out
    ratio = desirable_weight * desirable / (undesirable_weight * undesirable)
    low, high = (bound * undesirable_weight * undesirable / desirable for bound in BALANCE_RANGE)
    out.update(
        weighted_ratio=round(ratio, 4),
        desirable_weight_range=[round(low, 4), round(high, 4)],
        within_paper_range=BALANCE_RANGE[0] <= ratio <= BALANCE_RANGE[1],
    )
    if not out["within_paper_range"]:
        log.warning(
            "kto: %d desirable and %d undesirable examples with weights %s/%s give a weighted ratio of %.3f; the "
            "KTO paper keeps it within [1, 4/3]: set training.desirable_weight in [%.3g, %.3g]",
            desirable,
            undesirable,
            desirable_weight,
            undesirable_weight,
            ratio,
            low,
            high,
        )
    return out


def kl_order(rows: list[dict[str, Any]], seed: int, batch_size: int) -> tuple[list[dict[str, Any]], int]:
    """The rows shuffled with `seed`, then rearranged so that no example's KL partner (as TRL pairs them:
    the previous example in its batch, the batch's last for its first) has the same prompt where a swap can
    prevent it. Returns the order and how many examples still share a prompt with their partner."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    keys = [prompt_key(r["prompt"]) for r in order]
    n = len(order)

    def partner(i: int) -> int:
        return i - 1 if i % batch_size else min(i + batch_size - 1, n - 1)

    def clashes() -> list[int]:
        return [i for i in range(n) if partner(i) != i and keys[i] == keys[partner(i)]]

    for _ in range(4):  # a swap can disturb a pair checked earlier in the same batch; a few passes settle it
        pending = clashes()
        if not pending:
            break
        for i in pending:
            if keys[i] != keys[partner(i)]:
                continue
            j = next(
                (
                    j
                    for j in range(n)
                    if keys[j] != keys[i]
                    and keys[j] != keys[partner(i)]
                    and j != partner(i)
                    and keys[i] != keys[partner(j)]
                ),
                None,
            )
            if j is not None:
                order[i], order[j] = order[j], order[i]
                keys[i], keys[j] = keys[j], keys[i]
    return order, len(clashes())


def _trainer_rows(rows: list[dict]) -> list[dict]:
    return [{"prompt": r["prompt"], "completion": r["completion"], "label": bool(r["label"])} for r in rows]
