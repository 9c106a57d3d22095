"""From annotators' answers to preference rows: record ids, the A/B swap, majority and agreement.

Pure functions, no I/O. Vocabulary: the two *candidates* of a pair are `a` and `b` (`response_a`,
`response_b` in the pairs file); what an annotator sees is positions `A` and `B`. Push shows
candidate `b` as A on a random half of the new records (a system random source, so nothing an
annotator can see predicts it) and keeps the order, `shown_as_a`, in its run and the label journal,
never on the server; `vote_from_answers` maps positions back to candidates. The record id is a hash
of the content with the two candidates in sorted order, so it does not reveal the order either.

Per record: `majority` is the choice (a, b or tie) of more than half of the submitted votes, else
None; `agreement` is the share of votes for the most common choice (1.0 when all agree, 0.5 for a
1-1 split); `chosen`/`rejected` are set only when the majority is a or b. Across records,
`krippendorff_alpha` (nominal) is the inter-annotator agreement corrected for chance.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

CHOICES = ("a", "b", "tie")


def record_id(prompt: Any, response_a: str, response_b: str, round: int) -> str:
    """Content id of a comparison: the same prompt, pair of responses and round always give the same id.

    The candidates enter in sorted order: an id over (a, b) in input order would let an annotator
    recompute it from the shown texts and learn which one the input listed first (for a preference
    file, the one its source preferred)."""
    payload = json.dumps(["v2", prompt, sorted([response_a, response_b]), round], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def legacy_record_id(prompt: Any, response_a: str, response_b: str, round: int) -> str:
    """The id push gave before ids were order-free; push recognises records of older datasets by it."""
    payload = json.dumps([prompt, response_a, response_b, round], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def legacy_shown_as_a(rid: str) -> str:
    """The A/B order older pushes derived from a legacy id (and also wrote into the record's metadata)."""
    return "b" if hashlib.sha256(f"ab-order:{rid}".encode()).digest()[0] & 1 else "a"


def _value(answers: dict[str, Any], name: str) -> Any:
    answer = answers.get(name)
    return answer.get("value") if isinstance(answer, dict) else None


def vote_from_answers(answers: dict[str, Any], shown_a: str) -> dict[str, Any] | None:
    """One annotator's submitted answers (Argilla `values`) as a vote on candidates, swap undone.

    None when the preference question was left unanswered (it is required, so only for odd data).
    """
    label = _value(answers, "preference")
    if label not in ("A", "B", "tie"):
        return None
    swapped = shown_a == "b"
    if label == "tie":
        choice = "tie"
    else:
        choice = {"A": "a", "B": "b"}[label]
        if swapped:
            choice = "b" if choice == "a" else "a"
    rating_shown_a, rating_shown_b = _value(answers, "rating_a"), _value(answers, "rating_b")
    vote = {
        "choice": choice,
        "strength": None if choice == "tie" else _value(answers, "strength"),
        "rating_a": rating_shown_b if swapped else rating_shown_a,
        "rating_b": rating_shown_a if swapped else rating_shown_b,
        "reason": _value(answers, "reason"),
    }
    return vote


def aggregate(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, majority, agreement and strength of one record's votes (each with a `choice`)."""
    counts = Counter(v["choice"] for v in votes)
    n = sum(counts.values())
    if n == 0:
        return {"counts": {c: 0 for c in CHOICES}, "majority": None, "agreement": None, "strength": None}
    top, top_n = max(counts.items(), key=lambda kv: (kv[1], kv[0] != "tie"))
    majority = top if top_n * 2 > n else None
    strengths = [
        v["strength"] for v in votes if v["choice"] == majority and isinstance(v.get("strength"), (int, float))
    ]
    return {
        "counts": {c: counts.get(c, 0) for c in CHOICES},
        "majority": majority,
        "agreement": round(top_n / n, 4),
        "strength": round(sum(strengths) / len(strengths), 4) if strengths else None,
    }


def pairwise_agreement(units: Iterable[list[str]]) -> float | None:
    """Mean, over records with 2+ votes, of the share of annotator pairs that chose the same."""
    scores = []
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        same = sum(k * (k - 1) for k in Counter(unit).values())
        scores.append(same / (m * (m - 1)))
    return round(sum(scores) / len(scores), 4) if scores else None


def krippendorff_alpha(units: Iterable[list[str]]) -> float | None:
    """Krippendorff's alpha for nominal labels (the `krippendorff` package); units are the votes of one record each.

    1 is perfect agreement, 0 is chance level. Computed from per-record vote counts, so annotators
    need not label the same records. None when no record has 2+ votes or every vote is the same label
    (agreement is then undefined, not perfect).
    """
    import krippendorff
    import numpy as np

    counts = np.array([[Counter(unit)[c] for c in CHOICES] for unit in units if len(unit) >= 2], dtype=float)
    if counts.size == 0:
        return None
    counts = counts[:, counts.sum(axis=0) > 0]  # labels nobody used are not part of the domain
    if counts.shape[1] < 2:
        return None
    return round(float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal")), 4)
