"""Prompt sets: field filters, the content-hash train/eval split, sampling, and the shipped safety split."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.core.config import load_config
from align.core.errors import AlignError
from align.data.preferences import split_pairs
from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set
from align.stages import evaluate_policy
from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parents[2]


def texts(prompts) -> list[str]:
    return [p.messages[-1]["content"] for p in prompts]


def test_split_sides_are_disjoint_cover_everything_and_ignore_file_order(tmp_path):
    items = [f"prompt number {i}" for i in range(200)]
    forward = write_jsonl(tmp_path / "a.jsonl", items)
    backward = write_jsonl(tmp_path / "b.jsonl", items[::-1])
    train = set(texts(load_prompt_set("s", PromptSetConfig(paths=[str(forward)], split="train", eval_fraction=0.3))))
    held = set(texts(load_prompt_set("s", PromptSetConfig(paths=[str(forward)], split="eval", eval_fraction=0.3))))
    assert not train & held and train | held == set(items)
    assert 40 <= len(held) <= 80  # ~30% of 200
    held_reversed = set(
        texts(load_prompt_set("s", PromptSetConfig(paths=[str(backward)], split="eval", eval_fraction=0.3)))
    )
    assert held_reversed == held


def test_split_is_the_preference_stages_test_split(tmp_path):
    """A preference run with data.test_fraction=F, data.seed=S holds out the same prompts as split: eval."""
    items = [f"question {i}" for i in range(60)]
    path = write_jsonl(tmp_path / "p.jsonl", items)
    held = texts(
        load_prompt_set("s", PromptSetConfig(paths=[str(path)], split="eval", eval_fraction=0.25, split_seed=4))
    )
    pairs = [{"prompt": [{"role": "user", "content": t}], "chosen": [], "rejected": []} for t in items]
    _, test = split_pairs(pairs, 0.25, 4)
    assert held == [row["prompt"][0]["content"] for row in test]


def test_match_and_sample(tmp_path):
    rows = [{"prompt": f"q{i}", "label": "safe" if i % 3 else "unsafe"} for i in range(30)]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    safe = load_prompt_set("safe", PromptSetConfig(paths=[str(path)], match={"label": "safe"}))
    assert len(safe) == 20 and all(int(t[1:]) % 3 for t in texts(safe))
    few = load_prompt_set("safe", PromptSetConfig(paths=[str(path)], match={"label": "safe"}, max_prompts=5))
    assert len(few) == 5 and set(texts(few)) <= set(texts(safe))
    assert [p.source for p in few] == sorted((p.source for p in few), key=lambda s: int(s.rsplit(":", 1)[1]))


def test_an_empty_set_says_what_emptied_it(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "q", "label": "unsafe"}])
    with pytest.raises(AlignError, match=r"prompt set 'safe' is empty: 1 records read .* 0 matched"):
        load_prompt_set("safe", PromptSetConfig(paths=[str(path)], match={"label": "safe"}))
    with pytest.raises(AlignError, match="data not found"):
        load_prompt_set("safe", PromptSetConfig(paths=[str(tmp_path / "missing.jsonl")]))
    with pytest.raises(AlignError, match="eval_fraction"):
        PromptSetConfig(eval_fraction=1.0)


def test_shipped_safety_split_keeps_evaluation_prompts_out_of_training(repo_data, monkeypatch):
    """configs/evaluate/policy.yaml's harmful set: the eval side never meets the train side, and the
    XSTest set holds only prompts labelled safe."""
    monkeypatch.chdir(REPO)
    cfg = load_config(evaluate_policy.Config, REPO / "configs" / "evaluate" / "policy.yaml")
    assert cfg.harmful.split == "eval"
    everything = PromptSetConfig(**{**vars(cfg.harmful), "split": "all", "max_prompts": None})
    train = PromptSetConfig(**{**vars(cfg.harmful), "split": "train", "max_prompts": None})
    all_prompts = set(texts(load_prompt_set("harmful", everything)))
    train_prompts = set(texts(load_prompt_set("harmful", train)))
    eval_prompts = set(texts(load_prompt_set("harmful", cfg.harmful)))
    assert len(eval_prompts) == cfg.harmful.max_prompts
    assert not eval_prompts & train_prompts and eval_prompts < all_prompts
    safe = load_prompt_set("safe", cfg.safe)
    assert len(safe) == cfg.safe.max_prompts and all(p.source.startswith("data/safety/xstest") for p in safe)
