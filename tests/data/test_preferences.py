"""Preference readers: every format, clear errors with file:line, nothing dropped silently."""

from __future__ import annotations

import gzip
import json

import pytest

from align.core.errors import AlignError
from align.data.preferences import (
    PreferenceDataConfig,
    load_preference_pairs,
    load_splits,
    parse_hh_dialogue,
    split_pairs,
)
from tests.conftest import write_jsonl


def convo(p, c, r):
    return {
        "prompt": [{"role": "user", "content": p}],
        "chosen": [{"role": "assistant", "content": c}],
        "rejected": [{"role": "assistant", "content": r}],
    }


def test_conversational_and_string_forms(tmp_path):
    f = write_jsonl(
        tmp_path / "p.jsonl", [convo("q", "good", "bad"), {"prompt": "q2", "chosen": "yes", "rejected": "no"}]
    )
    rows = load_preference_pairs(str(f)).rows
    assert rows[1]["prompt"] == [{"role": "user", "content": "q2"}]
    assert rows[1]["chosen"] == [{"role": "assistant", "content": "yes"}]
    assert len(rows) == 2


def test_hh_rlhf_dialogue_split_into_prompt_and_replies(tmp_path):
    rec = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help?\n\nAssistant: sure",
        "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help?\n\nAssistant: no",
    }
    f = tmp_path / "hh.jsonl.gz"
    with gzip.open(f, "wt") as out:
        out.write(json.dumps(rec) + "\n")
    (row,) = load_preference_pairs(str(f)).rows
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["chosen"] == [{"role": "assistant", "content": "sure"}]
    assert row["rejected"] == [{"role": "assistant", "content": "no"}]
    with pytest.raises(AlignError, match="no '\\\\n\\\\nHuman:' turn"):
        parse_hh_dialogue("just text", "f:1")


def test_oasst_tree_pairs_ranked_siblings_and_drops_synthetic(tmp_path):
    tree = {
        "message_tree_id": "t",
        "prompt": {
            "text": "Q",
            "role": "prompter",
            "replies": [
                {"text": "best", "role": "assistant", "rank": 0, "replies": []},
                {"text": "mid", "role": "assistant", "rank": 1, "replies": []},
                {"text": "worst", "role": "assistant", "rank": 2, "replies": []},
                {"text": "bot", "role": "assistant", "rank": 0, "synthetic": True, "replies": []},
            ],
        },
    }
    data = load_preference_pairs(str(write_jsonl(tmp_path / "o.jsonl", [tree])))
    pairs = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in data.rows}
    assert pairs == {("best", "mid"), ("best", "worst"), ("mid", "worst")}
    assert data.report["oasst_synthetic_dropped"] == 1


def test_pairwise_label_with_ties_and_custom_columns(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("question,a,b,pref\nq1,A1,B1,1\nq2,A2,B2,2\nq3,A3,B3,0\n")
    data = load_preference_pairs(
        str(f), "pairwise-label", {"prompt": "question", "response_a": "a", "response_b": "b", "label": "pref"}
    )
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in data.rows] == [("A1", "B1"), ("B2", "A2")]
    assert data.report["ties_or_no_majority"] == 1
    f.write_text("question,a,b,pref\nq1,A1,B1,maybe\n")
    with pytest.raises(AlignError, match=r"p.csv:2: label 'maybe'"):
        load_preference_pairs(
            str(f), "pairwise-label", {"prompt": "question", "response_a": "a", "response_b": "b", "label": "pref"}
        )


def test_malformed_json_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(convo("q", "a", "b")) + "\n{not json\n")
    with pytest.raises(AlignError, match=r"bad.jsonl:2: malformed JSON"):
        load_preference_pairs(str(f))


def test_missing_field_names_file_line_and_field(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [convo("q", "a", "b"), {"prompt": "q", "chosen": "a"}])
    with pytest.raises(AlignError, match=r"m.jsonl:2: missing field 'rejected'"):
        load_preference_pairs(str(f))


def test_empty_dataset_and_bad_roles(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(AlignError, match="empty"):
        load_preference_pairs(str(empty))
    bad = write_jsonl(
        tmp_path / "r.jsonl", [{"prompt": [{"role": "human", "content": "x"}], "chosen": "a", "rejected": "b"}]
    )
    with pytest.raises(AlignError, match=r"r.jsonl:1: prompt\[0\] has role 'human'"):
        load_preference_pairs(str(bad))


def test_identical_chosen_rejected_counted_and_left_out(tmp_path):
    f = write_jsonl(tmp_path / "i.jsonl", [convo("q", "same", "same"), convo("q2", "a", "b")])
    data = load_preference_pairs(str(f))
    assert len(data.rows) == 1 and data.report["identical_dropped"] == 1
    only = write_jsonl(tmp_path / "j.jsonl", [convo("q", "same", "same")])
    with pytest.raises(AlignError, match="1 identical dropped"):
        load_preference_pairs(str(only))


def test_parquet_and_datasets_directory(tmp_path):
    from datasets import Dataset

    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 3
    Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert len(load_preference_pairs(str(tmp_path / "p.parquet")).rows) == 3
    assert len(load_preference_pairs(str(tmp_path / "ds")).rows) == 3


def test_split_is_stable_disjoint_by_prompt_and_order_independent():
    rows = [convo(f"q{i % 50}", f"a{i}", f"b{i}") for i in range(400)]
    train, test = split_pairs(rows, 0.2, seed=0)
    train2, test2 = split_pairs(list(reversed(rows)), 0.2, seed=0)
    prompts = lambda rs: {r["prompt"][0]["content"] for r in rs}  # noqa: E731
    assert prompts(train).isdisjoint(prompts(test))
    assert prompts(test) == prompts(test2)
    assert 0.05 < len(test) / len(rows) < 0.4


def test_validation_split_comes_from_the_training_side_by_prompt(tmp_path):
    rows = [convo(f"q{i % 60}", f"a{i}", f"b{i}") for i in range(240)]
    f = write_jsonl(tmp_path / "v.jsonl", rows)
    train, test = load_splits(PreferenceDataConfig(train=str(f), test_fraction=0.2, validation_fraction=0.25))
    prompts = lambda rs: {r["prompt"][0]["content"] for r in rs}  # noqa: E731
    validation = train.validation.rows
    assert prompts(train.rows).isdisjoint(prompts(validation)) and prompts(test.rows).isdisjoint(prompts(validation))
    assert len(train.rows) + len(validation) + len(test.rows) == 240
    assert train.report["validation_pairs_set_aside"] == len(validation) and 0.1 < len(validation) / 240 < 0.35
    # The test split is the one without validation: turning validation on moves no prompt into or out of it.
    _, plain_test = load_splits(PreferenceDataConfig(train=str(f), test_fraction=0.2))
    assert prompts(plain_test.rows) == prompts(test.rows)
    capped, _ = load_splits(
        PreferenceDataConfig(train=str(f), test_fraction=0.2, validation_fraction=0.25, max_validation_pairs=5)
    )
    assert len(capped.validation.rows) == 5 and capped.validation.report["used"] == 5
    with pytest.raises(AlignError, match="validation_fraction"):
        PreferenceDataConfig(train=str(f), validation_fraction=1.0)
    with pytest.raises(AlignError, match="leaves 0 to validate on"):
        load_splits(
            PreferenceDataConfig(train=str(write_jsonl(tmp_path / "one.jsonl", rows[:1])), validation_fraction=0.01)
        )


def test_load_splits_with_separate_test_file_removes_overlap(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [convo(f"q{i}", "a", "b") for i in range(10)])
    test = write_jsonl(tmp_path / "e.jsonl", [convo("q1", "x", "y"), convo("q99", "x", "y")])
    tr, te = load_splits(PreferenceDataConfig(train=str(train), test=str(test)))
    assert len(tr.rows) == 9 and tr.report["train_prompts_in_test_dropped"] == 1 and len(te.rows) == 2


def test_min_agreement_filters_and_requires_the_field(tmp_path):
    rows = [dict(convo("q1", "a", "b"), agreement=1.0), dict(convo("q2", "a", "b"), agreement=0.5)]
    f = write_jsonl(tmp_path / "a.jsonl", rows)
    tr, _ = load_splits(PreferenceDataConfig(train=str(f), min_agreement=0.75))
    assert len(tr.rows) == 1 and tr.report["below_min_agreement"] == 1
    plain = write_jsonl(tmp_path / "p.jsonl", [convo("q", "a", "b")])
    with pytest.raises(AlignError, match="has no 'agreement' field"):
        load_splits(PreferenceDataConfig(train=str(plain), min_agreement=0.5))


def test_ties_from_pulled_annotations_are_counted(tmp_path):
    rows = [
        dict(convo("q1", "a", "b"), agreement=1.0),
        {"prompt": "q2", "chosen": None, "rejected": None, "agreement": 0.0},
    ]
    data = load_preference_pairs(str(write_jsonl(tmp_path / "pulled.jsonl", rows)))
    assert len(data.rows) == 1 and data.report["ties_or_no_majority"] == 1


# -- the real public sets in data/ (shipped copies) --------------------------------------------------


def test_reads_hh_rlhf_harmless(repo_data):
    data = load_preference_pairs(str(repo_data / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz"))
    assert data.report["records_read"] == 2312
    assert len(data.rows) + data.report["identical_dropped"] == 2312
    # A handful of the public records have a missing "\n\n" before "Human:", which leaves two
    # assistant turns in a row; they still parse into a prompt and single-reply chosen/rejected.
    assert sum(r["prompt"][-1]["role"] == "user" for r in data.rows) >= 0.99 * len(data.rows)
    assert all(len(r["chosen"]) == 1 and r["chosen"][0]["role"] == "assistant" for r in data.rows)


def test_reads_oasst_trees(repo_data):
    data = load_preference_pairs(str(repo_data / "preferences" / "oasst_en_100_tree.jsonl"))
    assert data.report["records_read"] == 100
    assert 300 < len(data.rows) < 2000
    assert all(r["chosen"] != r["rejected"] for r in data.rows)


def pulled(prompt, a, b, tie=0):
    """A row as `align annotate pull` writes it: counts per choice, n_votes, agreement rounded to 4 places."""
    n = a + b + tie
    return dict(
        convo(prompt, "good", "bad"),
        counts={"a": a, "b": b, "tie": tie},
        n_votes=n,
        agreement=round(max(a, b, tie) / n, 4),
    )


@pytest.mark.parametrize(
    "threshold, kept",
    [
        (0.67, {"2of3", "3of4", "3of3"}),  # the README's "two of three annotators"
        ("2/3", {"2of3", "3of4", "3of3"}),
        (0.75, {"3of4", "3of3"}),
        ("3/4", {"3of4", "3of3"}),
        (0.5, {"1of2", "2of3", "3of4", "3of3"}),
        (1.0, {"3of3"}),
    ],
)
def test_min_agreement_compares_vote_fractions(tmp_path, threshold, kept):
    rows = [pulled("1of2", 1, 1), pulled("2of3", 2, 1), pulled("3of4", 3, 1), pulled("3of3", 3, 0)]
    f = write_jsonl(tmp_path / "pulled.jsonl", rows)
    tr, _ = load_splits(PreferenceDataConfig(train=str(f), min_agreement=threshold))
    assert {r["prompt"][0]["content"] for r in tr.rows} == kept
    assert tr.report["below_min_agreement"] == 4 - len(kept)


def test_min_agreement_decimal_is_not_looser_than_two_places(tmp_path):
    # 5 of 8 = 0.625 is below 0.67 even with the two-place reading.
    f = write_jsonl(tmp_path / "pulled.jsonl", [pulled("5of8", 5, 3), pulled("2of3", 2, 1)])
    tr, _ = load_splits(PreferenceDataConfig(train=str(f), min_agreement=0.67))
    assert [r["prompt"][0]["content"] for r in tr.rows] == ["2of3"]


@pytest.mark.parametrize("bad", ["3/2", "2/0", "two thirds", 1.5, -0.1])
def test_min_agreement_bad_values(bad):
    with pytest.raises(AlignError, match="min_agreement"):
        PreferenceDataConfig(train="x", min_agreement=bad)


def test_min_votes_keeps_pairs_with_enough_votes(tmp_path):
    # One vote is agreement 1.0: min_agreement=1.0 alone keeps it; min_votes=2 does not.
    rows = [pulled("1of1", 1, 0), pulled("2of2", 2, 0), pulled("2of3", 2, 1)]
    f = write_jsonl(tmp_path / "pulled.jsonl", rows)
    tr, _ = load_splits(PreferenceDataConfig(train=str(f), min_agreement=1.0))
    assert {r["prompt"][0]["content"] for r in tr.rows} == {"1of1", "2of2"}
    tr, _ = load_splits(PreferenceDataConfig(train=str(f), min_agreement=1.0, min_votes=2))
    assert [r["prompt"][0]["content"] for r in tr.rows] == ["2of2"]
    assert tr.report["below_min_votes"] == 1 and tr.report["below_min_agreement"] == 1
    tr, _ = load_splits(PreferenceDataConfig(train=str(f), min_votes=3))
    assert [r["prompt"][0]["content"] for r in tr.rows] == ["2of3"]
    plain = write_jsonl(tmp_path / "p.jsonl", [convo("q", "a", "b")])
    with pytest.raises(AlignError, match="has no 'n_votes'"):
        load_splits(PreferenceDataConfig(train=str(plain), min_votes=2))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(AlignError, match="min_votes"):
            PreferenceDataConfig(train="x", min_votes=bad)
