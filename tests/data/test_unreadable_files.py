"""Damaged or mis-encoded data files: one AlignError line naming the file (and line where known),
through every reader (preference pairs, SFT conversations, prompts) and on the command line."""

from __future__ import annotations

import gzip
import json

import pytest

from align.cli import main
from align.core.errors import AlignError
from align.data.conversations import SFTDataConfig, load_sft_examples
from align.data.preferences import load_preference_pairs
from align.data.prompts import load_prompts

GOOD = {"prompt": "q", "chosen": "good", "rejected": "bad"}
LINE = json.dumps(GOOD) + "\n"


def not_gzip(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_text(LINE * 3)
    return path, None


def truncated_gzip(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    whole = gzip.compress((LINE * 500).encode())
    path.write_bytes(whole[: len(whole) // 2])
    return path, None


def latin1_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(
        LINE.encode() + json.dumps({**GOOD, "chosen": "café"}, ensure_ascii=False).encode("latin-1") + b"\n"
    )
    return path, 2


def nul_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"prompt,chosen,rejected\nq,good,bad\nq,go\x00od,bad\n")
    return path, 3


def utf16_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes("prompt,chosen,rejected\nq,good,bad\n".encode("utf-16"))
    return path, 1


def truncated_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD] * 50), path)
    path.write_bytes(path.read_bytes()[:-40])
    return path, None


def latin1_json_array(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_bytes(json.dumps([{**GOOD, "chosen": "café"}], ensure_ascii=False).encode("latin-1"))
    return path, None


def not_gzip_csv(tmp_path):
    path = tmp_path / "pairs.csv.gz"
    path.write_text("prompt,chosen,rejected\nq,good,bad\n")
    return path, None


DAMAGED = [
    not_gzip,
    truncated_gzip,
    latin1_jsonl,
    nul_csv,
    utf16_csv,
    truncated_parquet,
    latin1_json_array,
    not_gzip_csv,
]


def check(exc_info, path, line):
    message = str(exc_info.value)
    assert "\n" not in message
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message


@pytest.mark.parametrize("make", DAMAGED, ids=lambda f: f.__name__)
def test_preference_reader(tmp_path, make):
    path, line = make(tmp_path)
    with pytest.raises(AlignError) as exc_info:
        load_preference_pairs(str(path))
    check(exc_info, path, line)


@pytest.mark.parametrize("make", DAMAGED, ids=lambda f: f.__name__)
def test_sft_reader(tmp_path, make):
    path, line = make(tmp_path)
    with pytest.raises(AlignError) as exc_info:
        load_sft_examples(SFTDataConfig(train=str(path)))
    check(exc_info, path, line)


@pytest.mark.parametrize("make", DAMAGED, ids=lambda f: f.__name__)
def test_prompt_reader(tmp_path, make):
    path, line = make(tmp_path)
    with pytest.raises(AlignError) as exc_info:
        load_prompts(str(path), field="prompt")
    check(exc_info, path, line)


def test_damaged_text_file_of_prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"hello\n\xff\xfebroken\n")
    with pytest.raises(AlignError, match=r"prompts.txt:2: not UTF-8"):
        load_prompts(str(path))


def test_cli_exit_2_one_line(tmp_path, capsys):
    path, _ = not_gzip(tmp_path)
    code = main(["reward", f"data.train={path}", f"runs_dir={tmp_path / 'runs'}", "model=embedded"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "not a gzip file" in err and str(path) in err
    assert not (tmp_path / "runs").exists()
