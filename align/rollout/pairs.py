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
  nothing about refusing. The annotators still decide which of the two is better;
- `ensemble_disagreement`: the pair the members of a reward-model ensemble disagree on most
  (`ensemble_disagreement()` below: BALD over the members' Bradley-Terry probabilities);
- `dpo_margin`: the pair with the smallest |DPO implicit reward margin| under the current policy and
  its reference (`dpo_margin()` below): the comparison the policy has least settled.

The three uncertainty rules (`UNCERTAINTY`) also give each chosen pair an `uncertainty` in bits, so a
label budget (`align annotate push max_records=N`) can keep the N prompts whose pairs are least sure.

Empty responses are dropped and identical ones (after trimming whitespace) merged before choosing,
keeping the first; a prompt with fewer than two distinct non-empty responses yields no pair and is
counted by the caller.
The two responses are shown in a seeded random order (not best-first), so position carries no hint.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass
from typing import Literal

Selection = Literal["random", "least_sure", "best_vs_worst", "refusal_contrast", "ensemble_disagreement", "dpo_margin"]
NEEDS_SCORES = ("least_sure", "best_vs_worst")
NEEDS_MEMBERS = ("ensemble_disagreement",)
NEEDS_LOGRATIOS = ("dpo_margin",)
UNCERTAINTY = ("least_sure", "ensemble_disagreement", "dpo_margin")
"""Rules that rank pairs by how unsure a model is: a label budget keeps the most uncertain pairs."""


@dataclass
class Candidate:
    text: str
    score: float | None
    refused: bool | None = None
    members: list[float] | None = None
    """Scores of the reward-model ensemble's members (`align score` with an ensemble run)."""
    logratio: float | None = None
    """log pi(reply | prompt) - log pi_ref(reply | prompt), summed over the reply's tokens (`align score policy=...`)."""


@dataclass
class Choice:
    a: Candidate
    b: Candidate
    uncertainty: float | None = None
    """How unsure the model is about this pair, in bits (0: sure, 1: a coin flip); None for rules without one."""


def distinct(
    texts: list[str],
    scores: list[float] | None,
    members: list[list[float]] | None = None,
    logratios: list[float] | None = None,
) -> list[Candidate]:
    """Non-empty responses with duplicates (same text up to surrounding whitespace) merged, first kept."""
    seen: set[str] = set()
    out = []
    for i, text in enumerate(texts):
        key = text.strip()
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(
            Candidate(
                text,
                None if scores is None else float(scores[i]),
                members=None if members is None else [float(s) for s in members[i]],
                logratio=None if logratios is None else float(logratios[i]),
            )
        )
    return out


def choose_pair(candidates: list[Candidate], selection: str, rng: random.Random, beta: float = 0.1) -> Choice | None:
    """Two of `candidates` by the rule `selection`, or None when fewer than two are given.
    `beta` is DPO's, for `dpo_margin` (it scales the margin, so it changes the uncertainty, not the pair)."""
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
    if selection in ("ensemble_disagreement", "dpo_margin"):
        if selection == "ensemble_disagreement" and (
            any(not c.members for c in candidates) or len({len(c.members) for c in candidates}) != 1
        ):
            raise ValueError(
                "selection 'ensemble_disagreement' needs the same number of member scores for every response"
            )
        if selection == "dpo_margin" and any(c.logratio is None for c in candidates):
            raise ValueError("selection 'dpo_margin' needs a policy/reference log-ratio for every response")
        # Every pair; equally uncertain pairs are drawn from at random (a policy that is its own reference gives
        # every pair margin 0, and the first pair would then always be the first two samples).
        scored = [(pair_uncertainty(selection, x, y, beta), x, y) for x, y in itertools.combinations(candidates, 2)]
        uncertainty = max(u for u, _, _ in scored)
        _, low, high = rng.choice([t for t in scored if t[0] >= uncertainty - 1e-12])
        return Choice(high, low, uncertainty) if rng.random() < 0.5 else Choice(low, high, uncertainty)
    if any(c.score is None for c in candidates):
        raise ValueError(f"selection {selection!r} needs a score for every response")
    ranked = sorted(candidates, key=lambda c: c.score)
    uncertainty = None
    if selection == "best_vs_worst":
        low, high = ranked[0], ranked[-1]
    elif selection == "least_sure":
        # Neighbours in score order include the closest pair; the first smallest gap wins ties.
        k = min(range(len(ranked) - 1), key=lambda j: ranked[j + 1].score - ranked[j].score)
        low, high = ranked[k], ranked[k + 1]
        uncertainty = bernoulli_entropy(sigmoid(high.score - low.score))
    else:
        raise ValueError(f"unknown selection {selection!r}")
    return Choice(high, low, uncertainty) if rng.random() < 0.5 else Choice(low, high, uncertainty)


def pair_uncertainty(selection: str, a: Candidate, b: Candidate, beta: float) -> float:
    """How unsure the model behind `selection` is which of a and b is better, in bits."""
    if selection == "ensemble_disagreement":
        return ensemble_disagreement(a.members, b.members)
    return bernoulli_entropy(sigmoid(dpo_margin(a.logratio, b.logratio, beta)))


def ensemble_disagreement(members_a: list[float], members_b: list[float]) -> float:
    """How much an ensemble's members disagree on whether A beats B, in bits: BALD's mutual information.

    Member k gives p_k = sigmoid(s_k(A) - s_k(B)), the Bradley-Terry probability that A is preferred (the
    model every reward member was trained under). With p = mean_k p_k and H the binary entropy,

        disagreement = H(p) - mean_k H(p_k)

    (Houlsby et al. 2011, "Bayesian Active Learning by Disagreement", with the bootstrap members standing
    in for posterior samples). It is 0 when every member gives the same p_k, whatever that is: two replies
    all members find equally good (every p_k = 0.5) cost a label but would teach nothing, so the measure
    already weighs "the members are unsure which is better" by "the replies differ enough to disagree on".
    It is 1 bit at most, when half the members are certain A wins and half certain B wins.
    Departure: BALD's members are posterior samples; here they are reward models on bootstrap resamples.
    """
    if len(members_a) != len(members_b) or not members_a:
        raise ValueError(
            f"need the same number (>= 1) of member scores for both replies, got {len(members_a)} and {len(members_b)}"
        )
    probs = [sigmoid(a - b) for a, b in zip(members_a, members_b)]
    mean = sum(probs) / len(probs)
    # Rounding error can make it a hair below 0; the quantity is >= 0 by Jensen (H is concave).
    return max(0.0, bernoulli_entropy(mean) - sum(bernoulli_entropy(p) for p in probs) / len(probs))


def dpo_margin(logratio_a: float, logratio_b: float, beta: float) -> float:
    """DPO's implicit reward margin of A over B: beta * [(log pi(A) - log pi_ref(A)) - (log pi(B) - log pi_ref(B))]
    (Rafailov et al. 2023, eq. 5 without the partition function, which cancels within one prompt).
    `dpo_margin` selection takes the pair with the smallest |margin|, i.e. the largest binary entropy of
    sigmoid(margin), DPO's own probability that A is preferred."""
    return beta * (logratio_a - logratio_b)


def sigmoid(x: float) -> float:
    # The two branches keep exp() from overflowing for large |x|.
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def bernoulli_entropy(p: float) -> float:
    """H(p) in bits; 0 at p = 0 or 1, 1 at p = 0.5."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def budget(pairs: list[dict], limit: int, seed: int | str) -> tuple[list[dict], str]:
    """At most `limit` of `pairs` and the rule used: the most uncertain when every pair has an `uncertainty`,
    else a seeded random sample; either way kept in input order. Equally uncertain pairs are drawn from at
    random (with the same seed), not by input order: a policy scored against itself gives every pair 1 bit."""
    if len(pairs) <= limit:
        return list(pairs), "all"
    shuffled = random.Random(f"budget:{seed}").sample(range(len(pairs)), len(pairs))
    if all(p.get("uncertainty") is not None for p in pairs):
        rank = {i: r for r, i in enumerate(shuffled)}
        order = sorted(range(len(pairs)), key=lambda i: (-pairs[i]["uncertainty"], rank[i]))
        rule = "most_uncertain"
    else:
        order, rule = shuffled, "random"
    keep = sorted(order[:limit])
    return [pairs[i] for i in keep], rule


def prompt_rng(seed: int, prompt_key: str) -> random.Random:
    """An RNG for one prompt: depends on the seed and the prompt only."""
    digest = hashlib.sha256(f"{seed}:{prompt_key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
