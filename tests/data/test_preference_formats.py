"""Every preference format TRL documents reads unchanged, into hand-checked canonical rows.

TRL's dataset-formats guide: standard and conversational, explicit and implicit prompt, and unpaired
preference. Implicit prompts are checked against TRL's own `extract_prompt` where align matches it,
and where it departs (strings cut at a word boundary) the departure is pinned.
"""

from __future__ import annotations

import pytest
from trl.data_utils import extract_prompt, unpair_preference_dataset

from align.core.errors import AlignError
from align.data.preference_formats import detect_format, split_shared_text
from align.data.preferences import PreferenceDataConfig, load_preference_pairs, load_splits
from tests.conftest import write_jsonl


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def read(tmp_path, rows, name="p.jsonl", **kwargs):
    return load_preference_pairs(str(write_jsonl(tmp_path / name, rows)), **kwargs)


def canonical(rows):
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]


# -- explicit prompt ------------------------------------------------------------------------------


def test_standard_explicit_prompt(tmp_path):
    data = read(tmp_path, [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}])
    assert canonical(data.rows) == [
        {"prompt": [user("The sky is")], "chosen": [bot(" blue.")], "rejected": [bot(" green.")]}
    ]


def test_conversational_explicit_prompt(tmp_path):
    rec = {
        "prompt": [user("What color is the sky?")],
        "chosen": [bot("It is blue.")],
        "rejected": [bot("It is green.")],
    }
    assert canonical(read(tmp_path, [rec]).rows) == [rec]


# -- implicit prompt ------------------------------------------------------------------------------


def test_standard_implicit_prompt_matches_trl_where_trl_cuts_at_a_space(tmp_path):
    rec = {"chosen": "The sky is blue.", "rejected": "The sky is green."}
    data = read(tmp_path, [rec])
    assert detect_format(rec, "f:1") == "implicit"
    assert canonical(data.rows) == [
        {"prompt": [user("The sky is")], "chosen": [bot("blue.")], "rejected": [bot("green.")]}
    ]
    trl = extract_prompt(rec)  # {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}
    assert (trl["prompt"], trl["chosen"].strip(), trl["rejected"].strip()) == ("The sky is", "blue.", "green.")


def test_standard_implicit_prompt_departs_from_trl_inside_a_word(tmp_path):
    rec = {"chosen": "The sky is blue.", "rejected": "The sky is black."}
    assert extract_prompt(rec)["prompt"] == "The sky is bl"  # TRL: the user would say "The sky is bl"
    assert split_shared_text(rec["chosen"], rec["rejected"], "f:1") == ("The sky is", "blue.", "black.")
    # One text the start of the other: TRL cuts one character short; align cuts before the shared last word.
    assert split_shared_text("Say hi", "Say hi there", "f:1") == ("Say", "hi", "hi there")
    assert split_shared_text("Q: 2+2?\nA: 4", "Q: 2+2?\nA: 5", "f:1") == ("Q: 2+2?\nA:", "4", "5")


def test_conversational_implicit_prompt_multi_turn_checked_by_hand(tmp_path):
    head = [{"role": "system", "content": "Be brief."}, user("Hi"), bot("Hello!"), user("Capital of France?")]
    rec = {"chosen": head + [bot("Paris.")], "rejected": head + [bot("Lyon.")], "source": "hand"}
    (row,) = read(tmp_path, [rec]).rows
    # Prompt: the four shared messages; each reply: the one last assistant message.
    assert row["prompt"] == head and row["chosen"] == [bot("Paris.")] and row["rejected"] == [bot("Lyon.")]
    assert row["source"] == "hand"  # extra fields are kept
    trl = extract_prompt({"chosen": rec["chosen"], "rejected": rec["rejected"]})
    assert (trl["prompt"], trl["chosen"], trl["rejected"]) == (row["prompt"], row["chosen"], row["rejected"])


def test_conversations_that_differ_at_an_earlier_assistant_turn(tmp_path):
    rec = {
        "chosen": [user("a"), bot("b1"), user("c"), bot("d1")],
        "rejected": [user("a"), bot("b2"), user("c2"), bot("d2")],
    }
    (row,) = read(tmp_path, [rec]).rows
    assert row["prompt"] == [user("a")]
    assert row["chosen"] == [bot("b1"), user("c"), bot("d1")] and row["rejected"] == [bot("b2"), user("c2"), bot("d2")]
    assert canonical([row]) == [extract_prompt(rec)]


def trl_hh_rlhf_rows():
    """As TRL's trl-lib/hh-rlhf-helpful-base stores them: whole conversations, content before role."""

    def turn(role, text):
        return {"content": text, "role": role}

    return [
        {
            "chosen": [
                turn("user", "What are some cuss words in english?"),
                turn("assistant", "I'd rather not list them."),
            ],
            "rejected": [turn("user", "What are some cuss words in english?"), turn("assistant", "Here's a list: ...")],
        },
        {
            "chosen": [
                turn("user", "Can you help me bake bread?"),
                turn("assistant", "Sure. Do you have yeast?"),
                turn("user", "Yes."),
                turn("assistant", "Great, start by proofing it in warm water."),
            ],
            "rejected": [
                turn("user", "Can you help me bake bread?"),
                turn("assistant", "Sure. Do you have yeast?"),
                turn("user", "Yes."),
                turn("assistant", "Bread is easy."),
            ],
        },
    ]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_trl_hh_rlhf_style_conversational_implicit_file(tmp_path, kind):
    rows = trl_hh_rlhf_rows()
    if kind == "parquet":
        from datasets import Dataset

        path = tmp_path / "train.parquet"
        Dataset.from_list(rows).to_parquet(str(path))
    else:
        path = write_jsonl(tmp_path / "train.jsonl", rows)
    data = load_preference_pairs(str(path))  # before: "missing field 'prompt'"
    assert [r["prompt"] for r in data.rows] == [
        [user("What are some cuss words in english?")],
        [user("Can you help me bake bread?"), bot("Sure. Do you have yeast?"), user("Yes.")],
    ]
    assert [r["chosen"] for r in data.rows] == [
        [bot("I'd rather not list them.")],
        [bot("Great, start by proofing it in warm water.")],
    ]
    assert [r["rejected"] for r in data.rows] == [[bot("Here's a list: ...")], [bot("Bread is easy.")]]


def test_string_prompt_beside_whole_conversations_is_read_as_implicit_like_trl(tmp_path):
    # TRL's maybe_extract_prompt: the conversational chosen/rejected carry the prompt; the string one is unused.
    rec = {
        "prompt": "What color is the sky?",
        "chosen": [user("What color is the sky?"), bot("Blue.")],
        "rejected": [user("What color is the sky?"), bot("Green.")],
    }
    data = read(tmp_path, [rec])
    assert canonical(data.rows) == [
        {"prompt": [user("What color is the sky?")], "chosen": [bot("Blue.")], "rejected": [bot("Green.")]}
    ]
    assert data.report["implicit_prompt_field_unused"] == 1
    # align's own mixed explicit form stays explicit: message prompt, string replies.
    mixed = read(tmp_path, [{"prompt": [user("q")], "chosen": "a", "rejected": "b"}], name="m.jsonl")
    assert canonical(mixed.rows) == [{"prompt": [user("q")], "chosen": [bot("a")], "rejected": [bot("b")]}]


@pytest.mark.parametrize(
    "rec, message",
    [
        (
            {"chosen": [user("a"), bot("x")], "rejected": [user("b"), bot("y")]},
            r"p.jsonl:2: 'chosen' and 'rejected' share no opening message",
        ),
        ({"chosen": "Yes.", "rejected": "No."}, r"p.jsonl:2: 'chosen' and 'rejected' share no opening words"),
        (
            {"chosen": [user("a"), bot("x"), user("more")], "rejected": [user("a"), bot("y")]},
            r"p.jsonl:2: 'chosen' ends with user message",
        ),
        (
            {"chosen": [user("a"), user("b"), bot("x")], "rejected": [user("a"), user("c"), bot("x")]},
            r"p.jsonl:2: .* first differ at message 2, which is not an assistant turn",
        ),
        (
            {"chosen": [user("a"), bot("x")], "rejected": [user("a"), bot("x"), user("b"), bot("y")]},
            r"p.jsonl:2: 'chosen' is the start of the other",
        ),
        (
            {"chosen": "The sky is ", "rejected": "The sky is blue"},
            r"p.jsonl:2: 'chosen' is the start of the other text",
        ),
        (
            {"chosen": "The sky is blue", "rejected": [user("x"), bot("y")]},
            r"p.jsonl:2: .* both be strings or both message lists",
        ),
    ],
)
def test_implicit_pairs_that_are_not_pairs_fail_with_file_and_line(tmp_path, rec, message):
    good = {"chosen": [user("q"), bot("a")], "rejected": [user("q"), bot("b")]}
    with pytest.raises(AlignError, match=message):
        read(tmp_path, [good, rec])


def test_identical_implicit_conversations_are_counted_like_identical_pairs(tmp_path):
    same = [user("q"), bot("a")]
    data = read(
        tmp_path,
        [
            {"chosen": same, "rejected": same},
            {"chosen": "Tell me: yes", "rejected": "Tell me: yes"},
            {"chosen": [user("q"), bot("a")], "rejected": [user("q"), bot("b")]},
        ],
    )
    assert len(data.rows) == 1 and data.report["identical_dropped"] == 2


def test_implicit_format_can_be_named(tmp_path):
    data = read(tmp_path, [{"chosen": "Q: hi A: hello", "rejected": "Q: hi A: go away"}], format="implicit")
    assert canonical(data.rows) == [
        {"prompt": [user("Q: hi A:")], "chosen": [bot("hello")], "rejected": [bot("go away")]}
    ]


# -- unpaired -------------------------------------------------------------------------------------


def test_unpaired_standard_and_conversational(tmp_path):
    rows = [
        {"prompt": "The sky is", "completion": " blue.", "label": True},
        {"prompt": [user("What color is the sky?")], "completion": [bot("It is green.")], "label": False, "id": 7},
    ]
    data = read(tmp_path, rows, unpaired=True)
    assert detect_format(rows[0], "f:1") == "unpaired"
    assert data.rows == [
        {"prompt": [user("The sky is")], "completion": [bot(" blue.")], "label": True},
        {"prompt": [user("What color is the sky?")], "completion": [bot("It is green.")], "label": False, "id": 7},
    ]
    assert data.report == {"records_read": 2, "examples": 2, "desirable": 1, "undesirable": 1}


def test_unpaired_labels_from_a_csv_and_bad_labels(tmp_path):
    f = tmp_path / "u.csv"
    f.write_text("prompt,completion,label\nq1,good,True\nq2,bad,false\nq3,ok,1\n")
    assert [r["label"] for r in load_preference_pairs(str(f), unpaired=True).rows] == [True, False, True]
    f.write_text("prompt,completion,label\nq1,good,True\nq2,bad,meh\n")
    with pytest.raises(AlignError, match=r"u.csv:3: label 'meh' is not true"):
        load_preference_pairs(str(f), unpaired=True)
    g = write_jsonl(
        tmp_path / "u.jsonl", [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": "a"}]
    )
    with pytest.raises(AlignError, match=r"u.jsonl:2: missing field 'label'"):
        load_preference_pairs(str(g), format="unpaired", unpaired=True)


def test_pair_readers_refuse_unpaired_data_in_one_line(tmp_path):
    f = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "q", "completion": "a", "label": True}])
    with pytest.raises(AlignError) as err:
        load_preference_pairs(str(f))
    assert "unpaired preference data" in str(err.value) and "`align kto`" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(AlignError, match="unpaired"):
        load_splits(PreferenceDataConfig(train=str(f)))


def test_prompt_completion_without_label_is_named_as_sft_data(tmp_path):
    with pytest.raises(AlignError, match=r"p.jsonl:1: prompt/completion rows without a 'label' are supervised data"):
        read(tmp_path, [{"prompt": "q", "completion": "a"}])


def test_pairs_unpair_as_trl_does(tmp_path):
    rows = [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "w": 1},
        {"prompt": "The sun is", "chosen": " hot.", "rejected": " cold.", "w": 2},
    ]
    data = read(tmp_path, rows, unpaired=True)
    assert data.report["pairs"] == 2 and data.report["examples"] == 4
    assert data.rows[:2] == [
        {"prompt": [user("The sky is")], "completion": [bot(" blue.")], "label": True, "w": 1},
        {"prompt": [user("The sky is")], "completion": [bot(" green.")], "label": False, "w": 1},
    ]
    from datasets import Dataset

    trl = unpair_preference_dataset(Dataset.from_list(rows)).to_list()
    as_trl = sorted((r["prompt"][0]["content"], r["completion"][0]["content"], r["label"], r["w"]) for r in data.rows)
    assert as_trl == sorted((r["prompt"], r["completion"], r["label"], r["w"]) for r in trl)


def test_unpaired_split_keeps_a_pairs_two_examples_on_one_side(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(60)]
    f = write_jsonl(tmp_path / "p.jsonl", rows)
    train, test = load_splits(PreferenceDataConfig(train=str(f), test_fraction=0.3), unpaired=True)
    side = lambda rs: {r["prompt"][0]["content"] for r in rs}  # noqa: E731
    assert side(train.rows).isdisjoint(side(test.rows))
    assert len(train.rows) + len(test.rows) == 120 and len(train.rows) % 2 == 0
    assert train.report["train_examples_used"] == len(train.rows) and test.report["examples"] == len(test.rows)
