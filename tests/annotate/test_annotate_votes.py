"""Vote aggregation, agreement and the A/B swap: hand-worked numbers, no server."""

from __future__ import annotations

import pytest

from align.annotate.votes import (
    aggregate,
    krippendorff_alpha,
    legacy_record_id,
    legacy_shown_as_a,
    pairwise_agreement,
    record_id,
    vote_from_answers,
)

PROMPT = [{"role": "user", "content": "Say hello"}]


def answers(label, strength=None, rating_a=None, rating_b=None):
    out = {"preference": {"value": label}}
    for name, value in (("strength", strength), ("rating_a", rating_a), ("rating_b", rating_b)):
        if value is not None:
            out[name] = {"value": value}
    return out


def test_record_id_depends_on_content_and_round_only():
    rid = record_id(PROMPT, "Hi!", "Hello.", 1)
    assert rid == record_id([dict(m) for m in PROMPT], "Hi!", "Hello.", 1)
    assert len({rid, record_id(PROMPT, "Hi!", "Hello.", 2), record_id(PROMPT, "Hi", "Hello.", 1)}) == 3


def test_record_id_does_not_reveal_the_input_order():
    # An annotator sees both texts and the id: the id must be the same whichever the input listed first.
    assert record_id(PROMPT, "Hi!", "Hello.", 1) == record_id(PROMPT, "Hello.", "Hi!", 1)
    # The legacy id (older datasets) did depend on it, and so did the order derived from it.
    assert legacy_record_id(PROMPT, "Hi!", "Hello.", 1) != legacy_record_id(PROMPT, "Hello.", "Hi!", 1)
    assert record_id(PROMPT, "Hi!", "Hello.", 1) != legacy_record_id(PROMPT, "Hi!", "Hello.", 1)
    firsts = [legacy_shown_as_a(legacy_record_id(PROMPT, f"reply {i}", "other", 1)) for i in range(400)]
    assert 160 < firsts.count("b") < 240


def test_vote_undoes_the_swap_including_ratings():
    shown_straight = vote_from_answers(answers("A", strength=2, rating_a=5, rating_b=1), shown_a="a")
    assert shown_straight == {"choice": "a", "strength": 2, "rating_a": 5, "rating_b": 1, "reason": None}
    swapped = vote_from_answers(answers("A", strength=2, rating_a=5, rating_b=1), shown_a="b")
    assert swapped == {"choice": "b", "strength": 2, "rating_a": 1, "rating_b": 5, "reason": None}
    assert vote_from_answers(answers("B"), shown_a="b")["choice"] == "a"
    assert vote_from_answers(answers("tie", strength=3), shown_a="b") == {
        "choice": "tie",
        "strength": None,
        "rating_a": None,
        "rating_b": None,
        "reason": None,
    }
    assert vote_from_answers({}, shown_a="a") is None


@pytest.mark.parametrize(
    "choices, majority, agreement",
    [
        (["a"], "a", 1.0),
        (["a", "a"], "a", 1.0),
        (["a", "b"], None, 0.5),
        (["tie", "tie"], "tie", 1.0),
        (["a", "tie"], None, 0.5),
        (["b", "b", "a"], "b", 0.6667),
        (["a", "b", "tie"], None, 0.3333),
    ],
)
def test_majority_and_agreement(choices, majority, agreement):
    agg = aggregate([{"choice": c, "strength": None} for c in choices])
    assert agg["majority"] == majority
    assert agg["agreement"] == agreement
    assert sum(agg["counts"].values()) == len(choices)


def test_strength_is_the_mean_of_the_majority_voters():
    votes = [{"choice": "b", "strength": 3}, {"choice": "b", "strength": 2}, {"choice": "a", "strength": 1}]
    assert aggregate(votes)["strength"] == 2.5
    assert aggregate([{"choice": "a", "strength": None}])["strength"] is None


def test_agreement_across_records_hand_worked():
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["tie", "tie"], ["a"]]
    # pairwise: records with 2+ votes agree 1, 0, 1, 1 -> 0.75; the single vote does not count
    assert pairwise_agreement(units) == 0.75
    # Krippendorff (nominal): o_aa=2, o_ab=o_ba=1, o_bb=2, o_tt=2; n_a=3, n_b=3, n_t=2, n=8
    # D_o = 2 (off-diagonal), sum_{c!=k} n_c n_k = 2*(9+6+6) = 42 -> alpha = 1 - 7*2/42 = 0.6667
    assert krippendorff_alpha(units) == 0.6667
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # no variation: undefined
    assert krippendorff_alpha([["a"], ["b"]]) is None
    assert krippendorff_alpha([["a", "b"], ["b", "a"]]) < 0  # systematic disagreement
