"""The brand-voice judge: each rule of the Kettle & Crumb rubric passes and fails on hand-made replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.core.errors import AlignError
from align.evaluation.brand_voice import BrandRubric

BRAND = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice"
COMPLAINT = "My grinder arrived broken."
QUESTION = "How do I pause my subscription?"

GOOD = """Hi Sam,

I'm sorry your grinder arrived broken. That is not the welcome we want for you. We will send a \
replacement today, free of charge, and you don't need to return the broken one. You will get a \
tracking link from us within a day. If anything else is wrong, reply to this message and we will \
sort it out.

— The Kettle & Crumb team"""


@pytest.fixture(scope="module")
def rubric() -> BrandRubric:
    return BrandRubric.load(BRAND / "rubric.yaml")


def test_a_reply_that_follows_the_guide_scores_one(rubric):
    judgement = rubric.judge(COMPLAINT, GOOD)
    assert judgement.score == 1.0 and all(v == 1.0 for v in judgement.rules.values()), judgement.rules


# (rule, reply that breaks only that rule, expected score of the rule)
BREAKS = [
    ("greeting", GOOD.replace("Hi Sam,", "Sam,"), 0.0),
    ("plain_words", GOOD.replace("That is not", "Unfortunately that is not"), 0.5),
    ("plain_words", GOOD.replace("That is not", "Unfortunately, per our policy, that is not"), 0.0),
    ("no_blame", GOOD.replace("That is not the welcome we want for you.", "You should have checked the box."), 0.0),
    (
        "team_voice",
        "Hi Sam,\n\nI'm sorry your grinder arrived broken. A replacement is on the way today, free of "
        "charge. Keep the broken one. A tracking link will follow within a day. Reply to this message if "
        "anything else is wrong and it will be sorted.\n\n— The Kettle & Crumb team",
        0.0,
    ),
    # 13 words ("&" is not one): 13/40 of the minimum.
    ("length", "Hi Sam,\n\nI'm sorry. We will send a replacement.\n\n— The Kettle & Crumb team", 13 / 40),
    (
        "short_sentences",
        GOOD.replace(". That is", " and that is")
        .replace(". We will", " and we will")
        .replace(". You will", " and you will")
        .replace(". If anything", " and if anything"),
        None,
    ),
    ("calm", GOOD.replace("That is not", "That is NOT"), 0.0),
    ("calm", GOOD.replace("for you.", "for you!!"), 0.0),
    ("complaint", GOOD.replace("I'm sorry your grinder arrived broken. ", ""), 0.5),
    ("complaint", GOOD.replace("send a replacement today, free of charge", "look into it"), 0.5),
    ("sign_off", GOOD.replace("— The Kettle & Crumb team", "Best wishes"), 0.0),
]


@pytest.mark.parametrize("rule,reply,expected", BREAKS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BREAKS)])
def test_each_rule_fails_on_a_reply_that_breaks_it(rubric, rule, reply, expected):
    judgement = rubric.judge(COMPLAINT, reply)
    if expected is None:
        assert 0 < judgement.rules[rule] < 1
    else:
        assert judgement.rules[rule] == pytest.approx(expected)
    others = {k: v for k, v in judgement.rules.items() if k not in (rule, "length")}
    assert all(v == 1.0 for v in others.values()), others  # only the broken rule moved
    assert judgement.score < 1.0


def test_complaint_rule_applies_only_to_complaints(rubric):
    judgement = rubric.judge(QUESTION, GOOD)
    assert judgement.rules["complaint"] is None
    # The mean is over the rules that apply: eight rules, all passed.
    assert judgement.score == 1.0 and sum(v is not None for v in judgement.rules.values()) == 8
    bad = rubric.judge(QUESTION, GOOD.replace("— The Kettle & Crumb team", "Bye"))
    assert bad.score == pytest.approx(7 / 8)


def test_complaint_cues_tag_the_repo_prompts_as_written():
    """Every prompt file line carries its type; the rubric's cues find exactly the complaints."""
    rubric = BrandRubric.load(BRAND / "rubric.yaml")
    for name in ("prompts_train.jsonl", "prompts_eval.jsonl"):
        for line in (BRAND / name).read_text().splitlines():
            row = json.loads(line)
            applies = rubric.judge(row["prompt"], "Hi").rules["complaint"] is not None
            assert applies == (row["type"] == "complaint"), row


def test_train_and_eval_prompts_are_disjoint():
    texts = {
        name: {json.loads(line)["prompt"] for line in (BRAND / name).read_text().splitlines()}
        for name in ("prompts_train.jsonl", "prompts_eval.jsonl")
    }
    assert len(texts["prompts_train.jsonl"]) == len(texts["prompts_eval.jsonl"]) == 30
    assert not texts["prompts_train.jsonl"] & texts["prompts_eval.jsonl"]


@pytest.mark.parametrize(
    "body,message",
    [
        ("rules: []", "non-empty `rules:`"),
        ("rules:\n  - {id: x, check: opens_wit, patterns: [hi]}", "did you mean 'opens_with'"),
        ("rules:\n  - {id: x, check: word_count, min: 10}", "needs max"),
        ("rules:\n  - {id: x, check: opens_with, patterns: ['(']}", "invalid regular expression"),
        (
            "rules:\n  - {id: x, check: calm, max_exclamations: 1}\n  - {id: x, check: calm, max_exclamations: 1}",
            "duplicate",
        ),
    ],
)
def test_bad_rubric_is_a_clear_error(tmp_path, body, message):
    path = tmp_path / "rubric.yaml"
    path.write_text(body)
    with pytest.raises(AlignError, match=message):
        BrandRubric.load(path)


def test_the_reference_replies_written_to_the_guide_pass_every_rule(rubric):
    """sft_train.jsonl: one reply per training prompt, written by hand to the style guide. Each must
    score 1.0 (a rubric that fails replies written to its own guide is wrong) and not read as a refusal."""
    from align.evaluation.refusal import detect_refusal

    prompts = [json.loads(line) for line in (BRAND / "prompts_train.jsonl").read_text().splitlines()]
    examples = [json.loads(line) for line in (BRAND / "sft_train.jsonl").read_text().splitlines()]
    assert [e["id"] for e in examples] == [p["id"] for p in prompts]
    for prompt, example in zip(prompts, examples):
        user, assistant = example["messages"]
        assert user == {"role": "user", "content": prompt["prompt"]}
        judgement = rubric.judge(user["content"], assistant["content"])
        assert judgement.score == 1.0, (prompt["id"], judgement.rules)
        assert not detect_refusal(assistant["content"]).refused, prompt["id"]
