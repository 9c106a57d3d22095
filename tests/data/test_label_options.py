"""data.weighting / data.ties on the preference loader: ties kept as pairs with `tie`, p_chosen required
and validated, held-out ties not scored, kto refuses them, tie_strength checked."""

from __future__ import annotations

import json

import pytest

from align.core.errors import AlignError
from align.data.preferences import PreferenceDataConfig, load_splits, training_pool


def pulled_row(i: int, majority, p_chosen=None):
    chosen = {"a": f"good {i}", "b": f"bad {i}"}.get(majority)
    rejected = {"a": f"bad {i}", "b": f"good {i}"}.get(majority)
    return {
        "prompt": [{"role": "user", "content": f"question {i}"}],
        "response_a": f"good {i}",
        "response_b": f"bad {i}",
        "chosen": [{"role": "assistant", "content": chosen}] if chosen else None,
        "rejected": [{"role": "assistant", "content": rejected}] if rejected else None,
        "majority": majority,
        "p_chosen": p_chosen,
        "counts": {"a": 2, "b": 1, "tie": 0},
        "agreement": 0.6667,
    }


@pytest.fixture
def pulled(tmp_path):
    rows = [pulled_row(0, "a", 0.9), pulled_row(1, "b", 0.7), pulled_row(2, "tie"), pulled_row(3, None)]
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_ties_are_dropped_by_default_and_kept_as_tie_pairs_on_request(pulled):
    data, rows, _ = training_pool(PreferenceDataConfig(train=pulled))
    assert len(rows) == 2 and data.report["ties_or_no_majority"] == 2 and not any(r.get("tie") for r in rows)
    data, rows, _ = training_pool(PreferenceDataConfig(train=pulled, ties="davidson"))
    assert data.report["ties_kept"] == 1 and data.report["ties_or_no_majority"] == 1  # the no-majority record
    tie = [r for r in rows if r.get("tie")]
    assert len(tie) == 1 and tie[0]["chosen"] == [{"role": "assistant", "content": "good 2"}]


def test_pairwise_label_zero_is_a_tie(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(
        "".join(
            json.dumps({"input": f"q{i}", "output_1": f"x{i}", "output_2": f"y{i}", "label": lab}) + "\n"
            for i, lab in enumerate([1, 0, 2])
        )
    )
    _, rows, _ = training_pool(PreferenceDataConfig(train=str(path), ties="rao_kupper"))
    assert [bool(r.get("tie")) for r in rows] == [False, True, False]
    _, rows, _ = training_pool(PreferenceDataConfig(train=str(path)))
    assert len(rows) == 2


def test_weighting_needs_p_chosen(pulled, tmp_path):
    data, _, _ = training_pool(PreferenceDataConfig(train=pulled, weighting="label_smoothing"))
    assert data.report["pairs_without_p_chosen"] == 0
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(AlignError, match="p_chosen"):
        training_pool(PreferenceDataConfig(train=str(plain), weighting="weight"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "p_chosen": 1.5}) + "\n")
    with pytest.raises(AlignError, match=r"probability in \[0, 1\]"):
        training_pool(PreferenceDataConfig(train=str(bad), weighting="weight"))


def test_held_out_ties_are_not_scored_and_kto_refuses(pulled, tmp_path):
    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps(pulled_row(i, "tie" if i % 2 else "a", 1.0)) + "\n" for i in range(40)))
    train, test = load_splits(PreferenceDataConfig(train=str(many), test_fraction=0.5, ties="davidson"))
    # The split is by prompt hash: ties fall on both sides; the held-out ones are counted, not scored.
    assert test.report["ties_not_scored"] > 0 and not any(r.get("tie") for r in test.rows) and test.rows
    assert test.report["ties_not_scored"] + sum(bool(r.get("tie")) for r in train.rows) == 20
    with pytest.raises(AlignError, match="kto"):
        training_pool(PreferenceDataConfig(train=pulled, ties="davidson"), unpaired=True)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"tie_strength": 2.0}, "ties=drop"),
        ({"ties": "rao_kupper", "tie_strength": 1.0}, "> 1"),
        ({"ties": "davidson", "tie_strength": 0.0}, "> 0"),
    ],
)
def test_tie_strength_is_checked(settings, message):
    with pytest.raises(AlignError, match=message):
        PreferenceDataConfig(train="x", **settings)
