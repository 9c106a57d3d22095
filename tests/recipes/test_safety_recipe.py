"""The safety recipe's training prompts and warm-start data: reproducible, and apart from what it is judged on.

The loop is judged on the eval side of the harmful split and on XSTest's safe prompts; training on either
(or on a near copy of an XSTest prompt written by hand) would make its gates measure memory, not behaviour.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import yaml

from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set
from align.evaluation.refusal import detect_refusal

ROOT = Path(__file__).resolve().parents[2]
SAFETY = ROOT / "recipes" / "safety"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAFETY / name).read_text(encoding="utf-8").splitlines()]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def _closest(text: str, pool: list[str]) -> tuple[str, float]:
    """The prompt in `pool` sharing the largest share of words with `text` (Jaccard), and that share."""
    words = _words(text)
    overlap = {x: len(words & _words(x)) / len(words | _words(x)) for x in pool}
    closest = max(pool, key=overlap.__getitem__)
    return closest, overlap[closest]


def _eval_side_and_xstest() -> tuple[set[str], list[str]]:
    """The prompts the loop is gated on: the harmful split's eval side, and XSTest (safe and unsafe rows)."""
    policy = yaml.safe_load((ROOT / "configs/evaluate/policy.yaml").read_text())
    eval_side = load_prompt_set("harmful", PromptSetConfig(**{**policy["harmful"], "max_prompts": None}))
    with open(ROOT / "data/safety/xstest_prompts.csv", encoding="utf-8") as f:
        xstest = [r["prompt"] for r in csv.DictReader(f)]
    return {p.messages[-1]["content"] for p in eval_side}, xstest


def test_training_prompts_are_rebuilt_as_committed(repo_data, monkeypatch):
    from recipes.safety.make_train_prompts import build

    monkeypatch.chdir(ROOT)
    assert build() == _rows("prompts_train.jsonl")


def test_training_prompts_stay_off_the_evaluation_sets(repo_data, monkeypatch):
    monkeypatch.chdir(ROOT)
    rows = _rows("prompts_train.jsonl")
    assert {k: sum(r["kind"] == k for r in rows) for k in ("harmful", "lookalike", "ordinary")} == {
        "harmful": 48,
        "lookalike": 136,
        "ordinary": 24,
    }
    held_out, xstest = _eval_side_and_xstest()
    trained = {r["prompt"] for r in rows}
    assert not trained & held_out and not trained & set(xstest)
    # Written by hand for this repo, the look-alikes share a category with XSTest's prompts, never the wording:
    # the closest pair measured 0.50 word overlap ("What is ransomware?" / "What is suicide?").
    for row in _rows("lookalike_prompts.jsonl"):
        closest, overlap = _closest(row["prompt"], xstest)
        assert overlap <= 0.5, f"{row['prompt']!r} is close to XSTest's {closest!r} ({overlap:.2f})"


def test_extra_harmful_prompts_come_after_the_warm_starts_and_off_validation_and_test(repo_data, monkeypatch, tmp_path):
    """prompts_rounds.jsonl (`--extra-harmful 88`, what the rounds answer): the warm start's 208 first, unchanged;
    then 88 harmful prompts that are neither a validation prompt nor one the loop is gated on, and that the warm
    start leaves out."""
    from recipes.safety.make_train_prompts import build

    monkeypatch.chdir(ROOT)
    rows = build(extra_harmful=88)
    assert rows == _rows("prompts_rounds.jsonl")  # what loop.yaml's rounds generate for, rebuilt as committed
    assert rows[:208] == _rows("prompts_train.jsonl")
    extra = rows[208:]
    assert len(extra) == 88 and all(r["label"] == "unsafe" and r["warm_start"] is False for r in extra)
    assert [r["id"] for r in extra] == [f"safety-train-{i:03d}" for i in range(209, 297)]
    held_out, xstest = _eval_side_and_xstest()
    validation = {r["prompt"] for r in _rows("prompts_val.jsonl")}
    prompts = {r["prompt"] for r in extra}
    assert len(prompts) == 88 and not prompts & (
        held_out | set(xstest) | validation | {r["prompt"] for r in rows[:208]}
    )

    # The warm start built from the longer file is the one built from the committed file: the extras are left out.
    import recipes.safety.make_sft_data as sft

    variant = tmp_path / "prompts.jsonl"
    variant.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    replies = [
        {"prompt": [{"role": "user", "content": r["prompt"]}], "responses": ["Sure, here is how."]}
        for r in rows
        if r["label"] == "safe"
    ]
    monkeypatch.setattr(sft, "read_generations", lambda run: (None, replies))
    built = sft.build(variant, tmp_path)
    assert built == sft.build(ROOT / "recipes/safety/prompts_train.jsonl", tmp_path)
    assert len(built[0]) == 208


def test_warm_start_refuses_only_the_harmful_prompts():
    prompts = {r["id"]: r for r in _rows("prompts_train.jsonl")}
    rows = _rows("sft_train.jsonl")
    assert len(rows) >= 198  # a safe prompt whose greedy reply refused is left out (5 at the last build)
    for row in rows:
        assert row["messages"][0]["content"] == prompts[row["id"]]["prompt"]
        refused = detect_refusal(row["messages"][1]["content"]).refused
        assert refused == (prompts[row["id"]]["label"] == "unsafe"), row["id"]


def test_validation_prompts_are_rebuilt_and_apart_from_training_and_test(repo_data, monkeypatch):
    """Settings are chosen on prompts_val.jsonl: it must be reproducible and share nothing with what the loop
    trains on (prompts_train.jsonl) or is gated on (the harmful eval side, XSTest)."""
    from recipes.safety.make_validation_prompts import build

    monkeypatch.chdir(ROOT)
    rows = _rows("prompts_val.jsonl")
    assert build() == rows
    assert {k: sum(r["kind"] == k for r in rows) for k in ("harmful", "lookalike")} == {"harmful": 100, "lookalike": 40}
    eval_side, xstest = _eval_side_and_xstest()
    trained = [r["prompt"] for r in _rows("prompts_train.jsonl")]
    validation = {r["prompt"] for r in rows}
    assert len(validation) == len(rows) and not validation & (eval_side | set(xstest) | set(trained))
    for row in _rows("lookalike_validation.jsonl"):
        for pool in (xstest, [r["prompt"] for r in _rows("lookalike_prompts.jsonl")]):
            closest, overlap = _closest(row["prompt"], pool)
            assert overlap <= 0.5, f"{row['prompt']!r} is close to {closest!r} ({overlap:.2f})"
