"""The loop's `mix`: each round's prompts drawn from several kinds in fixed shares (align/loop/mix.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.core.config import build
from align.core.errors import AlignError
from align.loop.config import LoopConfig
from align.loop.mix import MixSettings, counts, kind_counts, kinds_of, write_round_prompts

BRAND = "recipes/brand_voice/prompts_train.jsonl"
SAFETY = "recipes/safety/prompts_rounds.jsonl"


def mix(n: int = 40, brand: float = 0.6, safety: float = 0.4) -> MixSettings:
    return build(
        MixSettings,
        {
            "prompts_per_round": n,
            "kinds": [
                {"kind": "brand", "prompts": BRAND, "share": brand},
                {"kind": "safety", "prompts": SAFETY, "share": safety, "simulate": {"judge": "safety"}},
            ],
        },
    )


@pytest.mark.parametrize(
    "n, shares, want",
    [
        (40, (0.6, 0.4), {"brand": 24, "safety": 16}),
        (7, (0.5, 0.5), {"brand": 4, "safety": 3}),  # largest remainder; ties go to the first name
        (10, (0.33, 0.67), {"brand": 3, "safety": 7}),
    ],
)
def test_counts_add_up_to_the_round(n, shares, want):
    assert counts(mix(n, *shares)) == want


def test_each_round_draws_its_share_of_each_kind_afresh(tmp_path):
    one = write_round_prompts(mix(), 1, tmp_path / "r1")
    rows = [json.loads(x) for x in (Path(one["path"]) / "prompts.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows].count("brand") == 24 and [r["kind"] for r in rows].count("safety") == 16
    assert all(r["from"].startswith(f"{BRAND if r['kind'] == 'brand' else SAFETY}:") for r in rows)
    assert one["metrics"]["per_kind"] == {"brand": 24, "safety": 16}
    again = write_round_prompts(mix(), 1, tmp_path / "r1-again")
    assert (Path(again["path"]) / "prompts.jsonl").read_text() == (Path(one["path"]) / "prompts.jsonl").read_text()
    two = write_round_prompts(mix(), 2, tmp_path / "r2")
    safety = [
        {r["prompt_id"] for r in map(json.loads, (Path(run["path"]) / "prompts.jsonl").open()) if r["kind"] == "safety"}
        for run in (one, two)
    ]
    assert safety[0] != safety[1]  # 16 of 296: a new draw each round
    kinds = kinds_of(one["path"])
    assert len(kinds) == 40 and set(kinds.values()) == {"brand", "safety"}
    # What each kind contributed to a pull, read from its rows' prompts.
    pulled = [
        {"prompt": r["messages"], "chosen": [1], "rejected": [2], "votes": [1, 2, 3], "majority": "a"} for r in rows[:3]
    ]
    pulled.append(
        {"prompt": rows[-1]["messages"], "chosen": None, "rejected": None, "votes": [1, 2], "majority": "tie"}
    )
    assert kind_counts(pulled, kinds) == {
        "brand": {"records": 3, "usable_pairs": 3, "votes": 9, "ties": 0},
        "safety": {"records": 1, "usable_pairs": 0, "votes": 2, "ties": 1},
    }


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {
                "prompts_per_round": 10,
                "kinds": [
                    {"kind": "a", "prompts": BRAND, "share": 0.5},
                    {"kind": "b", "prompts": SAFETY, "share": 0.4},
                ],
            },
            "shares add up to 0.9, not 1",
        ),
        (
            {
                "prompts_per_round": 10,
                "kinds": [
                    {"kind": "a", "prompts": BRAND, "share": 0.5},
                    {"kind": "a", "prompts": SAFETY, "share": 0.5},
                ],
            },
            "names a kind twice",
        ),
        (
            {
                "prompts_per_round": 1,
                "kinds": [
                    {"kind": "a", "prompts": BRAND, "share": 0.5},
                    {"kind": "b", "prompts": SAFETY, "share": 0.5},
                ],
            },
            "at least one per kind",
        ),
        ({"prompts_per_round": 10, "kinds": [{"kind": "a b", "prompts": BRAND, "share": 1.0}]}, "short name"),
    ],
)
def test_a_bad_mix_is_refused(data, message):
    with pytest.raises(AlignError, match=message):
        build(MixSettings, data)


def test_a_kind_too_small_for_its_share_or_a_prompt_in_two_kinds_is_refused(tmp_path):
    with pytest.raises(AlignError, match="has 30 prompts, fewer than its share"):
        write_round_prompts(mix(100, 0.5, 0.5), 1, tmp_path)
    twice = build(
        MixSettings,
        {
            "prompts_per_round": 4,
            "kinds": [{"kind": "a", "prompts": BRAND, "share": 0.5}, {"kind": "b", "prompts": BRAND, "share": 0.5}],
        },
    )
    with pytest.raises(AlignError, match="is in kind 'b' and in kind 'a'"):
        write_round_prompts(twice, 1, tmp_path)


def test_mix_and_generate_prompts_together_are_refused():
    with pytest.raises(AlignError, match="'generate.prompts' .* and 'mix' both say"):
        build(
            LoopConfig,
            {
                "recipe": "x",
                "gates": "g.yaml",
                "generate": {"prompts": BRAND},
                "mix": {"prompts_per_round": 4, "kinds": [{"kind": "a", "prompts": BRAND, "share": 1.0}]},
            },
        )
