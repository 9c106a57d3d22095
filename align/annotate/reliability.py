"""Annotator reliability and per-pair posteriors from the votes themselves: one-coin Dawid-Skene by EM.

Each pulled pair is a binary task, "candidate a is better" or "candidate b is better". Annotator j
is modelled by one number, their reliability r_j = P(vote = truth); the truth z_i of pair i has
prior pi = P(z_i = a). EM alternates:

    E-step   q_i(a) proportional to  pi * prod_j r_j^[v_ij = a] (1 - r_j)^[v_ij = b]
             q_i(b) proportional to  (1 - pi) * prod_j r_j^[v_ij = b] (1 - r_j)^[v_ij = a]
    M-step   r_j = (sum_i q_i(v_ij) + gold_correct_j + s * r0) / (n_j + gold_total_j + s)
             pi  = (sum_i q_i(a) + 1) / (N + 2)

starting from the vote shares (q_i(a) = share of a among pair i's a/b votes), until no posterior
moves by more than `tol`. An annotator whose reliability comes out below 0.5 (e.g. one who answers
against the truth on purpose) has their votes counted the other way round.

Where this departs from Dawid & Skene (1979):
- one coin per annotator (the "one-coin" model of Zhang, Chen, Zhou & Jordan 2016) instead of a full
  confusion matrix: two labels and few votes per annotator (8-64 records a round) would leave two
  parameters per annotator poorly determined. A position bias is therefore not modelled apart from
  plain noise (the A/B display order is randomised per record, so it shows up as lower reliability);
- maximum a posteriori instead of maximum likelihood: a Beta prior of strength `prior_strength`
  pseudo-votes with mean `prior_reliability` keeps an annotator seen on few pairs from a reliability
  of exactly 0 or 1 (plain EM pins them there, and every posterior becomes 0 or 1);
- gold: an annotator's answers on known-answer pairs (`gold`, correct and total) enter the M-step as
  observed votes on pairs whose truth is known, as crowd-kit's DawidSkene does with `true_labels`;
- tie votes are not part of the binary task: they are left out here (a pair most annotators call a
  tie is a tie, decided by vote counts in pull.py, and trained on only with `data.ties`);
- a reliability is estimated only from pairs with at least two a/b votes. Plain EM also counts a pair
  where one annotator alone chose a or b, whose posterior is then that annotator's own vote: such votes
  always "agree with the truth". Where most pairs are ties (a safety round in which both samples
  usually refuse or both answer), an adversary who answers a or b on every tie then reached a
  reliability near 1 and outvoted two careful annotators on the contested pairs
  (benchmarks/label_efficiency_probe.py found it). With every pair voted a/b by everyone, as in the
  crowd-kit check, nothing changes.

crowd-kit's OneCoinDawidSkene computes the same EM without the prior and without gold; the benchmark
(benchmarks/label_models.py) checks that with `prior_strength=0` the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

LabelModel = Literal["majority", "dawid_skene"]
LABEL_MODELS = ("majority", "dawid_skene")


@dataclass
class Estimate:
    """What EM found: a posterior per pair and a reliability per annotator."""

    p_a: list[float | None]
    """Per pair, P(candidate a is better | votes); None for a pair with no a/b vote."""
    reliability: dict[str, float]
    """Per annotator, the estimated probability that their vote is right."""
    prior_a: float
    """Estimated share of pairs whose candidate a is better."""
    iterations: int
    converged: bool


def vote_share_p_a(votes: list[str]) -> float | None:
    """Share of a among the a/b votes (ties left out); None without any."""
    ab = [v for v in votes if v in ("a", "b")]
    return sum(v == "a" for v in ab) / len(ab) if ab else None


def e_step(pairs: list[list[tuple[str, str]]], reliability: dict[str, float], prior_a: float) -> list[float | None]:
    """P(a is better) per pair given each annotator's reliability; `pairs` holds (annotator, a|b) votes."""
    out: list[float | None] = []
    for votes in pairs:
        ab = [(who, v) for who, v in votes if v in ("a", "b")]
        if not ab:
            out.append(None)
            continue
        # Log odds of a against b, so a long list of votes does not underflow.
        log_odds = math.log(prior_a) - math.log1p(-prior_a)
        for who, v in ab:
            r = reliability[who]
            step = math.log(r) - math.log1p(-r)
            log_odds += step if v == "a" else -step
        out.append(1.0 / (1.0 + math.exp(-log_odds)) if log_odds > -700 else 0.0)
    return out


def m_step(
    pairs: list[list[tuple[str, str]]],
    p_a: list[float | None],
    gold: dict[str, tuple[int, int]],
    prior_reliability: float,
    prior_strength: float,
) -> tuple[dict[str, float], float]:
    """(reliability per annotator, prior of a) from the posteriors: expected share of votes that are right.

    Only pairs with at least two a/b votes count towards a reliability: on a pair where one annotator
    alone chose a or b (the others said tie, or no one else answered), the posterior is that annotator's
    own vote, so counting it would confirm them whatever they do.
    """
    right: dict[str, float] = {}
    seen: dict[str, float] = {}
    voters: set[str] = set()
    for votes, q in zip(pairs, p_a):
        ab = [(who, v) for who, v in votes if v in ("a", "b")]
        voters.update(who for who, _ in ab)
        if q is None or len(ab) < 2:
            continue
        for who, v in ab:
            right[who] = right.get(who, 0.0) + (q if v == "a" else 1.0 - q)
            seen[who] = seen.get(who, 0.0) + 1.0
    reliability = {}
    for who in sorted(voters | set(gold)):
        correct, total = gold.get(who, (0, 0))
        num = right.get(who, 0.0) + correct + prior_strength * prior_reliability
        den = seen.get(who, 0.0) + total + prior_strength
        # Kept off 0 and 1 so the log odds in the E-step stay finite when prior_strength=0.
        reliability[who] = min(max(num / den if den > 0 else prior_reliability, 1e-6), 1 - 1e-6)
    known = [q for q in p_a if q is not None]
    prior_a = (sum(known) + 1.0) / (len(known) + 2.0)
    return reliability, prior_a


def dawid_skene(
    pairs: Iterable[list[tuple[str, str]]],
    gold: dict[str, tuple[int, int]] | None = None,
    prior_reliability: float = 0.7,
    prior_strength: float = 2.0,
    max_iterations: int = 200,
    tol: float = 1e-6,
) -> Estimate:
    """One-coin Dawid-Skene by EM over pairs of (annotator, choice) votes; see the module docstring.

    `gold` maps an annotator to (correct, total) answers on known-answer pairs.
    """
    pairs = [list(v) for v in pairs]
    gold = gold or {}
    p_a = [vote_share_p_a([v for _, v in votes]) for votes in pairs]
    reliability, prior_a = m_step(pairs, p_a, gold, prior_reliability, prior_strength)
    converged = False
    iterations = 0
    while not converged and iterations < max_iterations:
        iterations += 1
        new = e_step(pairs, reliability, prior_a)
        converged = max((abs(x - y) for x, y in zip(new, p_a) if x is not None and y is not None), default=0.0) < tol
        p_a = new
        reliability, prior_a = m_step(pairs, p_a, gold, prior_reliability, prior_strength)
    return Estimate(p_a=p_a, reliability=reliability, prior_a=prior_a, iterations=iterations, converged=converged)


PRIOR_RELIABILITY = 0.7
"""Prior mean reliability: an annotator is assumed right 7 times in 10 until their votes say otherwise."""
PRIOR_STRENGTH = 2.0
"""Weight of that prior, in votes: after 20 votes it moves an estimate by at most ~0.03."""


def label_rows(rows: list[dict], label_model: LabelModel, gold: dict[str, tuple[int, int]] | None = None) -> dict:
    """Set `p_chosen` and `label_model` on pulled rows (in place) and return what the manifest records.

    The reliability estimate is made for either label model, so the manifest shows each annotator's
    reliability even when labels are the majority's. `majority`: chosen is the majority as before and
    `p_chosen` the share of the a/b votes that chose it. `dawid_skene`: chosen is the candidate with
    the higher posterior (which can differ from the majority, and decides 1-1 splits by reliability),
    `p_chosen` that posterior. A pair the majority calls a tie stays a tie under both (p_chosen null);
    a posterior of exactly 0.5 leaves the pair without a label, as a no-majority record.
    """
    if label_model not in LABEL_MODELS:
        raise ValueError(f"label_model must be one of {LABEL_MODELS}, got {label_model!r}")
    votes = [[(v["annotator"], v["choice"]) for v in row["votes"]] for row in rows]
    estimate = dawid_skene(votes, gold, PRIOR_RELIABILITY, PRIOR_STRENGTH)
    changed = 0
    for row, pair_votes, p_a in zip(rows, votes, estimate.p_a):
        row["label_model"] = label_model
        share = vote_share_p_a([v for _, v in pair_votes])
        if row["majority"] == "tie":
            row["p_chosen"] = None
            continue
        if label_model == "majority":
            winner = row["majority"]
            p = share
        else:
            winner = None if p_a is None or p_a == 0.5 else ("a" if p_a > 0.5 else "b")
            p = p_a
            if winner != row["majority"]:
                changed += 1
                _set_winner(row, winner)
        row["p_chosen"] = None if winner is None or p is None else round(p if winner == "a" else 1.0 - p, 6)
    return {
        "method": label_model,
        "reliability": {who: round(r, 4) for who, r in estimate.reliability.items()},
        "reliability_model": "one-coin Dawid-Skene (MAP EM, Beta prior mean "
        f"{PRIOR_RELIABILITY}, {PRIOR_STRENGTH:g} pseudo-votes)",
        "gold_annotators": sorted(gold or {}),
        "prior_a": round(estimate.prior_a, 4),
        "em_iterations": estimate.iterations,
        "em_converged": estimate.converged,
        "labels_changed_from_majority": changed,
    }


def _set_winner(row: dict, winner: str | None) -> None:
    """chosen/rejected of a pulled row for the candidate `winner` (a, b, or None: no label)."""
    if winner is None:
        row["chosen"] = row["rejected"] = None
        return
    better, worse = (row["response_a"], row["response_b"]) if winner == "a" else (row["response_b"], row["response_a"])
    row["chosen"] = [{"role": "assistant", "content": better}]
    row["rejected"] = [{"role": "assistant", "content": worse}]
