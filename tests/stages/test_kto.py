"""`align kto` on the tiny model: unpaired data trains (finite loss, adapter changed, manifest), a second
run is a fresh run that repeats the first, pairs become two examples each, the pair stages refuse
unpaired data with exit 2, and the KTO-specific refusals and balance rule."""

from __future__ import annotations

import json
import math

import pytest

from align.cli import main
from align.core import runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.stages import kto
from tests.conftest import write_jsonl
from tests.stages.test_training_stages import assert_complete_manifest, lora_b_changed

FAST = ["max_length=128", "training.max_steps=2", "training.logging_steps=1", "training.per_device_train_batch_size=2"]


def unpaired_rows(n=24):
    """Thumbs up on helpful replies, down on curt ones; 2 of 3 desirable (an imbalance to weigh)."""
    return [
        {
            "prompt": f"Question {i}: can you help me with my order?",
            "completion": "Of course, happy to help with that!" if i % 3 else "No.",
            "label": bool(i % 3),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def unpaired_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("kto-data") / "unpaired.jsonl", unpaired_rows())


@pytest.fixture(scope="module")
def two_runs(tiny_model, unpaired_file, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("kto-runs")
    overrides = [
        f"model={tiny_model}",
        f"data.train={unpaired_file}",
        f"runs_dir={runs_dir}",
        "data.test_fraction=0.3",
        *FAST,
    ]
    first = kto.run(load_config(kto.Config, None, overrides))
    first_manifest = (runs.Path(first["path"]) / "manifest.json").read_bytes()
    second = kto.run(load_config(kto.Config, None, overrides))
    return first, second, first_manifest


@pytest.mark.slow
def test_kto_trains_on_unpaired_data(two_runs, unpaired_file):
    first, _, _ = two_runs
    m = assert_complete_manifest(first, "kto")
    assert math.isfinite(m["metrics"]["train_loss"]) and m["metrics"]["global_step"] == 2
    assert lora_b_changed(first["path"])
    assert m["outputs"]["model"]["format"] == "adapter" and m["outputs"]["model"]["task"] == "causal_lm"
    assert m["config"]["loss_type"] == "kto"
    assert any(i["role"] == "data.train" and i["path"] == str(unpaired_file) for i in m["inputs"])
    # Held-out figures from TRL's KTO evaluation on the test split's examples.
    assert m["metrics"]["test_examples"] > 0 and math.isfinite(m["metrics"]["test_loss"])
    assert math.isfinite(m["metrics"]["test_kl"])
    balance = m["notes"]["balance"]
    assert balance["desirable"] + balance["undesirable"] == m["notes"]["data"]["examples_trained"]
    assert m["notes"]["order"]["kl_partners_with_same_prompt"] == 0
    steps = [json.loads(line) for line in (runs.Path(first["path"]) / runs.METRICS).read_text().splitlines()]
    assert any("kl" in s for s in steps)


@pytest.mark.slow
def test_a_second_run_is_a_fresh_run_that_repeats_the_first(two_runs):
    first, second, first_manifest = two_runs
    assert second["path"] != first["path"]
    assert (runs.Path(first["path"]) / "manifest.json").read_bytes() == first_manifest  # untouched
    assert_complete_manifest(second, "kto")
    # Same seed, same data, same order: nothing carried over from the first run, nothing different.
    assert second["metrics"]["train_loss"] == pytest.approx(first["metrics"]["train_loss"], rel=1e-5)
    assert second["metrics"]["test_loss"] == pytest.approx(first["metrics"]["test_loss"], rel=1e-5)
    assert second["notes"]["order"] == first["notes"]["order"]


def test_paired_data_gives_one_desirable_and_one_undesirable_example_per_pair(tiny_model, easy_pairs):
    report = kto.check(
        load_config(kto.Config, None, [f"model={tiny_model}", f"data.train={easy_pairs}", "max_length=128"])
    )
    data = report["data"]
    assert data["pairs"] == 48 and data["examples"] == 96 and data["examples_trained"] == 96
    assert report["balance"]["desirable"] == report["balance"]["undesirable"] == 48
    assert report["balance"]["within_paper_range"]


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_pair_stages_refuse_unpaired_data_with_exit_2(tiny_model, unpaired_file, tmp_path, capsys, stage):
    code = main([stage, f"model={tiny_model}", f"data.train={unpaired_file}", f"runs_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "unpaired preference data" in err and "`align kto` trains on unpaired data" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.per_device_train_batch_size=1", "needs at least 2 examples per batch"),
        ("training.train_sampling_strategy=random", "breaks KTO's KL estimate"),
        ("training.beta=0.5", "top level of the config"),
    ],
)
def test_kto_refusals_before_any_run(tiny_model, unpaired_file, tmp_path, override, message):
    cfg = load_config(
        kto.Config,
        None,
        [f"model={tiny_model}", f"data.train={unpaired_file}", f"runs_dir={tmp_path / 'runs'}", override],
    )
    with pytest.raises(AlignError, match=message):
        kto.run(cfg)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_kto_resumes_from_a_checkpoint_with_the_same_later_losses(tiny_model, unpaired_file, tmp_path):
    import json

    runs_dir = tmp_path / "runs"
    common = [
        f"model={tiny_model}",
        f"data.train={unpaired_file}",
        f"runs_dir={runs_dir}",
        "max_length=128",
        "training.max_steps=4",
        "training.logging_steps=1",
        "training.per_device_train_batch_size=2",
        "training.save_strategy=steps",
        "training.save_steps=2",
    ]

    def losses(name):
        lines = [json.loads(line) for line in (runs_dir / name / runs.METRICS).read_text().splitlines()]
        return {r["step"]: r["loss"] for r in lines if "loss" in r}

    assert main(["kto", *common, "name=a"]) == 0
    checkpoint = runs_dir / "a" / runs.CHECKPOINTS_DIR / "checkpoint-2"
    assert (checkpoint / "checkpoint.json").is_file()
    assert main(["kto", *common, "name=b", f"resume_from={checkpoint}"]) == 0
    first, resumed = losses("a"), losses("b")
    assert [resumed[s] for s in (3, 4)] == pytest.approx([first[s] for s in (3, 4)], rel=1e-5)
    manifest = runs.read_manifest(runs_dir / "b")
    assert manifest["notes"]["resume"]["step"] == 2 and manifest["notes"]["device"]["type"] == "cpu"
    # Other examples than the checkpoint was written with: refused before any run directory.
    assert main(["kto", *common, "name=c", f"resume_from={checkpoint}", "data.max_train_pairs=10"]) == 2
    assert not (runs_dir / "c").exists()


def test_class_balance_follows_the_papers_rule():
    rows = [{"label": True}] * 3 + [{"label": False}] * 9
    out = kto.class_balance(rows, 1.0, 1.0)
    # lambda_D * 3 / (1 * 9) in [1, 4/3]  <=>  lambda_D in [3, 4].
    assert out["weighted_ratio"] == pytest.approx(1 / 3, abs=1e-4) and out["desirable_weight_range"] == [3.0, 4.0]
    assert not out["within_paper_range"]
    assert kto.class_balance(rows, 3.5, 1.0)["within_paper_range"]
    assert kto.class_balance(rows, 4.5, 1.0)["within_paper_range"] is False


def test_kl_order_separates_the_two_examples_of_a_pair():
    rows = [
        {"prompt": [{"role": "user", "content": f"q{i // 2}"}], "completion": [], "label": i % 2 == 0}
        for i in range(40)
    ]
    order, same = kto.kl_order(rows, seed=0, batch_size=4)
    assert same == 0 and sorted(map(id, order)) == sorted(map(id, rows))
    for i in range(len(order)):
        partner = i - 1 if i % 4 else min(i + 3, len(order) - 1)
        assert order[i]["prompt"] != order[partner]["prompt"]
    assert kto.kl_order(rows, seed=0, batch_size=4)[0] == order  # seeded: the same order every time
    # One prompt only: no order separates them, and the count says so.
    lone = [{"prompt": [{"role": "user", "content": "q"}], "completion": [], "label": True}] * 4
    assert kto.kl_order(lone, seed=0, batch_size=2)[1] == 4


def test_cli_lists_kto(capsys):
    assert main(["--help"]) == 0
    assert "kto " in capsys.readouterr().out
    assert main(["kto", "--help"]) == 0
    out = capsys.readouterr().out
    assert "desirable_weight" in out and "loss_type" in out


@pytest.mark.slow
def test_a_kto_run_counts_as_upstream_training_for_held_out_checks(two_runs, tmp_path):
    # DPO on pairs over the KTO run's prompts, holding out a different split: some of its held-out prompts
    # were trained on by the KTO run (its unpaired examples are recomputed from its manifest), so it refuses.
    from align.stages import dpo

    first, _, _ = two_runs
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": r["prompt"], "chosen": "Of course, happy to help with that!", "rejected": "No."}
            for r in unpaired_rows()
        ],
    )
    cfg = load_config(
        dpo.Config,
        None,
        [f"model={first['path']}", f"data.train={pairs}", "data.test_fraction=0.5", "data.seed=1", "max_length=128"],
    )
    with pytest.raises(AlignError, match=r"trained on by upstream kto run"):
        dpo.check(cfg)


@pytest.mark.slow
def test_full_fine_tuning_trains_all_weights_against_a_reference_copy(tiny_model, unpaired_file, tmp_path):
    from safetensors.torch import load_file

    m = kto.run(
        load_config(
            kto.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={unpaired_file}",
                f"runs_dir={tmp_path}",
                "lora.enabled=false",
                "training.learning_rate=1e-3",
                *FAST,
            ],
        )
    )
    assert m["outputs"]["model"]["format"] == "full" and math.isfinite(m["metrics"]["train_loss"])
    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(runs.Path(m["path"]) / "model" / "model.safetensors"))
    changed = [k for k in before if k in after and not before[k].equal(after[k])]
    assert len(changed) > len(before) // 2, changed
    # The reference is the starting weights, so the first step's KL estimate is exactly zero.
    first_step = json.loads((runs.Path(m["path"]) / runs.METRICS).read_text().splitlines()[0])
    assert first_step["kl"] == 0.0
