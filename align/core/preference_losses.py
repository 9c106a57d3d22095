"""Pair losses that use how sure the labels are (`p_chosen`) and keep ties, for the reward and DPO stages.

Both stages reduce a pair to one margin d: the reward model's r(chosen) - r(rejected), or DPO's
beta * [(log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)]. With `data.weighting` and
`data.ties` at their defaults (none, drop) the stages use TRL's trainers unchanged; otherwise these
subclasses replace only the loss, per pair:

    weighting=none             -log P(c > r | d)                          (Bradley-Terry: -log sigmoid(d))
    weighting=label_smoothing  -[p log P(c > r | d) + (1-p) log P(r > c | d)]   p = p_chosen
    weighting=weight           (2p - 1) * -log P(c > r | d)           (p < 0.5: (1 - 2p) * -log P(r > c | d))
    a tie (data.ties kept)     -log P(tie | d)

`label_smoothing` is conservative DPO (cDPO, Mitchell 2023) with a per-pair eps = 1 - p_chosen
instead of TRL's one global `label_smoothing` (which TRL 1.16's sigmoid loss does not read at all);
for the reward model it is the soft Bradley-Terry target. `weight` scales each pair's loss by 2p - 1:
that is the slope of the soft target at d = 0 (d/dd of the label-smoothed loss there is (2p - 1)
times that of the hard one), so a pair at p = 0.5 says nothing and one at p = 1 counts fully.

Ties (Chen, Yang, Lin, Mei & Byrne, "On Extending Direct Preference Optimization to Accommodate
Ties", 2024), with strengths exp(r), nu = `data.tie_strength`:

    davidson    P(c > r) = e^{d/2} / (e^{d/2} + e^{-d/2} + nu)      P(tie) = nu / (e^{d/2} + e^{-d/2} + nu)
    rao_kupper  P(c > r) = sigmoid(d - log nu)                     P(tie) = (nu^2 - 1) sigmoid(d - log nu) sigmoid(-d - log nu)

With a tie model the clear pairs use its P(c > r) too (as in the paper): the model keeps some
probability for a tie even at a large margin. nu defaults to the value at which P(tie) = 1/3 for
d = 0: 1 for Davidson, 2 for Rao-Kupper. Where this departs from the paper: the paper's DPO-D and
DPO-RK train on hard labels; here they combine with `weighting` on the clear pairs, and the reward
stage uses the same two models for a reward model (the paper trains policies only).

The subclasses support TRL's default DPO setup only (loss_type sigmoid, f_divergence_type
reverse_kl, no ld_alpha, no use_weighting): a per-pair probability has no single meaning for the
other losses, so the DPO stage refuses those combinations. TRL's DPO metrics that need the LM's
logits (entropy, mean logits, token accuracy) are not logged on this path; the rewards/* and
logps/* metrics are.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Weighting = Literal["none", "label_smoothing", "weight"]
Ties = Literal["drop", "davidson", "rao_kupper"]
WEIGHTINGS = ("none", "label_smoothing", "weight")
TIE_MODELS = ("drop", "davidson", "rao_kupper")
DEFAULT_TIE_STRENGTH = {"davidson": 1.0, "rao_kupper": 2.0}
# Trainer columns (also what the collator passes through to the loss).
P_CHOSEN, TIE = "p_chosen", "tie"
LABEL_COLUMNS = (P_CHOSEN, TIE)


def log_p_win(d: torch.Tensor, ties: Ties, strength: float) -> torch.Tensor:
    """log P(chosen is better | margin d) under Bradley-Terry (ties=drop) or a tie model."""
    if ties == "drop":
        return F.logsigmoid(d)
    if ties == "davidson":
        return d / 2 - _davidson_norm(d, strength)
    return F.logsigmoid(d - math.log(strength))


def log_p_tie(d: torch.Tensor, ties: Ties, strength: float) -> torch.Tensor:
    """log P(tie | margin d); symmetric in d, so which reply is 'chosen' in a tie row does not matter."""
    if ties == "davidson":
        return math.log(strength) - _davidson_norm(d, strength)
    if ties == "rao_kupper":
        alpha = math.log(strength)
        return math.log(strength**2 - 1) + F.logsigmoid(d - alpha) + F.logsigmoid(-d - alpha)
    raise ValueError("ties=drop has no tie probability")


def _davidson_norm(d: torch.Tensor, strength: float) -> torch.Tensor:
    # log(e^{d/2} + e^{-d/2} + nu), computed without overflow.
    nu = torch.full_like(d, math.log(strength)) if strength > 0 else torch.full_like(d, -math.inf)
    return torch.logsumexp(torch.stack([d / 2, -d / 2, nu]), dim=0)


def pair_losses(
    d: torch.Tensor,
    p_chosen: torch.Tensor | None = None,
    tie: torch.Tensor | None = None,
    weighting: Weighting = "none",
    ties: Ties = "drop",
    strength: float | None = None,
) -> torch.Tensor:
    """Per-pair loss for margins `d` (see the module docstring); the stage takes its mean."""
    strength = strength if strength is not None else DEFAULT_TIE_STRENGTH.get(ties, 0.0)
    win = -log_p_win(d, ties, strength)
    if weighting == "none" or p_chosen is None:
        clear = win
    elif weighting == "label_smoothing":
        p = p_chosen.to(d.dtype)
        clear = p * win + (1 - p) * -log_p_win(-d, ties, strength)
    elif weighting == "weight":
        # p < 0.5 says the rejected reply is more likely the better one: weight |2p - 1| on the flipped pair
        # (a negative weight on the hard loss would be unbounded below).
        p = p_chosen.to(d.dtype)
        clear = torch.where(p >= 0.5, (2 * p - 1) * win, (1 - 2 * p) * -log_p_win(-d, ties, strength))
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    if tie is None or ties == "drop":
        return clear
    return torch.where(tie.bool(), -log_p_tie(d, ties, strength), clear)


class LabelColumns:
    """Wraps a TRL collator so `p_chosen` and `tie` reach the loss as tensors (TRL's collators keep only
    the columns they know: the DPO one none of these, the reward one only `margin`)."""

    def __init__(self, collator, columns=LABEL_COLUMNS):
        self.collator = collator
        self.columns = columns

    def __call__(self, examples):
        batch = self.collator(examples)
        for column in self.columns:
            if column in examples[0]:
                batch[column] = torch.tensor([float(e[column]) for e in examples], dtype=torch.float)
        return batch


def _options(data) -> dict:
    return {
        "weighting": data.weighting,
        "ties": data.ties,
        "strength": data.tie_strength if data.tie_strength is not None else DEFAULT_TIE_STRENGTH.get(data.ties),
    }


def label_aware(data) -> bool:
    """Whether `data` (a PreferenceDataConfig) asks for these losses instead of TRL's."""
    return data.weighting != "none" or data.ties != "drop"


def reward_trainer_class(base, data):
    """`base` (TRL's RewardTrainer or align's prefix-sharing subclass) with the loss above."""
    options = _options(data)

    class LabelAwareRewardTrainer(base):
        """RewardTrainer whose loss reads each pair's p_chosen and tie flag (align.core.preference_losses)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = LabelColumns(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *LABEL_COLUMNS]))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = {k: inputs.pop(k) for k in LABEL_COLUMNS if k in inputs}
            # TRL computes the outputs and logs its metrics; only the loss is replaced.
            _, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = pair_losses(chosen - rejected, labels.get(P_CHOSEN), labels.get(TIE), **options).mean()
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
            return (loss, outputs) if return_outputs else loss

    return LabelAwareRewardTrainer


def dpo_trainer_class(base, data):
    """`base` (TRL's DPOTrainer or align's prefix-sharing subclass) with the loss above.

    Overrides `_compute_loss` only: the policy forward is TRL's (same call, same masks), the reference
    log-probs come from TRL's own `compute_ref_log_probs` (or the precomputed columns).
    """
    options = _options(data)

    class LabelAwareDPOTrainer(base):
        """DPOTrainer whose loss reads each pair's p_chosen and tie flag (align.core.preference_losses)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = LabelColumns(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *LABEL_COLUMNS]))

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            labels = {k: inputs.pop(k) for k in LABEL_COLUMNS if k in inputs}
            model_kwargs = {
                k: v
                for k, v in inputs.items()
                if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")
            }
            model_kwargs["use_cache"] = False
            if self.aux_loss_enabled:
                model_kwargs["output_router_logits"] = True
            completion_mask = inputs["completion_mask"]
            shift_mask = completion_mask[..., 1:]
            token_labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            outputs = model(**model_kwargs, labels=token_labels, fused_lm_head=True)
            logps = outputs.log_probs[:, -shift_mask.size(1) :].sum(dim=1)
            chosen_logps, rejected_logps = logps.chunk(2, dim=0)
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                reference = self.ref_model if self.ref_model is not None else self.model  # PEFT: adapter disabled
                ref_chosen, ref_rejected = self.compute_ref_log_probs(reference, inputs)
            chosen_rewards = self.beta * (chosen_logps - ref_chosen)
            rejected_rewards = self.beta * (rejected_logps - ref_rejected)
            loss = pair_losses(
                chosen_rewards - rejected_rewards, labels.get(P_CHOSEN), labels.get(TIE), **options
            ).mean()
            if self.aux_loss_enabled:
                loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._log_pair_metrics(
                mode,
                inputs,
                chosen_rewards.detach(),
                rejected_rewards.detach(),
                chosen_logps.detach(),
                rejected_logps.detach(),
            )
            if return_outputs:
                with torch.no_grad():
                    outputs = model(**model_kwargs)
            return (loss, outputs) if return_outputs else loss

        def _log_pair_metrics(self, mode, inputs, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps):
            # The same keys and reductions as TRL's DPOTrainer, so align's step log and evaluation read them.
            if mode == "train":
                tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += tokens // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            gather = self.accelerator.gather
            metrics = self._metrics[mode]
            metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
            metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
            metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
            metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
            metrics["logps/chosen"].append(gather(chosen_logps).mean().item())
            metrics["logps/rejected"].append(gather(rejected_logps).mean().item())

    return LabelAwareDPOTrainer


def with_label_columns(trainer_rows: list[dict], rows: list[dict], data) -> list[dict]:
    """Add the columns the loss reads to the trainer's rows: `p_chosen` (1 where a pair has none or is a tie)
    with `data.weighting`, `tie` with `data.ties`; none with the defaults, so TRL sees exactly its columns."""
    if data is None or not label_aware(data):
        return trainer_rows
    for out, row in zip(trainer_rows, rows, strict=True):
        if data.weighting != "none":
            out[P_CHOSEN] = 1.0 if row.get(P_CHOSEN) is None else float(row[P_CHOSEN])
        if data.ties != "drop":
            out[TIE] = bool(row.get(TIE))
    return trainer_rows
