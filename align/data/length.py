"""The token-length budget: examples longer than `max_length` are counted, reported and left out.

TRL's trainers drop or truncate over-long examples quietly (RewardTrainer drops pairs with only a
progress-bar line; DPO and SFT cut the end, which for a prompt-completion example removes the very
tokens the loss is on). align measures every example with the model's chat template before
training and leaves the over-long ones out *visibly*: a log line and a count in the manifest.
"""

from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm

from align.core.errors import AlignError
from align.scoring import conversation_ids

log = logging.getLogger(__name__)


def within_budget(rows: list[dict[str, Any]], tokenizer, max_length: int, parts: tuple[str, ...], what: str):
    """Keep rows whose `prompt + part` fits in `max_length` tokens for every part.

    Returns (kept rows, report). Raises when nothing fits, naming the longest/shortest lengths so the
    user can pick a budget.
    """
    kept, lengths = [], []
    for row in tqdm(rows, desc=f"measuring {what}", unit="ex", leave=False, mininterval=1.0):
        n = max(len(conversation_ids(tokenizer, row["prompt"] + row[p])) for p in parts)
        lengths.append(n)
        if n <= max_length:
            kept.append(row)
    dropped = len(rows) - len(kept)
    report = {f"{what}_over_max_length": dropped, "max_length": max_length}
    if lengths:
        report[f"{what}_longest_tokens"] = max(lengths)
    if dropped:
        log.warning("%d of %d %s are longer than max_length=%d tokens and are left out (raise max_length to keep them)",
                    dropped, len(rows), what, max_length)
    if rows and not kept:
        raise AlignError(
            f"all {len(rows)} {what} are longer than max_length={max_length} tokens "
            f"(shortest is {min(lengths)}); raise max_length"
        )
    return kept, report


def token_budget(tokenizer, max_length: int, parts: tuple[str, ...] = ("chosen", "rejected")):
    """`fits(rows, what)` for `load_splits`: the budget applied to prompt + each of `parts`."""
    return lambda rows, what: within_budget(rows, tokenizer, max_length, parts, what)
