"""Choosing which two of a prompt's N responses annotators should compare.

Rules (`selection:`):
- `random`: two distinct responses drawn with a seeded RNG (seeded per prompt, so a prompt's pair
  does not change when other prompts are added or removed);
- `least_sure`: the two responses whose reward-model scores are closest, i.e. the comparison the
  reward model is least sure about and a human label teaches it most;
- `best_vs_worst`: the highest- and lowest-scored responses (clear contrasts, e.g. for a DPO warm-up);
- `refusal_contrast`: a refusal and an answer (align.evaluation.refusal's detector) when the prompt's
  responses include both, else random. For teaching when to refuse: a model that rarely refuses
  gives two answers nearly every time (measured on the safety recipe: 70 of 72 prompts had no
  refusal among two samples at temperature 1.0), and the annotators' vote on two answers says
  nothing about refusing. The annotators still decide which of the two is better.

Empty responses are dropped and identical ones (after trimming whitespace) merged before choosing,
keeping the first; a prompt with fewer than two distinct non-empty responses yields no pair and is
counted by the caller.
The two responses are shown in a seeded random order (not best-first), so position carries no hint.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

Selection = Literal["random", "least_sure", "best_vs_worst", "refusal_contrast"]
NEEDS_SCORES = ("least_sure", "best_vs_worst")


@dataclass
class Candidate:
    text: str
    score: float | None
    refused: bool | None = None


@dataclass
class Choice:
    a: Candidate
    b: Candidate


def distinct(texts: list[str], scores: list[float] | None) -> list[Candidate]:
    """Non-empty responses with duplicates (same text up to surrounding whitespace) merged, first kept."""
    seen: set[str] = set()
    out = []
    for i, text in enumerate(texts):
        key = text.strip()
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(Candidate(text, None if scores is None else float(scores[i])))
    return out


def choose_pair(candidates: list[Candidate], selection: str, rng: random.Random) -> Choice | None:
    """Two of `candidates` by the rule `selection`, or None when fewer than two are given."""
    if len(candidates) < 2:
        return None
    if selection == "refusal_contrast":
        if any(c.refused is None for c in candidates):
            raise ValueError("selection 'refusal_contrast' needs every response marked refused or not")
        refusals = [c for c in candidates if c.refused]
        answers = [c for c in candidates if not c.refused]
        if refusals and answers:
            pair = (rng.choice(refusals), rng.choice(answers))
            return Choice(*pair) if rng.random() < 0.5 else Choice(pair[1], pair[0])
        selection = "random"
    if selection == "random":
        first, second = rng.sample(range(len(candidates)), 2)
        return Choice(candidates[first], candidates[second])
    if any(c.score is None for c in candidates):
        raise ValueError(f"selection {selection!r} needs a score for every response")
    ranked = sorted(candidates, key=lambda c: c.score)
    if selection == "best_vs_worst":
        low, high = ranked[0], ranked[-1]
    elif selection == "least_sure":
        # Neighbours in score order include the closest pair; the first smallest gap wins ties.
        k = min(range(len(ranked) - 1), key=lambda j: ranked[j + 1].score - ranked[j].score)
        low, high = ranked[k], ranked[k + 1]
    else:
        raise ValueError(f"unknown selection {selection!r}")
    return Choice(high, low) if rng.random() < 0.5 else Choice(low, high)


def prompt_rng(seed: int, prompt_key: str) -> random.Random:
    """An RNG for one prompt: depends on the seed and the prompt only."""
    digest = hashlib.sha256(f"{seed}:{prompt_key}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
