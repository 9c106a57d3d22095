"""SFT examples: a conversation split into `prompt` (everything before the last assistant turn) and
`completion` (that turn), so the loss falls on the reply only (TRL's prompt-completion format).

Formats:
- `messages`: `{"messages": [{role, content}, ...]}` ending with an assistant turn;
- `prompt-completion`: `{"prompt": str | messages, "completion": str | messages}`;
- `preference-chosen`: any preference format (HH-RLHF, OASST, conversational pairs...): the prompt
  and the chosen reply. This is the usual way to SFT on preference data before DPO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from align.core.errors import AlignError
from align.data.preferences import as_messages, load_preference_pairs, sample, split_pairs
from align.data.records import read_records

Format = Literal["auto", "messages", "prompt-completion", "preference-chosen"]


@dataclass
class SFTDataConfig:
    """Conversations to fine-tune on."""

    train: str = ""
    """JSONL/JSON/Parquet/CSV file, datasets directory, run directory, or hub dataset
    `hf:<org>/<name>?split=train&subset=<config>&revision=<rev>` (split defaults to train; see align.core.hub)."""
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
    replay: ReplayConfig = field(default_factory=lambda: ReplayConfig())
    """General conversations mixed in so a behavioural round keeps what the model knew (off by default)."""


@dataclass
class ReplayConfig:
    """Replay: general SFT data mixed into a behavioural SFT round, a guard against forgetting.

    The task examples are all kept; `fraction` of the final mix is replay, i.e.
    round(n_task * fraction / (1 - fraction)) replay examples, a seeded sample of `path` (after the
    same token budget as the task data). Asking for more than `path` holds is an error, not a smaller mix.
    """

    path: str = ""
    """General conversations in any SFT format (e.g. OASST's best-ranked replies, format preference-chosen); empty = off."""
    format: Format = "auto"
    """auto | messages | prompt-completion | preference-chosen."""
    fraction: float = 0.0
    """Share of the training examples that are replay, in [0, 1); 0 = off."""
    seed: int = 0
    """Seed of the replay sample."""

    def __post_init__(self):
        if not 0 <= self.fraction < 1:
            raise AlignError(f"'data.replay.fraction' must be in [0, 1), got {self.fraction}")
        if bool(self.path) != (self.fraction > 0):
            raise AlignError(
                f"data.replay needs both a path and a fraction above 0 (got path={self.path!r}, "
                f"fraction={self.fraction}); set both, or neither to train without replay"
            )


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
    if cfg.replay.path:
        replay, report["replay"] = replay_examples(cfg.replay, len(rows), fits)
        rows = rows + replay
    return rows, report, [r["prompt"] for r in held_out]


def replay_pool(cfg: ReplayConfig) -> list[dict[str, Any]]:
    """Every distinct replay example (preference data repeats a chosen reply across its pairs)."""
    rows, _, _ = sft_pool(SFTDataConfig(train=cfg.path, format=cfg.format))
    seen, unique = set(), []
    for row in rows:
        key = json.dumps([row["prompt"], row["completion"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def replay_examples(cfg: ReplayConfig, n_task: int, fits=None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The replay sample for `n_task` task examples, and what the manifest records about it."""
    pool = replay_pool(cfg)
    if fits is not None:
        pool, _ = fits(pool, "replay examples")
    want = round(n_task * cfg.fraction / (1 - cfg.fraction))
    if want > len(pool):
        raise AlignError(
            f"data.replay.fraction={cfg.fraction} with {n_task} task examples needs {want} replay examples; "
            f"{cfg.path} has {len(pool)} that fit max_length. Lower the fraction or give more replay data"
        )
    rows = sample(pool, want, cfg.seed)
    return rows, {
        "path": cfg.path,
        "fraction": cfg.fraction,
        "examples": len(rows),
        "available": len(pool),
        "share_of_mix": round(len(rows) / max(n_task + len(rows), 1), 4),
    }


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
