"""Pair selection with hand-made scores, and `align pairs` / `align score` on hand-made runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from align.cli import main
from align.core import runs
from align.data.records import write_jsonl
from align.rollout.pairs import Candidate, choose_pair, distinct

SAMPLING = {"n": 4, "temperature": 0.8, "top_p": 0.95, "top_k": 0, "max_tokens": 32, "seed": 0, "stop": []}


def texts(choice):
    return {choice.a.text, choice.b.text}


def test_least_sure_takes_the_smallest_gap():
    cands = [Candidate("a", 0.0), Candidate("b", 5.0), Candidate("c", 2.1), Candidate("d", 2.0)]
    assert texts(choose_pair(cands, "least_sure", random.Random(0))) == {"c", "d"}


def test_best_vs_worst_takes_the_extremes():
    cands = [Candidate("a", 0.5), Candidate("b", -3.0), Candidate("c", 2.0), Candidate("d", 1.0)]
    assert texts(choose_pair(cands, "best_vs_worst", random.Random(0))) == {"b", "c"}


def test_order_of_a_and_b_is_not_best_first():
    cands = [Candidate("low", 0.0), Candidate("high", 1.0)]
    firsts = {choose_pair(cands, "best_vs_worst", random.Random(s)).a.text for s in range(20)}
    assert firsts == {"low", "high"}


def test_random_pairs_are_distinct_and_seeded():
    cands = [Candidate(t, None) for t in "abcdef"]
    picks = [choose_pair(cands, "random", random.Random(s)) for s in range(30)]
    assert all(p.a.text != p.b.text for p in picks)
    assert len({frozenset(texts(p)) for p in picks}) > 3
    assert texts(choose_pair(cands, "random", random.Random(7))) == texts(
        choose_pair(cands, "random", random.Random(7))
    )


def test_duplicates_are_merged_before_choosing():
    merged = distinct(["same", " same\n", "", "other", "  ", "same"], [1.0, 9.0, 8.0, 2.0, 7.0, 3.0])
    assert [(c.text, c.score) for c in merged] == [("same", 1.0), ("other", 2.0)]
    assert choose_pair(distinct(["x", "x "], None), "random", random.Random(0)) is None


def make_generation_run(tmp_path: Path, rows: list[dict], n: int = 4, name: str = "gen") -> Path:
    """A generation run written by hand (what `align generate` writes), so pair tests need no model."""
    with runs.new_run("generate", {"hand_made": True}, tmp_path / "runs", name) as run:
        write_jsonl(Path(run.path) / "generations.jsonl", rows)
        run.add_output("generations", "generations.jsonl")
        run.notes.update(policy="/models/policy", sampling={**SAMPLING, "n": n})
        runs.finish(run)
    return tmp_path / "runs" / name


def prompt(i):
    return [{"role": "user", "content": f"question {i}"}]


def read_pairs(run_dir: Path) -> list[dict]:
    manifest = runs.read_manifest(run_dir)
    return [json.loads(l) for l in runs.output_path(run_dir, manifest, "pairs").read_text().splitlines()]


def test_pairs_stage_least_sure_and_counts(tmp_path):
    rows = [
        {
            "prompt": prompt(0),
            "responses": ["a", "b", "c", "d"],
            "scores": [0.0, 5.0, 2.1, 2.0],
            "prompt_id": "p0",
            "source": "f.jsonl:1",
        },
        {
            "prompt": prompt(1),
            "responses": ["same", "same", "same", "same"],
            "scores": [1.0, 1.0, 1.0, 1.0],
            "prompt_id": "p1",
            "source": "f.jsonl:2",
        },
        {
            "prompt": prompt(2),
            "responses": ["x", "x", "y", "z", ""],
            "scores": [0.0, 0.0, 3.0, 10.0, 3.0],
            "prompt_id": "p2",
            "source": "f.jsonl:3",
        },
    ]
    gen = make_generation_run(tmp_path, rows)
    assert main(["pairs", str(gen), "selection=least_sure", f"runs_dir={tmp_path / 'runs'}", "name=pairs"]) == 0
    pairs = read_pairs(tmp_path / "runs" / "pairs")
    assert len(pairs) == 2
    first = pairs[0]
    assert {first["response_a"], first["response_b"]} == {"c", "d"}
    assert sorted(first["scores"]) == [2.0, 2.1]
    assert dict(zip([first["response_a"], first["response_b"]], first["scores"])) == {"c": 2.1, "d": 2.0}
    assert first["prompt"] == prompt(0) and first["policy"] == "/models/policy"
    assert first["sampling"]["n"] == 4 and first["source"] == "f.jsonl:1"
    assert {pairs[1]["response_a"], pairs[1]["response_b"]} == {"x", "y"}  # the duplicate x merged first
    metrics = runs.read_manifest(tmp_path / "runs" / "pairs")["metrics"]
    assert metrics["prompts_fewer_than_2_distinct"] == 1 and metrics["duplicate_responses_merged"] == 4
    assert metrics["empty_responses_dropped"] == 1
    assert metrics["pairs"] == 2


def test_random_pairs_have_no_scores(tmp_path):
    gen = make_generation_run(tmp_path, [{"prompt": prompt(0), "responses": ["a", "b", "c", "d"], "prompt_id": "p0"}])
    assert main(["pairs", str(gen), f"runs_dir={tmp_path / 'runs'}", "name=r"]) == 0
    (pair,) = read_pairs(tmp_path / "runs" / "r")
    assert pair["scores"] is None and pair["response_a"] != pair["response_b"] and pair["selection"] == "random"


def test_n_below_2_exits_2(tmp_path, capsys):
    gen = make_generation_run(tmp_path, [{"prompt": prompt(0), "responses": ["only one"]}], n=1)
    assert main(["pairs", str(gen), f"runs_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert "n=1" in err and "at least 2" in err


def test_score_rules_without_scores_exit_2(tmp_path, capsys):
    gen = make_generation_run(tmp_path, [{"prompt": prompt(0), "responses": ["a", "b"]}], n=2)
    assert main(["pairs", str(gen), "selection=best_vs_worst", f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert "align score" in capsys.readouterr().err


def test_unknown_selection_suggests(tmp_path, capsys):
    gen = make_generation_run(tmp_path, [{"prompt": prompt(0), "responses": ["a", "b"]}], n=2)
    assert main(["pairs", str(gen), "selection=least-sure"]) == 2
    assert "least_sure" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory, tiny_model) -> Path:
    """A tiny sequence classifier (1 output) sharing the tiny policy's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-rm")
    config = LlamaConfig.from_pretrained(tiny_model)
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def test_score_adds_scores_then_pairs_use_them(tmp_path, tiny_reward_model, tiny_model):
    rows = [
        {"prompt": prompt(i), "responses": ["yes", "no", "maybe so"], "prompt_id": f"p{i}", "source": f"f:{i}"}
        for i in range(3)
    ]
    gen = make_generation_run(tmp_path, rows, n=3)
    assert (
        main(["score", str(gen), f"reward_model={tiny_reward_model}", f"runs_dir={tmp_path / 'runs'}", "name=scored"])
        == 0
    )
    scored_dir = tmp_path / "runs" / "scored"
    manifest = runs.read_manifest(scored_dir)
    scored = [json.loads(l) for l in runs.output_path(scored_dir, manifest, "generations").read_text().splitlines()]
    assert all(len(r["scores"]) == 3 and all(isinstance(s, float) for s in r["scores"]) for r in scored)
    assert len({s for r in scored for s in r["scores"]}) > 1  # a real head gives different scores
    assert manifest["notes"]["policy"] == "/models/policy"  # carried over for `align pairs`
    assert [i["role"] for i in manifest["inputs"]] == ["generations", "reward_model"]
    assert not any("scores" in r for r in [json.loads(l) for l in (gen / "generations.jsonl").read_text().splitlines()])

    assert main(["pairs", str(scored_dir), "selection=best_vs_worst", f"runs_dir={tmp_path / 'runs'}", "name=bw"]) == 0
    for pair, row in zip(read_pairs(tmp_path / "runs" / "bw"), scored):
        assert sorted(pair["scores"]) == [min(row["scores"]), max(row["scores"])]


def test_score_refuses_a_policy(tmp_path, tiny_model, capsys):
    gen = make_generation_run(tmp_path, [{"prompt": prompt(0), "responses": ["a", "b"]}], n=2)
    assert main(["score", str(gen), f"reward_model={tiny_model}", f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert "not a reward model" in capsys.readouterr().err


def test_damaged_generations_file_exits_2_naming_the_line(tmp_path, capsys):
    gen = make_generation_run(tmp_path, [{"prompt": prompt(i), "responses": ["a", "b"]} for i in range(3)])
    file = gen / "generations.jsonl"
    lines = file.read_bytes().splitlines(keepends=True)
    file.write_bytes(lines[0] + lines[1].replace(b'"a"', b'"\xe9"') + lines[2])
    assert main(["pairs", str(gen), f"runs_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert f"{file}:2: not UTF-8" in err


def test_refusal_contrast_pairs_a_refusal_with_an_answer_when_there_is_one(tmp_path):
    refusal = "I'm sorry, but I can't help with that."
    answers = ["Sure: first, preheat the oven.", "Here is how it works: mix the flour.", "Step one is easy."]
    rows = [
        # One refusal among four: it must be in the pair, whatever the seed, against one of the answers.
        {"prompt": prompt(i), "responses": [answers[0], answers[1], refusal, answers[2]], "prompt_id": f"p{i}"}
        for i in range(8)
    ] + [
        # No refusal at all: a random pair of answers, counted as not a contrast.
        {"prompt": prompt(99), "responses": answers, "prompt_id": "p99"},
    ]
    gen = make_generation_run(tmp_path, rows)
    assert main(["pairs", str(gen), "selection=refusal_contrast", f"runs_dir={tmp_path / 'runs'}", "name=c"]) == 0
    pairs = read_pairs(tmp_path / "runs" / "c")
    for pair in pairs[:8]:
        shown = {pair["response_a"], pair["response_b"]}
        assert refusal in shown and len(shown & set(answers)) == 1 and pair["contrast"] is True
    assert {pairs[8]["response_a"], pairs[8]["response_b"]} <= set(answers) and pairs[8]["contrast"] is False
    assert sum(p["response_a"] == refusal for p in pairs[:8]) not in (0, 8)  # shown first or second by coin flip
    assert runs.read_manifest(tmp_path / "runs" / "c")["metrics"]["refusal_contrast_pairs"] == 8


def test_refusal_contrast_needs_every_response_marked():
    with pytest.raises(ValueError, match="refused or not"):
        choose_pair([Candidate("a", None), Candidate("b", None)], "refusal_contrast", random.Random(0))
