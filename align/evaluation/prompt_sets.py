"""Evaluation prompt sets: which prompts, from which files, on which side of a train/eval split.

A prompt set is one or more prompt files read with align's prompt readers (`read_records` +
`parse_prompt`, so every container and record shape of `align generate` works, and every prompt
keeps its `file:line`), optionally filtered on record fields (`match: {label: safe}` keeps XSTest's
safe prompts), split by a content hash, and optionally sampled down.

The split is the one the preference stages use for `data.test_fraction` (align.data.preferences
.split_pairs): a prompt is on the eval side when sha256("<seed>:<prompt messages as JSON>") falls
below `eval_fraction`. It depends only on the prompt's text, so it is stable across runs, file order
and file edits elsewhere, and the training side of a loop can take `split: train` with the same
fraction and seed and never see an evaluation prompt. A preference run trained on pairs built from
these prompts with `data.test_fraction` = `eval_fraction` and `data.seed` = `split_seed` holds out
exactly the same prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from align.core.errors import AlignError
from align.data.preferences import sample, split_pairs
from align.data.prompts import Prompt, parse_prompt
from align.data.records import read_records


@dataclass
class PromptSetConfig:
    """One prompt set of `align evaluate policy`."""

    paths: list[str] = field(default_factory=list)
    """Prompt files (JSONL/JSON/Parquet/CSV/TSV/TXT), datasets or run directories, or hub datasets
    `hf:<org>/<name>?split=<split>&subset=<config>` (split defaults to train); empty = set not evaluated."""
    prompt_field: str | None = None
    """Field or column holding the prompt; unset tries messages, prompt, goal, then turns (first turn)."""
    match: dict[str, str] = field(default_factory=dict)
    """Keep only records whose fields equal these values, e.g. `{label: safe}` for XSTest's safe prompts."""
    split: Literal["all", "train", "eval"] = "all"
    """Which side of the content-hash split to use: all prompts, the training side or the held-out eval side."""
    eval_fraction: float = 0.2
    """Share of prompts on the eval side (by the hash of the prompt text)."""
    split_seed: int = 0
    """Seed of the split's hash (the preference stages' `data.seed` with `data.test_fraction`)."""
    max_prompts: int | None = None
    """Use a seeded sample of at most N prompts (after filtering and splitting), kept in file order."""
    sample_seed: int = 0
    """Seed of that sample."""

    def __post_init__(self):
        if not 0 < self.eval_fraction < 1:
            raise AlignError(f"'eval_fraction' must be in (0, 1), got {self.eval_fraction}")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise AlignError(f"'max_prompts' must be >= 1 or unset, got {self.max_prompts}")


def load_prompt_set(name: str, cfg: PromptSetConfig) -> list[Prompt]:
    """The prompts of set `name`; an empty result is an AlignError saying what emptied it."""
    prompts: list[Prompt] = []
    read = 0
    for path in cfg.paths:
        for where, record in read_records(path, run_output="prompts"):
            read += 1
            if cfg.match and not _matches(record, cfg.match, where):
                continue
            prompts.append(parse_prompt(record, where, cfg.prompt_field))
    kept = len(prompts)
    if cfg.split != "all":
        train, held_out = split_pairs(
            [{"prompt": p.messages, "item": p} for p in prompts], cfg.eval_fraction, cfg.split_seed
        )
        prompts = [row["item"] for row in (held_out if cfg.split == "eval" else train)]
    prompts = sample(prompts, cfg.max_prompts, cfg.sample_seed)
    if not prompts:
        raise AlignError(
            f"prompt set '{name}' is empty: {read} records read from {', '.join(cfg.paths) or 'no paths'}, "
            f"{kept} matched {json.dumps(cfg.match) if cfg.match else '(no filter)'}, 0 left on the "
            f"'{cfg.split}' side of the split; check {name}.paths, {name}.match and {name}.split"
        )
    return prompts


def _matches(record, match: dict[str, str], where: str) -> bool:
    if not isinstance(record, dict):
        raise AlignError(
            f"{where}: `match` filters on record fields, but this record is a plain string; remove `match`"
        )
    return all(str(record.get(key)) == str(value) for key, value in match.items())
