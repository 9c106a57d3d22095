"""Replay: general conversations mixed into SFT at a configured fraction, counted in the manifest,
refused when the data cannot give that fraction, and covered by the upstream held-out check."""

from __future__ import annotations

import pytest

from align.cli import main
from align.core import runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.data.conversations import ReplayConfig, SFTDataConfig, load_sft_examples
from align.stages import sft
from tests.conftest import write_jsonl

FAST = ["max_length=64", "training.max_steps=1", "training.per_device_train_batch_size=2", "training.logging_steps=1"]


@pytest.fixture
def files(tmp_path):
    task = write_jsonl(
        tmp_path / "task.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"order {i} is late"},
                    {"role": "assistant", "content": "Sorry! On its way."},
                ]
            }
            for i in range(12)
        ],
    )
    # Preference data repeats a chosen reply across its pairs: replay counts it once.
    general = write_jsonl(
        tmp_path / "general.jsonl",
        [
            {"prompt": f"general question {i}", "chosen": f"a general answer {i}", "rejected": r}
            for i in range(10)
            for r in ("meh", "no")
        ],
    )
    return task, general


def test_fraction_of_the_mix_is_replay_and_every_task_example_is_kept(files):
    task, general = files
    cfg = SFTDataConfig(train=str(task), replay=ReplayConfig(path=str(general), fraction=0.25, seed=3))
    rows, report, _ = load_sft_examples(cfg)
    assert len(rows) == 16 and report["replay"] == {
        "path": str(general),
        "fraction": 0.25,
        "examples": 4,
        "available": 10,
        "share_of_mix": 0.25,
    }
    task_rows = [r for r in rows if r["prompt"][0]["content"].startswith("order")]
    assert len(task_rows) == 12
    again, _, _ = load_sft_examples(cfg)
    assert again == rows  # seeded
    other, _, _ = load_sft_examples(
        SFTDataConfig(train=str(task), replay=ReplayConfig(path=str(general), fraction=0.25, seed=4))
    )
    assert other[12:] != rows[12:]
    plain, plain_report, _ = load_sft_examples(SFTDataConfig(train=str(task)))
    assert len(plain) == 12 and "replay" not in plain_report


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"path": "x.jsonl"}, "needs both a path and a fraction"),
        ({"fraction": 0.2}, "needs both a path and a fraction"),
        ({"path": "x.jsonl", "fraction": 1.0}, r"must be in \[0, 1\)"),
    ],
)
def test_bad_replay_settings(kwargs, message):
    with pytest.raises(AlignError, match=message):
        ReplayConfig(**kwargs)


def test_more_replay_than_the_data_holds_is_an_error(files):
    task, general = files
    with pytest.raises(AlignError, match="needs 28 replay examples.*has 10"):
        load_sft_examples(SFTDataConfig(train=str(task), replay=ReplayConfig(path=str(general), fraction=0.7)))


@pytest.mark.slow
def test_sft_stage_records_replay_and_downstream_holdout_is_checked_against_it(tiny_model, files, tmp_path, capsys):
    task, general = files
    run = sft.run(
        load_config(
            sft.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={task}",
                f"data.replay.path={general}",
                "data.replay.fraction=0.4",
                f"runs_dir={tmp_path / 'runs'}",
                *FAST,
            ],
        )
    )
    manifest = runs.read_manifest(run["path"])
    assert manifest["notes"]["data"]["replay"]["examples"] == 8
    assert manifest["notes"]["data"]["examples_trained"] == 20
    assert "data.replay" in {i["role"] for i in manifest["inputs"]}
    # A reward stage holding out the replayed prompts would report memory as generalisation: refused.
    code = main(
        [
            "reward",
            f"model={run['path']}",
            f"data.train={general}",
            "data.test_fraction=0.5",
            f"runs_dir={tmp_path / 'runs2'}",
            *FAST,
        ]
    )
    assert code == 2 and run["path"] in capsys.readouterr().err
