"""Held-out prompts must not have been trained on upstream (issue: SFT trained on the prompts the
reward and DPO stages reported as held out). Each stage records its split in the manifest and checks
the runs it builds on, recomputing what they trained on from their manifests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from align.cli import main
from align.core import runs
from align.core.config import load_config
from align.data.preferences import PreferenceDataConfig, load_splits
from align.data.splits import SPLIT_RULE, prompt_key
from align.stages import reward, sft
from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
FAST = ["max_length=64", "training.max_steps=1", "training.per_device_train_batch_size=2", "training.logging_steps=1"]


@pytest.fixture
def pairs(tmp_path):
    return write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": f"question {i}", "chosen": "a kind answer", "rejected": "a rude answer"} for i in range(30)],
    )


def sft_run(tiny_model, data, runs_dir, *overrides):
    return sft.run(
        load_config(
            sft.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={data}",
                "data.format=preference-chosen",
                f"runs_dir={runs_dir}",
                *FAST,
                *overrides,
            ],
        )
    )


@pytest.mark.slow
def test_reward_refuses_prompts_sft_trained_on(tiny_model, pairs, tmp_path, capsys):
    parent = sft_run(tiny_model, pairs, tmp_path / "runs")  # nothing held out
    code = main(
        [
            "reward",
            f"model={parent['path']}",
            f"data.train={pairs}",
            "data.test_fraction=0.3",
            f"runs_dir={tmp_path / 'runs2'}",
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    (line,) = [l for l in err.splitlines() if l.startswith("align: error:")]
    assert parent["path"] in line and "nothing held out" in line and "data.test_fraction=0.3" in line
    assert "check_upstream_split=false" in line
    assert not (tmp_path / "runs2").exists()


@pytest.mark.slow
def test_different_seed_upstream_is_refused_same_split_passes_and_is_recorded(tiny_model, pairs, tmp_path, capsys):
    other = sft_run(tiny_model, pairs, tmp_path / "runs", "data.test_fraction=0.3", "data.seed=1")
    code = main(
        [
            "reward",
            f"model={other['path']}",
            f"data.train={pairs}",
            "data.test_fraction=0.3",
            f"runs_dir={tmp_path / 'out'}",
            *FAST,
        ]
    )
    assert code == 2 and "data.seed=1" in capsys.readouterr().err

    same = sft_run(tiny_model, pairs, tmp_path / "runs", "data.test_fraction=0.3")
    m = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={same['path']}",
                f"data.train={pairs}",
                "data.test_fraction=0.3",
                f"runs_dir={tmp_path / 'out'}",
                *FAST,
            ],
        )
    )
    split = runs.read_manifest(m["path"])["notes"]["split"]
    _, test = load_splits(PreferenceDataConfig(train=str(pairs), test_fraction=0.3))
    assert split["rule"] == SPLIT_RULE and split["test_fraction"] == 0.3 and split["seed"] == 0
    assert split["held_out_prompts"] == len({prompt_key(p) for p in test.prompts}) > 0
    assert split["upstream"] == [
        {
            "run": str(Path(same["path"]).resolve()),
            "stage": "sft",
            "verified": True,
            "held_out_prompts_trained_on": 0,
            "split": split["upstream"][0]["split"],
        }
    ]
    sft_split = runs.read_manifest(same["path"])["notes"]["split"]
    assert sft_split["held_out_sha256"] == split["held_out_sha256"], "SFT left out exactly the prompts reward holds out"


@pytest.mark.slow
def test_dpo_checks_the_reward_models_chain(tiny_model, pairs, tmp_path, capsys):
    policy = sft_run(tiny_model, pairs, tmp_path / "runs", "data.test_fraction=0.3")
    rm = reward.run(
        load_config(
            reward.Config, None, [f"model={tiny_model}", f"data.train={pairs}", f"runs_dir={tmp_path / 'runs'}", *FAST]
        )
    )  # trained on all
    code = main(
        [
            "dpo",
            f"model={policy['path']}",
            f"reward_model={rm['path']}",
            f"data.train={pairs}",
            "data.test_fraction=0.3",
            f"runs_dir={tmp_path / 'out'}",
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and rm["path"] in err and "upstream reward run" in err


@pytest.mark.slow
def test_opt_out_is_recorded(tiny_model, pairs, tmp_path):
    parent = sft_run(tiny_model, pairs, tmp_path / "runs")
    m = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={parent['path']}",
                f"data.train={pairs}",
                "data.test_fraction=0.3",
                "data.check_upstream_split=false",
                f"runs_dir={tmp_path / 'out'}",
                *FAST,
            ],
        )
    )
    split = runs.read_manifest(m["path"])["notes"]["split"]
    assert split["check_upstream_split"] is False and split["upstream"] == []


@pytest.mark.slow
def test_moved_data_file_is_found_by_its_hash(tiny_model, pairs, tmp_path, capsys):
    """The upstream run's file was moved: the same content given to this stage is used to recompute."""
    parent = sft_run(tiny_model, pairs, tmp_path / "runs")
    moved = tmp_path / "elsewhere.jsonl"
    shutil.move(pairs, moved)
    code = main(
        [
            "reward",
            f"model={parent['path']}",
            f"data.train={moved}",
            "data.test_fraction=0.3",
            f"runs_dir={tmp_path / 'out'}",
            *FAST,
        ]
    )
    assert code == 2 and "trained on by upstream sft run" in capsys.readouterr().err


def shipped_split(path: Path) -> tuple:
    data = yaml.safe_load(path.read_text())["data"]
    return data["train"], data.get("test_fraction", 0.0), data.get("seed", 0)


@pytest.mark.parametrize("folder", ["configs/{}/default.yaml", "recipes/hh_harmless/{}.yaml"])
def test_shipped_configs_hold_out_the_same_prompts(folder):
    splits = {stage: shipped_split(ROOT / folder.format(stage)) for stage in ("sft", "reward", "dpo")}
    assert len(set(splits.values())) == 1, splits
    assert splits["sft"][1] > 0
