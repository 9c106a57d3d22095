"""Prompt sets: every container and record shape, and the errors a user can fix (exit 2)."""

from __future__ import annotations

import json

import pytest

from align.cli import main
from align.core.errors import AlignError
from align.data.prompts import load_prompts
from tests.conftest import write_jsonl


def user(text):
    return [{"role": "user", "content": text}]


def test_jsonl_shapes(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps("a plain string"),
                json.dumps({"prompt": "a prompt field", "id": 7}),
                json.dumps({"turns": ["first turn", "second turn"], "question_id": 81}),
                json.dumps(
                    {
                        "messages": [
                            {"role": "system", "content": "be brief"},
                            {"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "a reply that is not part of the prompt"},
                        ]
                    }
                ),
                json.dumps({"prompt": [{"role": "user", "content": "already messages"}]}),
            ]
        )
        + "\n"
    )
    prompts = load_prompts(str(path))
    assert [p.messages for p in prompts] == [
        user("a plain string"),
        user("a prompt field"),
        user("first turn"),
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        user("already messages"),
    ]
    assert prompts[1].prompt_id == "7" and prompts[2].prompt_id == "81"
    assert prompts[0].source == f"{path}:1" and prompts[4].source == f"{path}:5"
    # Without an id field the id is a content hash: stable across files and runs.
    assert prompts[0].prompt_id == load_prompts(str(path), limit=1)[0].prompt_id
    assert len(load_prompts(str(path), limit=2)) == 2


def test_csv_txt_parquet_and_configured_column(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("goal,target\nfirst goal,x\nsecond goal,y\n")
    assert [p.messages for p in load_prompts(str(csv))] == [user("first goal"), user("second goal")]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("question\tcategory\nwhat is 2+2?\tmath\n")
    assert load_prompts(str(tsv), field="question")[0].messages == user("what is 2+2?")
    txt = tmp_path / "p.txt"
    txt.write_text("line one\n\nline two\n")
    prompts = load_prompts(str(txt))
    assert [p.source for p in prompts] == [f"{txt}:1", f"{txt}:3"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["from parquet"]}), tmp_path / "p.parquet")
    assert load_prompts(str(tmp_path / "p.parquet"))[0].messages == user("from parquet")


def test_shipped_prompt_files(repo_data):
    """The prompt files in data/ read with no per-file code (OASST, MT-bench, XSTest; Apache-2.0/CC-BY-4.0)."""
    assert len(load_prompts(str(repo_data / "instructions/oasst_prompts_en_250.jsonl"))) == 250
    mt = load_prompts(str(repo_data / "instructions/mtbench_questions.jsonl"))
    assert len(mt) == 80 and mt[0].prompt_id == "81"
    assert len(load_prompts(str(repo_data / "safety/xstest_prompts.csv"))) == 450


def test_unknown_shape_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"text_of_it": "?"}])
    with pytest.raises(AlignError, match=r"p\.jsonl:2: cannot find the prompt"):
        load_prompts(str(path))
    with pytest.raises(AlignError, match="no field 'question'"):
        load_prompts(str(path), field="question")


def test_empty_prompt_file_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code = main(["generate", f"prompts={empty}", "engine=hf", f"runs_dir={tmp_path / 'runs'}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.jsonl: no prompts" in err[0]
    assert not (tmp_path / "runs").exists()


def test_prompt_longer_than_context_exits_2(tmp_path, tiny_model, capsys):
    # The tiny model's context is 1024 tokens; line 2 alone is well past it.
    path = write_jsonl(tmp_path / "long.jsonl", ["short", "word " * 1200])
    code = main(
        [
            "generate",
            f"prompts={path}",
            f"policy={tiny_model}",
            "engine=hf",
            "sampling.max_tokens=8",
            f"runs_dir={tmp_path / 'runs'}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{path}:2: prompt is" in err and "context of 1024" in err
    # A prompt that fits alone but not with max_tokens is refused too, naming max_tokens.
    path = write_jsonl(tmp_path / "edge.jsonl", ["word " * 950])
    assert (
        main(
            [
                "generate",
                f"prompts={path}",
                f"policy={tiny_model}",
                "engine=hf",
                "sampling.max_tokens=100",
                f"runs_dir={tmp_path / 'runs'}",
            ]
        )
        == 2
    )
    assert "sampling.max_tokens=100" in capsys.readouterr().err


def test_greedy_with_several_samples_exits_2(tmp_path, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", ["hi"])
    assert main(["generate", f"prompts={path}", "engine=hf", "sampling.temperature=0", "sampling.n=2"]) == 2
    assert "greedy decoding" in capsys.readouterr().err
