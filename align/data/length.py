"""The token-length budget, and what the batches cost in padding.

TRL's trainers drop or truncate over-long examples quietly (RewardTrainer drops pairs with only a
progress-bar line; DPO and SFT cut the end, which for a prompt-completion example removes the very
tokens the loss is on). align measures every example with the model's chat template before
training and leaves the over-long ones out *visibly*: a log line and a count in the manifest.

Long conversations need not be lost, though: with `long_prompts="keep_last_turns"` a pair whose
prompt makes it too long keeps the last turns of its prompt (whole exchanges are cut from the
start; a system message stays), as many as fit with both replies. Each kept preference pair
records its measured length (`length`, the longer of prompt+chosen and prompt+rejected): the
stages group batches by it, so a batch of short pairs is not padded to a long one.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Literal

from tqdm.auto import tqdm

from align.core.errors import AlignError
from align.scoring import conversation_ids

log = logging.getLogger(__name__)

LongPrompts = Literal["drop", "keep_last_turns"]
LENGTH = "length"
"""Row field holding the measured token length; also the dataset column transformers' length-grouped
sampler reads (`TrainingArguments.length_column_name`'s default)."""


def within_budget(
    rows: list[dict[str, Any]],
    tokenizer,
    max_length: int,
    parts: tuple[str, ...],
    what: str,
    long_prompts: LongPrompts = "drop",
    record_length: bool = False,
):
    """Keep rows whose `prompt + part` fits in `max_length` tokens for every part.

    With `long_prompts="keep_last_turns"` an over-long row first loses whole exchanges from the start
    of its prompt until it fits (at least one user turn stays). Returns (kept rows, each with its
    `length` when `record_length`, and a report). Raises when nothing fits, naming the longest/shortest lengths so the
    user can pick a budget.
    """
    kept, lengths = [], []
    turns_dropped: Counter[int] = Counter()
    for row in tqdm(rows, desc=f"measuring {what}", unit="ex", leave=False, mininterval=1.0):
        n = _length(tokenizer, row, parts)
        lengths.append(n)
        if n > max_length and long_prompts == "keep_last_turns":
            shorter, n, dropped = _keep_last_turns(tokenizer, row, parts, max_length, n)
            if n <= max_length:
                row = {**shorter, "prompt_turns_dropped": dropped}
                turns_dropped[dropped] += 1
        if n <= max_length:
            kept.append({**row, LENGTH: n} if record_length else row)
    dropped = len(rows) - len(kept)
    report: dict[str, Any] = {f"{what}_over_max_length": dropped, "max_length": max_length}
    if long_prompts != "drop":
        report[f"{what}_prompt_truncated"] = sum(turns_dropped.values())
        # How deep the cuts went: number of leading messages removed -> pairs.
        report[f"{what}_prompt_messages_dropped"] = {str(k): v for k, v in sorted(turns_dropped.items())}
    if lengths:
        report[f"{what}_longest_tokens"] = max(lengths)
    if turns_dropped:
        log.info(
            "%d of %d %s kept their last prompt turns to fit max_length=%d tokens (data.long_prompts=%s)",
            sum(turns_dropped.values()),
            len(rows),
            what,
            max_length,
            long_prompts,
        )
    if dropped:
        how = (
            "even with only their last user turn"
            if long_prompts == "keep_last_turns"
            else "(data.long_prompts=keep_last_turns keeps their last turns)"
        )
        log.warning(
            "%d of %d %s are longer than max_length=%d tokens %s and are left out (raise max_length to keep them)",
            dropped,
            len(rows),
            what,
            max_length,
            how,
        )
    if rows and not kept:
        raise AlignError(
            f"all {len(rows)} {what} are longer than max_length={max_length} tokens "
            f"(shortest is {min(lengths)}); raise max_length"
        )
    return kept, report


def token_budget(tokenizer, max_length: int, parts: tuple[str, ...] = ("chosen", "rejected")):
    """`fits(rows, what)` for `load_sft_examples`: the budget applied to prompt + each of `parts`."""
    return lambda rows, what: within_budget(rows, tokenizer, max_length, parts, what)


def pair_budget(tokenizer, max_length: int, long_prompts: LongPrompts):
    """`fits(rows, what)` for `load_splits`: prompt + chosen and prompt + rejected within the budget,
    long prompts cut or dropped per `data.long_prompts`, each kept pair's `length` recorded."""
    return lambda rows, what: within_budget(
        rows, tokenizer, max_length, ("chosen", "rejected"), what, long_prompts, record_length=True
    )


def _length(tokenizer, row: dict[str, Any], parts: tuple[str, ...]) -> int:
    return max(len(conversation_ids(tokenizer, row["prompt"] + row[p])) for p in parts)


def _keep_last_turns(tokenizer, row: dict[str, Any], parts: tuple[str, ...], max_length: int, n: int):
    """(row with leading exchanges removed, its length, messages removed), cutting one exchange at a
    time until it fits or only the last user turn is left (then the length is still over)."""
    prompt = row["prompt"]
    while n > max_length:
        shorter = drop_first_exchange(prompt)
        if shorter is None:
            break
        prompt = shorter
        n = _length(tokenizer, {**row, "prompt": prompt}, parts)
    return {**row, "prompt": prompt}, n, len(row["prompt"]) - len(prompt)


def drop_first_exchange(prompt: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The prompt without its first exchange (a user turn and the replies up to the next user turn);
    leading system messages stay, so the model keeps its instructions. None when only one user turn is left."""
    head = 0
    while head < len(prompt) and prompt[head]["role"] == "system":
        head += 1
    rest = prompt[head:]
    following = next((i for i in range(1, len(rest)) if rest[i]["role"] == "user"), None)
    if following is None:
        return None
    return prompt[:head] + rest[following:]


class PaddingCount:
    """Wraps a trainer's data collator to count real and padded token positions of the batches it
    builds: `fraction` is the share of positions that were padding (compute spent on nothing)."""

    def __init__(self, collator):
        self.collator = collator
        self.examples = 0
        self.real = 0
        self.total = 0

    def __call__(self, examples):
        batch = self.collator(examples)
        self.examples += len(examples)
        mask = batch.get("attention_mask") if hasattr(batch, "get") else None
        if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
            self.real += int(mask.sum())
            self.total += mask.numel()
        return batch

    @property
    def fraction(self) -> float | None:
        return round(1 - self.real / self.total, 4) if self.total else None

    def report(self, sampling: str) -> dict[str, Any]:
        """For the manifest: how batches were drawn, their padding share, examples and token counts."""
        return {
            "sampling": sampling,
            "padding_fraction": self.fraction,
            "examples": self.examples,
            "tokens": self.real,
            "token_positions": self.total,
        }


def count_padding(trainer) -> PaddingCount:
    """Count the padding of the batches `trainer` trains on (read `.fraction` after `train()`)."""
    counter = PaddingCount(trainer.data_collator)
    trainer.data_collator = counter
    return counter


def grouping_refusal(args) -> None:
    """Refuse length-grouped batches the trainer could not build: transformers' sampler reads the
    `length` column, which `remove_unused_columns=true` prunes first (a ValueError mid-`train()`)."""
    if args.train_sampling_strategy == "group_by_length" and args.remove_unused_columns:
        raise AlignError(
            "training.train_sampling_strategy=group_by_length needs the measured `length` column, which "
            "training.remove_unused_columns=true removes; set remove_unused_columns=false (align's default) "
            "or train_sampling_strategy=random"
        )
