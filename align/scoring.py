"""Scoring conversations with a reward model, formatted exactly as the reward stage trained it.

TRL's RewardTrainer tokenizes a conversational pair as `apply_chat_template(prompt + chosen)`;
scoring must use the same text, or the score head reads a different last token (the chat template
ends each message with `<|im_end|>` and a newline, and the classifier scores the last non-pad token).
Batches are sorted by length so little compute goes to padding (the CPU forward runs near its FLOP
peak, so padded tokens cost as much as real ones), and each goes to the device of the model's weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from align.core import device, runs
from align.core.errors import AlignError

Messages = list[dict[str, str]]

ENSEMBLE_STAGE = "reward ensemble"
"""The stage of an `align reward-ensemble` run; `align score` scores with each of its members."""
MEMBERS = "members.json"
"""An ensemble run's list of its member runs, as paths relative to it."""


def conversation_ids(tokenizer, conversation: Messages) -> list[int]:
    ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def reward_scores(
    model,
    tokenizer,
    conversations: list[Messages],
    batch_size: int = 8,
    max_length: int | None = None,
    desc: str = "scoring",
) -> list[float]:
    """One scalar per conversation. Conversations longer than `max_length` are cut from the left
    (keeping the reply, which is what is being judged)."""
    import torch

    encoded = [conversation_ids(tokenizer, c) for c in conversations]
    if max_length:
        encoded = [ids[-max_length:] for ids in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    scores: list[Any] = [None] * len(encoded)
    pad = tokenizer.pad_token_id
    where = device.model_device(model)
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            # Right padding: the sequence-classification head scores the last non-pad token.
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = 1
            logits = model(input_ids=input_ids.to(where), attention_mask=mask.to(where)).logits
            # One copy to the host per batch, not one synchronising read per row.
            for row, value in zip(idx, logits[:, 0].float().cpu().tolist()):
                scores[row] = value
    return scores


def pair_scores(
    model, tokenizer, pairs: list[dict], batch_size: int = 8, max_length: int | None = None, label: str = "scoring"
) -> tuple[list[float], list[float]]:
    """Scores of prompt + chosen and of prompt + rejected for each pair (progress: '<label> chosen', ...)."""
    chosen = reward_scores(
        model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], batch_size, max_length, f"{label} chosen"
    )
    rejected = reward_scores(
        model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], batch_size, max_length, f"{label} rejected"
    )
    return chosen, rejected


def pair_wins(chosen: list[float], rejected: list[float]) -> list[float]:
    """Per pair: 1 when chosen scores higher, 0.5 on a tie, else 0 (pairwise accuracy is their mean)."""
    return [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)]


def pairwise_metrics(chosen: list[float], rejected: list[float]) -> dict[str, float]:
    """Accuracy (ties count half) and mean margin of chosen over rejected."""
    n = len(chosen)
    if n == 0:
        return {"accuracy": float("nan"), "mean_margin": float("nan"), "pairs": 0}
    wins = sum(pair_wins(chosen, rejected))
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {"accuracy": wins / n, "mean_margin": sum(margins) / n, "pairs": n}


def check_reward_model(source) -> None:
    """Refuse weights that are not a one-output reward model: loading a causal LM (or a classifier
    with several labels) as a reward model gives a freshly initialised, random score head, so every
    score would be noise."""
    if source.task == "reward":
        return
    try:
        config = json.loads((source.base_dir / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlignError(f"{source.base_dir / 'config.json'}: not a readable JSON model config ({exc})") from None
    architectures = config.get("architectures") or []
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or None
    if source.adapters or not any(a.endswith("ForSequenceClassification") for a in architectures):
        what = (
            f"a {source.task} run"
            if source.adapters
            else f"a {', '.join(architectures) or 'model without architectures'}"
        )
        raise AlignError(
            f"'{source.ref}' is not a reward model ({what}, whose score head would be random); "
            "give a run of `align reward` or a sequence-classification checkpoint with one label"
        )
    if labels not in (None, 1):
        raise AlignError(
            f"'{source.ref}' is a classifier with {labels} labels, not a one-output reward model; "
            "give a run of `align reward` or a checkpoint with num_labels=1"
        )


def reward_members(ref: str) -> list[str]:
    """The reward models behind `ref`: its members for a reward ensemble run, else `ref` itself."""
    if not runs.is_run(ref) or runs.read_manifest(ref).get("stage") != ENSEMBLE_STAGE:
        return [ref]
    manifest = runs.read_manifest(ref)
    listed = json.loads(runs.output_path(ref, manifest, "members").read_text(encoding="utf-8"))
    members = [str((Path(ref) / m).resolve()) for m in listed]
    missing = [m for m in members if not Path(m).exists()]
    if missing:
        raise AlignError(
            f"reward ensemble {ref}: member(s) {missing} are missing; the ensemble names its members "
            "by path relative to itself, so keep them beside it"
        )
    return members
