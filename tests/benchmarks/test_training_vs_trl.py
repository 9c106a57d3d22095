"""benchmarks/training_vs_trl.py: both sides get the same pairs, and the ratios and intervals it
reports are computed as its docstring says (the training itself is the benchmark's to run)."""

from __future__ import annotations

import importlib.util
import json
from argparse import Namespace
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "training_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("training_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wilson_interval_matches_the_textbook_value(bench):
    assert bench.wilson(0.5, 100) == [0.4038, 0.5962]
    low, high = bench.wilson(0.9, 20)
    assert low < 0.9 < high <= 1


def test_ratios_are_against_the_mean_of_both_plain_trl_runs(bench):
    def run(label, pairs, tokens, rss, acc):
        return {
            "label": label,
            "pairs_per_s": pairs,
            "tokens_per_s": tokens,
            "peak_rss_mb": rss,
            "test_accuracy": acc,
            "test_accuracy_ci95": bench.wilson(acc, 64),
        }

    runs = [
        run("plain TRL", 1.0, 100.0, 3000, 0.6),
        run("align", 3.0, 240.0, 2000, 0.62),
        run("plain TRL (again, last)", 2.0, 140.0, 3000, 0.6),
        run("align (worse)", 1.5, 120.0, 3000, 0.2),
    ]
    ratios = bench.ratios(runs)
    assert ratios["align"] == {
        "pairs_per_s": 2.0,
        "tokens_per_s": 2.0,
        "peak_rss_mb": 0.667,
        "test_accuracy_within_trl_interval": True,
    }
    assert ratios["align (worse)"]["test_accuracy_within_trl_interval"] is False


def test_variants_parse_into_name_and_overrides(bench):
    assert bench.parse_variant("keep:data.long_prompts=keep_last_turns,training.max_steps=3") == (
        "keep",
        ["data.long_prompts=keep_last_turns", "training.max_steps=3"],
    )
    assert bench.parse_variant("align") == ("align", [])


def test_both_sides_train_and_are_scored_on_the_same_fitting_pairs(bench, repo_data, tmp_path):
    args = Namespace(
        data=str(repo_data / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz"),
        train_pairs=12,
        test_pairs=6,
        max_length=160,
        pool="fit",
        held_out="fit",
    )
    data = bench.prepare_data(args, tmp_path)
    train = [json.loads(line) for line in Path(data["train"]).read_text().splitlines()]
    test = [json.loads(line) for line in Path(data["test"]).read_text().splitlines()]
    assert (len(train), len(test)) == (12, 6) == (data["train_pairs"], data["test_pairs"])
    assert data["train_pairs_over_max_length_skipped"] > 0  # HH has long conversations: some were passed over
    from transformers import AutoTokenizer

    from align.model_cache import embedded_model_dir
    from align.scoring import conversation_ids

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    assert all(
        len(conversation_ids(tokenizer, r["prompt"] + r[p])) <= 160
        for r in train + test
        for p in ("chosen", "rejected")
    )
    assert not {json.dumps(r["prompt"]) for r in train} & {json.dumps(r["prompt"]) for r in test}
