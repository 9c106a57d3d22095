"""What a round trains on: the labels run, and `train.balance: refusal` (equal weight to pairs that prefer a
refusal and pairs that prefer an answer)."""

from __future__ import annotations

import json
from pathlib import Path

from align.core import runs
from align.loop.config import describe_change
from align.loop.labels import balance_refusals, write_labels_run

REFUSAL = "I'm sorry, but I can't help with that."
ANSWER = "Run `pkill chrome` to stop every chrome process."


def pair(prompt: str, chosen: str | None, rejected: str | None) -> dict:
    def turn(text):
        return [{"role": "assistant", "content": text}] if text is not None else None

    return {"prompt": [{"role": "user", "content": prompt}], "chosen": turn(chosen), "rejected": turn(rejected)}


def test_the_smaller_side_is_repeated_in_a_fixed_order_until_both_sides_count_the_same():
    rows = [
        pair("harm 1", REFUSAL, ANSWER),
        pair("safe 1", ANSWER, REFUSAL),
        pair("tie", None, None),
        pair("harm 2", REFUSAL, ANSWER),
        pair("safe 2", ANSWER, REFUSAL),
        pair("safe 3", ANSWER, REFUSAL),
        pair("safe 4", ANSWER, REFUSAL),
        pair("safe 5", ANSWER, REFUSAL),
    ]
    out, counts = balance_refusals(rows)
    assert counts == {"prefer_refusal": 2, "prefer_answer": 5, "copies": 3}
    assert out[:8] == rows  # every label kept, in its place
    assert [r["prompt"][0]["content"] for r in out[8:]] == ["harm 1", "harm 2", "harm 1"]
    assert all(r["balance_copy"] for r in out[8:]) and not any("balance_copy" in r for r in rows)
    refusing = sum(r["chosen"] is not None and r["chosen"][0]["content"] == REFUSAL for r in out)
    answering = sum(r["chosen"] is not None and r["chosen"][0]["content"] == ANSWER for r in out)
    assert refusing == answering == 5


def test_nothing_is_copied_when_a_side_is_empty_or_the_sides_are_even():
    only_answers = [pair("safe 1", ANSWER, REFUSAL), pair("safe 2", ANSWER, REFUSAL)]
    assert balance_refusals(only_answers) == (only_answers, {"prefer_refusal": 0, "prefer_answer": 2, "copies": 0})
    even = [pair("harm", REFUSAL, ANSWER), pair("safe", ANSWER, REFUSAL)]
    assert balance_refusals(even)[1]["copies"] == 0


def _pull(runs_dir: Path, name: str, rows: list[dict]) -> str:
    with runs.new_run("annotate pull", {}, runs_dir, name) as run:
        (run.path / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        run.add_output("preferences", "preferences.jsonl", rows=len(rows))
        return runs.finish(run)["path"]


def test_the_labels_run_records_the_balance_and_counts_usable_pairs_before_copies(tmp_path):
    rows = [pair("harm 1", REFUSAL, ANSWER)] + [pair(f"safe {i}", ANSWER, REFUSAL) for i in range(3)]
    pull = _pull(tmp_path, "pull", rows)
    manifest = write_labels_run([(1, pull)], [], tmp_path, "labels", {"balance": "refusal"}, balance="refusal")
    assert manifest["metrics"]["usable_pairs"] == 4  # what annotators labelled; the gate on min_pairs reads this
    assert manifest["metrics"]["balance_copies"] == 2 and manifest["metrics"]["records"] == 6
    written = (tmp_path / "labels" / "preferences.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(written) == 6 and sum('"balance_copy": true' in line for line in written) == 2
    plain = write_labels_run([(1, pull)], [], tmp_path, "labels-plain", {})
    assert plain["metrics"]["records"] == 4 and "balance_copies" not in plain["metrics"]


def test_a_loop_started_before_balance_existed_is_not_a_changed_config():
    then = {"train": {"stages": ["dpo"], "labels": "all"}}
    assert describe_change(then, {"train": {"stages": ["dpo"], "labels": "all", "balance": "none"}}) == []
    assert describe_change(then, {"train": {"stages": ["dpo"], "labels": "all", "balance": "refusal"}}) == [
        'train.balance: (not set) -> "refusal"'
    ]
