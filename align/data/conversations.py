"""SFT examples: a conversation split into `prompt` (everything before the last assistant turn) and
`completion` (that turn), so the loss falls on the reply only (TRL's prompt-completion format).

Formats:
- `messages`: `{"messages": [{role, content}, ...]}` ending with an assistant turn;
- `prompt-completion`: `{"prompt": str | messages, "completion": str | messages}`;
- `preference-chosen`: any preference format (HH-RLHF, OASST, conversational pairs...): the prompt
  and the chosen reply. This is the usual way to SFT on preference data before DPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from align.core.errors import AlignError
from align.data.preferences import as_messages, load_preference_pairs, sample, split_pairs
from align.data.records import read_records

Format = Literal["auto", "messages", "prompt-completion", "preference-chosen"]


@dataclass
class SFTDataConfig:
    """Conversations to fine-tune on."""

    train: str = ""
    """JSONL/JSON/Parquet/CSV file, datasets directory, or run directory."""
    format: Format = "auto"
    """auto | messages | prompt-completion | preference-chosen (see align/data/conversations.py)."""
    max_examples: int | None = None
    """Use at most this many examples (a seeded sample), e.g. to fit a time budget."""
    test_fraction: float = 0.0
    """Leave out this fraction of prompts, chosen by the same prompt hash the preference stages use to
    hold out their test split: with equal `test_fraction` and `seed`, SFT never sees those prompts."""
    seed: int = 0
    """Seed of the held-out split and of the sample."""
    check_upstream_split: bool = True
    """Refuse when an upstream run trained on prompts left out here; false skips the check (recorded)."""


def load_sft_examples(cfg: SFTDataConfig, fits=None) -> tuple[list[dict[str, Any]], dict[str, int], list[Any]]:
    """Rows `{prompt: messages, completion: messages}`, a report of what was read, and the prompts
    left out by `test_fraction` (for the upstream-split check).

    `fits(rows, what) -> (kept, report)` (the token budget) is applied before sampling.
    """
    rows, held_out, report = sft_pool(cfg)
    if fits is not None:
        rows, budget = fits(rows, "examples")
        report.update(budget)
    rows = sample(rows, cfg.max_examples, cfg.seed)
    report["examples_used"] = len(rows)
    return rows, report, [r["prompt"] for r in held_out]


def sft_pool(cfg: SFTDataConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(examples training may draw from, examples left out, report): the split alone, before the
    token budget and sample. Also used to recompute what an upstream SFT run trained on."""
    if not cfg.train:
        raise AlignError("'data.train' is required: a conversation file, datasets directory or run directory")
    fmt = cfg.format
    if fmt == "auto":
        first = next(read_records(cfg.train), None)
        if first is None:
            raise AlignError(f"{cfg.train}: no records (the SFT dataset is empty)")
        fmt = _detect(first[1])
    report: dict[str, int] = {}
    if fmt == "preference-chosen":
        data = load_preference_pairs(cfg.train)
        rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in data.rows]
        report.update(data.report)
    else:
        rows = []
        for where, rec in read_records(cfg.train):
            rows.append(_from_messages(rec, where) if fmt == "messages" else _from_prompt_completion(rec, where))
    if not rows:
        raise AlignError(f"{cfg.train}: no usable SFT examples")
    report["examples_read"] = len(rows)
    rows, held_out = split_pairs(rows, cfg.test_fraction, cfg.seed)
    report["examples_held_out"] = len(held_out)
    return rows, held_out, report


def _detect(rec: Any) -> str:
    if isinstance(rec, dict) and "messages" in rec:
        return "messages"
    if isinstance(rec, dict) and {"prompt", "completion"} <= set(rec):
        return "prompt-completion"
    return "preference-chosen"


def _from_messages(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict) or "messages" not in rec:
        raise AlignError(f"{where}: missing field 'messages'")
    messages = as_messages(rec["messages"], where, "messages", default_role="user")
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise AlignError(f"{where}: 'messages' must hold a user turn and end with an assistant turn")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def _from_prompt_completion(rec: Any, where: str) -> dict[str, Any]:
    for name in ("prompt", "completion"):
        if not isinstance(rec, dict) or name not in rec:
            raise AlignError(f"{where}: missing field '{name}'")
    prompt = as_messages(rec["prompt"], where, "prompt", default_role="user")
    completion = as_messages(rec["completion"], where, "completion", default_role="assistant")
    if not prompt or not completion:
        raise AlignError(f"{where}: empty prompt or completion")
    return {"prompt": prompt, "completion": completion}
