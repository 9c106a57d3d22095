"""The token budget for preference pairs: long prompts keep their last turns (counted), what still does
not fit is counted and left out, and every kept pair carries its measured length."""

from __future__ import annotations

import pytest

from align.core.config import load_config
from align.core.errors import AlignError
from align.data.length import LENGTH, drop_first_exchange, pair_budget, within_budget
from align.data.preferences import PreferenceDataConfig, load_splits
from align.scoring import conversation_ids
from tests.conftest import write_jsonl


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def long_pair(turns: int, last_question: str = "And what now?"):
    """A conversation of `turns` long exchanges, then a short last question with short replies."""
    prompt = []
    for i in range(turns):
        prompt += [
            user(f"Question {i}: " + "tell me more about the weather " * 12),
            assistant(f"Answer {i}: " + "it is sunny and warm today " * 12),
        ]
    prompt.append(user(last_question))
    return {"prompt": prompt, "chosen": [assistant("Rest, then try again.")], "rejected": [assistant("Give up.")]}


def pair_tokens(tokenizer, row):
    return max(len(conversation_ids(tokenizer, row["prompt"] + row[p])) for p in ("chosen", "rejected"))


def test_drop_first_exchange_cuts_whole_exchanges_and_keeps_the_system_message():
    system = {"role": "system", "content": "Be brief."}
    prompt = [system, user("a"), assistant("b"), assistant("b2"), user("c"), assistant("d"), user("e")]
    assert drop_first_exchange(prompt) == [system, user("c"), assistant("d"), user("e")]
    assert drop_first_exchange([system, user("c"), assistant("d"), user("e")]) == [system, user("e")]
    assert drop_first_exchange([system, user("e")]) is None
    assert drop_first_exchange([user("only one turn")]) is None


def test_long_prompts_keep_their_last_turns_and_are_counted(tokenizer):
    short = {"prompt": [user("Hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("Go away.")]}
    long = long_pair(turns=4)
    hopeless = long_pair(turns=2, last_question="Why? " * 200)  # its last user turn alone is over the budget
    budget = pair_tokens(tokenizer, long_pair(turns=1)) + 5
    assert pair_tokens(tokenizer, long) > budget

    kept, report = within_budget(
        [short, long, hopeless],
        tokenizer,
        budget,
        ("chosen", "rejected"),
        "pairs",
        long_prompts="keep_last_turns",
        record_length=True,
    )
    assert len(kept) == 2 and kept[0]["prompt"] == short["prompt"]
    cut = kept[1]
    # The last exchange and the final question stay; three whole exchanges (6 messages) went.
    assert cut["prompt"] == long["prompt"][6:] and cut["prompt_turns_dropped"] == 6
    assert cut[LENGTH] == pair_tokens(tokenizer, cut) <= budget
    assert kept[0][LENGTH] == pair_tokens(tokenizer, short)
    assert report["pairs_prompt_truncated"] == 1 and report["pairs_prompt_messages_dropped"] == {"6": 1}
    assert report["pairs_over_max_length"] == 1

    kept, report = within_budget(
        [short, long, hopeless], tokenizer, budget, ("chosen", "rejected"), "pairs", long_prompts="drop"
    )
    assert [r["prompt"] for r in kept] == [short["prompt"]] and report["pairs_over_max_length"] == 2
    assert "pairs_prompt_truncated" not in report


def test_held_out_pairs_are_cut_like_training_pairs(tokenizer, tmp_path):
    rows = [long_pair(turns=3, last_question=f"Question number {i}?") for i in range(12)]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    budget = pair_tokens(tokenizer, long_pair(turns=1)) + 10
    cfg = load_config(PreferenceDataConfig, None, [f"train={data}", "test_fraction=0.4"])
    assert cfg.long_prompts == "keep_last_turns"  # the default: measured better (README "Speed")
    train, test = load_splits(cfg, fits=pair_budget(tokenizer, budget, cfg.long_prompts))
    assert train.rows and test.rows
    assert train.report["pairs_prompt_truncated"] == len(train.rows)
    assert test.report["test_pairs_prompt_truncated"] == len(test.rows)
    assert all(len(r["prompt"]) == 3 and r[LENGTH] <= budget for r in train.rows + test.rows)
    # The upstream-split check still sees the full held-out prompts.
    assert all(len(p) == 7 for p in test.prompts)

    cfg = load_config(PreferenceDataConfig, None, [f"train={data}", "test_fraction=0.4", "long_prompts=drop"])
    with pytest.raises(AlignError, match="longer than max_length"):
        load_splits(cfg, fits=pair_budget(tokenizer, budget, cfg.long_prompts))


def test_unknown_long_prompts_value_is_refused(tmp_path):
    with pytest.raises(AlignError, match="long_prompts"):
        load_config(PreferenceDataConfig, None, ["train=x.jsonl", "long_prompts=truncate"])
