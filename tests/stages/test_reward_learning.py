"""The reward stage learns, and what it reports is what a plain transformers forward gives.

Data: an easy rule with varied wording (chosen is one of four polite replies, rejected one of four
curt ones, combined differently per pair), so an untrained score head is not right by accident
(on the held-out pairs below it scores 0.27-0.45 over five seeds), while 10 LoRA steps reach 1.0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.core import runs
from align.core.config import load_config
from align.data.preferences import PreferenceDataConfig, load_splits
from align.stages import evaluate, reward
from tests.conftest import write_jsonl

# Trains or samples the tiny model (make test runs it; make test-fast does not).
pytestmark = pytest.mark.slow

POLITE = [
    "Of course, happy to help! Thank you for asking.",
    "Gladly, here is what I can do for you.",
    "Sure, thanks for reaching out, let us sort it out together.",
    "Certainly! I appreciate your patience.",
]
CURT = ["No.", "Figure it out yourself.", "Not my problem, go away.", "I will not help you with that, stop asking."]
TOPICS = [
    "the weather",
    "my order",
    "the invoice",
    "a refund",
    "the schedule",
    "the meeting",
    "my password",
    "the delivery",
    "the report",
    "the booking",
    "my account",
    "the update",
]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reward-learning")
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Can you help me with {topic}? ({i})"}],
            "chosen": [{"role": "assistant", "content": POLITE[i % 4]}],
            "rejected": [{"role": "assistant", "content": CURT[(i // 4) % 4]}],
        }
        for i, topic in enumerate(TOPICS * 4)
    ]
    data = write_jsonl(tmp / "easy.jsonl", rows)
    manifest = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={data}",
                "data.test_fraction=0.25",
                f"runs_dir={tmp / 'runs'}",
                "data.validation_fraction=0.2",
                "max_length=64",
                "training.learning_rate=5e-3",
                "training.max_steps=10",
                "training.per_device_train_batch_size=4",
                "training.logging_steps=5",
            ],
        )
    )
    train, test = load_splits(PreferenceDataConfig(train=str(data), test_fraction=0.25, validation_fraction=0.2))
    held_out = write_jsonl(tmp / "held_out.jsonl", test.rows)
    return {
        "manifest": manifest,
        "held_out": held_out,
        "test_rows": test.rows,
        "tmp": tmp,
        "data": data,
        "validation_rows": train.validation.rows,
    }


def test_reward_learns_an_easy_preference(trained, tiny_model):
    import torch

    from align.models import load_reward_model, load_tokenizer, resolve_model

    metrics = trained["manifest"]["metrics"]
    assert metrics["test_pairs"] == len(trained["test_rows"]) >= 8
    assert metrics["test_accuracy"] >= 0.9, metrics
    assert metrics["test_mean_margin"] > 0.5, metrics
    # The bar is one an untrained head does not clear on these pairs.
    source = resolve_model(str(tiny_model))
    tokenizer = load_tokenizer(source)
    torch.manual_seed(0)
    untrained = reward.evaluate_pairs(
        load_reward_model(source, pad_token_id=tokenizer.pad_token_id), tokenizer, trained["test_rows"], 64, 8
    )
    assert untrained["accuracy"] < 0.9 and abs(untrained["mean_margin"]) < 0.1, untrained


def test_validation_pairs_are_scored_like_the_test_pairs(trained, tiny_model):
    from align.models import load_reward_model, load_tokenizer, resolve_model

    m = trained["manifest"]
    rows = trained["validation_rows"]
    assert m["metrics"]["validation_pairs"] == len(rows) == m["notes"]["data"]["validation_pairs_set_aside"] > 0
    assert m["notes"]["split"]["validation_fraction"] == 0.2
    source = resolve_model(m["path"])
    tokenizer = load_tokenizer(source)
    again = reward.evaluate_pairs(
        load_reward_model(source, pad_token_id=tokenizer.pad_token_id), tokenizer, rows, 64, 8
    )
    assert again["accuracy"] == m["metrics"]["validation_accuracy"]
    assert abs(again["mean_margin"] - m["metrics"]["validation_mean_margin"]) < 1e-4


def test_evaluate_reward_agrees_with_the_stage_and_a_plain_forward(trained, tiny_model):
    """`align evaluate reward` reloads the saved run: it must give the stage's held-out figures, and
    each score must equal a plain transformers + peft forward on the unpadded chat-template ids."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_path = Path(trained["manifest"]["path"])
    m = evaluate.run(
        load_config(
            evaluate.Config,
            None,
            [
                f"reward_model={run_path}",
                f"data.path={trained['held_out']}",
                "max_length=64",
                f"runs_dir={trained['tmp'] / 'eval'}",
            ],
        )
    )
    stage = trained["manifest"]["metrics"]
    assert m["metrics"]["accuracy"] == stage["test_accuracy"]
    assert m["metrics"]["mean_margin"] == pytest.approx(stage["test_mean_margin"], abs=1e-4)

    tokenizer = AutoTokenizer.from_pretrained(run_path / "model")
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    model = PeftModel.from_pretrained(base, run_path / "model").eval()
    scores = [json.loads(line) for line in (runs.Path(m["path"]) / "scores.jsonl").read_text().splitlines()]
    for row, written in zip(trained["test_rows"], scores):
        for side in ("chosen", "rejected"):
            ids = tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=False)
            with torch.no_grad():
                score = model(input_ids=torch.tensor([list(ids)])).logits[0, 0].item()
            assert written[f"{side}_score"] == pytest.approx(score, abs=1e-4)


def test_evaluate_reward_on_the_held_out_split_with_a_paired_baseline(trained):
    """`data.split=test` picks exactly the pairs the stage held out; a baseline is scored on the same
    pairs, and the paired difference is the difference of the two accuracies (here the same model:
    every pair agrees, so the interval is a point)."""
    run_path = Path(trained["manifest"]["path"])
    m = evaluate.run(
        load_config(
            evaluate.Config,
            None,
            [
                f"reward_model={run_path}",
                f"baseline={run_path}",
                f"data.path={trained['data']}",
                "data.split=test",
                "data.test_fraction=0.25",
                "max_length=64",
                f"runs_dir={trained['tmp'] / 'eval-split'}",
            ],
        )
    )
    stage = trained["manifest"]["metrics"]
    assert m["notes"]["data"]["pairs_scored"] == len(trained["test_rows"])
    assert m["metrics"]["accuracy"] == stage["test_accuracy"]
    assert (
        m["metrics"]["accuracy_ci95"]["ci_low"] <= m["metrics"]["accuracy"] <= m["metrics"]["accuracy_ci95"]["ci_high"]
    )
    assert m["metrics"]["baseline_accuracy"] == m["metrics"]["accuracy"]
    assert m["metrics"]["accuracy_difference"] == {
        "mean": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        "n": len(trained["test_rows"]),
    }
    lines = [json.loads(x) for x in (Path(m["path"]) / "scores.jsonl").read_text().splitlines()]
    assert all(line["baseline_margin"] == pytest.approx(line["margin"]) for line in lines)
    assert [i["role"] for i in m["inputs"]] == ["reward_model", "data", "baseline"]

    train_side = evaluate.run(
        load_config(
            evaluate.Config,
            None,
            [
                f"reward_model={run_path}",
                f"data.path={trained['data']}",
                "data.split=train",
                "data.test_fraction=0.25",
                "max_length=64",
                f"runs_dir={trained['tmp'] / 'eval-train'}",
            ],
        )
    )
    assert train_side["notes"]["data"]["pairs_scored"] == 48 - len(trained["test_rows"])


def test_evaluate_reward_refuses_a_split_without_a_fraction(trained):
    from align.core.errors import AlignError

    with pytest.raises(AlignError, match="test_fraction"):
        evaluate.check(
            load_config(
                evaluate.Config,
                None,
                [
                    f"reward_model={trained['manifest']['path']}",
                    f"data.path={trained['data']}",
                    "data.split=test",
                    "data.test_fraction=0",
                ],
            )
        )
