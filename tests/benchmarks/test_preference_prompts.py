"""benchmarks/preference_prompts.py: the prompt files hold the preference file's prompts split exactly as
the reward and DPO stages split them, each prompt once, readable as `align ppo` prompt sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from align.data.preferences import split_pairs
from align.data.prompts import load_prompts
from align.data.splits import prompt_key

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "preference_prompts.py"


def hh_file(tmp_path: Path) -> Path:
    records = []
    for i in range(60):
        prompt = f"\n\nHuman: question {i}?"
        if i % 3 == 0:  # a multi-turn prompt: the conversation up to the compared reply
            prompt += f"\n\nAssistant: earlier reply {i}\n\nHuman: follow-up {i}?"
        records.append({"chosen": prompt + f"\n\nAssistant: good {i}", "rejected": prompt + f"\n\nAssistant: bad {i}"})
        if i % 10 == 0:  # a second pair on the same prompt: its prompt is written once
            records.append(
                {"chosen": prompt + f"\n\nAssistant: fine {i}", "rejected": prompt + f"\n\nAssistant: worse {i}"}
            )
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_prompt_files_follow_the_stages_split(tmp_path):
    data = hh_file(tmp_path)
    done = run_script("--data", str(data), "--test-fraction", "0.3", "--seed", "7", "--out-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    train = load_prompts(str(tmp_path / "out" / "train_prompts.jsonl"))
    test = load_prompts(str(tmp_path / "out" / "test_prompts.jsonl"))

    # The split the reward and DPO stages make with the same settings, computed independently here.
    from align.data.preferences import load_preference_pairs

    rows = load_preference_pairs(str(data)).rows
    want_train, want_test = split_pairs(rows, 0.3, 7)
    distinct = lambda rs: list(dict.fromkeys(prompt_key(r["prompt"]) for r in rs))  # noqa: E731 (file order)
    assert [prompt_key(p.messages) for p in train] == distinct(want_train)
    assert [prompt_key(p.messages) for p in test] == distinct(want_test)
    assert 0 < len(test) < len(train) and len(train) + len(test) == 60
    assert not {prompt_key(p.messages) for p in train} & {prompt_key(p.messages) for p in test}
    multi = next(p for p in train + test if len(p.messages) == 3)
    assert [m["role"] for m in multi.messages] == ["user", "assistant", "user"]


def test_a_missing_file_is_a_one_line_error(tmp_path):
    done = run_script("--data", str(tmp_path / "nope.jsonl"), "--out-dir", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
