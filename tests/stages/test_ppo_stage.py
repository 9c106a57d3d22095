"""`align ppo` on the tiny model: a smoke test per algorithm, the refusals, and PPO learning a
scripted reward."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from align.cli import main
from align.core import runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.rollout.engines import vllm_available
from align.stages import ppo, reward
from tests.conftest import write_jsonl
from tests.rollout.conftest import vllm_tiny_model  # noqa: F401  (the fixture: a tiny model vLLM's CPU attention takes)

# Trains or samples the tiny model (make test runs it; make test-fast does not).
pytestmark = pytest.mark.slow

SMALL = [
    "max_length=128",
    "steps=2",
    "batch_size=4",
    "num_generations=2",
    "max_new_tokens=6",
    "eval.prompts=2",
    "eval.max_new_tokens=4",
    "ppo.ppo_epochs=1",
    "ppo.minibatch_size=2",
    "lora.r=4",
]


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    """A reward run trained from the tiny model on an easy rule, and a prompt set."""
    tmp = tmp_path_factory.mktemp("ppo")
    pairs = write_jsonl(
        tmp / "pairs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"Help me with task {i}"}],
                "chosen": [{"role": "assistant", "content": "Of course, happy to help!"}],
                "rejected": [{"role": "assistant", "content": "No."}],
            }
            for i in range(8)
        ],
    )
    prompts = write_jsonl(tmp / "prompts.jsonl", [{"prompt": f"Tell me about topic {i}"} for i in range(8)])
    reward_run = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={pairs}",
                f"runs_dir={tmp / 'runs'}",
                "max_length=64",
                "training.max_steps=1",
                "training.per_device_train_batch_size=2",
                "lora.r=4",
            ],
        )
    )
    return {"tmp": tmp, "runs": tmp / "runs", "prompts": prompts, "reward": reward_run["path"], "model": tiny_model}


def overrides(setup, *extra):
    return [
        f"model={setup['model']}",
        f"reward_model={setup['reward']}",
        f"prompts={setup['prompts']}",
        f"runs_dir={setup['runs']}",
        *SMALL,
        *extra,
    ]


def lora_b_changed(run_path):
    weights = load_file(str(runs.Path(run_path) / "model" / "adapter_model.safetensors"))
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    return bool(lora_b) and any(t.abs().sum() > 0 for t in lora_b)


def check_run(manifest, setup):
    on_disk = runs.read_manifest(manifest["path"])
    assert on_disk["stage"] == "ppo"
    roles = {i["role"]: i for i in on_disk["inputs"]}
    assert {"model", "reward_model", "prompts"} <= set(roles)
    assert roles["reward_model"]["kind"] == "run" and roles["reward_model"]["stage"] == "reward"
    assert roles["reward_model"]["path"] == str(runs.Path(setup["reward"]).resolve())
    assert roles["model"]["path"] == str(runs.Path(setup["model"]).resolve())
    assert on_disk["outputs"]["model"]["sha256"] and on_disk["outputs"]["model"]["format"] == "adapter"
    assert lora_b_changed(manifest["path"])
    assert on_disk["metrics"]["rm_eval_prompts"] == 2
    assert math.isfinite(on_disk["metrics"]["rm_policy_mean_reward"])
    assert (
        on_disk["metrics"]["rm_mean_gain_ci_low"]
        <= on_disk["metrics"]["rm_mean_gain"]
        <= on_disk["metrics"]["rm_mean_gain_ci_high"]
    )
    lines = (runs.Path(manifest["path"]) / runs.METRICS).read_text().splitlines()
    assert lines
    return on_disk, [runs.json.loads(line) for line in lines]


def step_lines(manifest):
    return [runs.json.loads(x) for x in (runs.Path(manifest["path"]) / runs.METRICS).read_text().splitlines()]


@pytest.fixture(scope="module")
def ppo_run(setup):
    """The PPO smoke run (2 steps, a checkpoint after step 1 in `setup['tmp']/checkpoints`), for the tests
    that check it, resume from it or give it as a reward model."""
    return ppo.run(
        load_config(
            ppo.Config,
            None,
            overrides(setup, "algorithm=ppo", "checkpoint_every=1", f"checkpoint_dir={setup['tmp'] / 'checkpoints'}"),
        )
    )


def test_ppo_smoke(setup, ppo_run):
    m = ppo_run
    on_disk, steps = check_run(m, setup)
    assert [s["step"] for s in steps] == [1, 2]
    for key in (
        "reward",
        "reward_with_kl",
        "kl",
        "entropy",
        "response_length",
        "clip_fraction",
        "value_loss",
        "policy_loss",
        "tokens_per_s",
        "time_generation",
        "time_scoring",
        "time_training",
    ):
        assert all(math.isfinite(s[key]) for s in steps), key
    assert on_disk["outputs"]["value_model"]["sha256"]
    # rollout: auto takes transformers on a CPU (vLLM was no faster here, and its start-up is extra).
    assert on_disk["notes"]["rollout"] == {
        "engine": "hf",
        "requested": "auto",
        "reason": on_disk["notes"]["rollout"]["reason"],
    }
    # The lineage reaches the reward run, and through it the model the reward model was trained from.
    assert any("reward_model: reward" in line for line in runs.lineage(m["path"]))


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.skipif(not vllm_available()[0], reason=f"vLLM not importable: {vllm_available()[1]}")
def test_ppo_smoke_with_vllm_rollouts(setup, vllm_tiny_model):  # noqa: F811
    """rollout=vllm: one engine for the run; the manifest says which engine sampled and how the adapter reached it."""
    reward_run = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={vllm_tiny_model}",
                f"data.train={setup['tmp'] / 'pairs.jsonl'}",
                f"runs_dir={setup['runs']}",
                "max_length=64",
                "training.max_steps=1",
                "training.per_device_train_batch_size=2",
                "lora.r=4",
            ],
        )
    )
    on_vllm = {**setup, "model": vllm_tiny_model, "reward": reward_run["path"]}
    ckpt = setup["tmp"] / "checkpoints-vllm"
    engine = ["algorithm=ppo", "rollout=vllm", "vllm.enforce_eager=true", "vllm.kv_cache_gib=1", "vllm.max_num_seqs=8"]
    m = ppo.run(
        load_config(ppo.Config, None, overrides(on_vllm, *engine, "checkpoint_every=1", f"checkpoint_dir={ckpt}"))
    )
    on_disk, steps = check_run(m, on_vllm)
    rollout = on_disk["notes"]["rollout"]
    assert rollout["engine"] == "vllm" and rollout["requested"] == "vllm" and rollout["platform"] == "cpu"
    assert rollout["policy_update"] == "merge" and rollout["vllm_version"].startswith("vllm")  # vllm.lora=auto on a CPU
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["time_generation"] > 0 and math.isfinite(s["reward"]) and 0 < s["response_length"] <= 6 for s in steps)
    # Resumed with a fresh engine, step 2 samples and learns what it did without stopping (the sampling seed
    # comes from torch's RNG, which the checkpoint holds; the engine gets the checkpoint's adapter).
    resumed = ppo.run(load_config(ppo.Config, None, overrides(on_vllm, *engine, f"resume_from={ckpt / 'step-1'}")))
    a, b = steps[1:], step_lines(resumed)
    assert [x["step"] for x in b] == [2]
    for key in ("reward", "kl", "policy_loss", "value_loss", "response_length"):
        assert [x[key] for x in b] == pytest.approx([x[key] for x in a], abs=1e-5), key


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_trl_algorithms_smoke_and_resume(setup, algorithm, capsys):
    ckpt = setup["tmp"] / f"checkpoints-{algorithm}"
    m = ppo.run(
        load_config(
            ppo.Config, None, overrides(setup, f"algorithm={algorithm}", "checkpoint_every=1", f"checkpoint_dir={ckpt}")
        )
    )
    on_disk, steps = check_run(m, setup)
    logged = [s for s in steps if "loss" in s]
    assert len(logged) == 2 and all(math.isfinite(s["loss"]) and math.isfinite(s["reward"]) for s in logged)
    for key in ("reward_with_kl", "kl", "entropy", "time_generation", "time_scoring", "time_training"):
        assert key in logged[-1], key
    assert on_disk["metrics"]["total_time_generation_s"] > 0
    # transformers' checkpoint after step 1, published as align's step-1 (the last step needs none), and
    # the trainer's scratch copy gone with the run's scratch directory.
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-1"]
    assert {"checkpoint.json", "trainer_state.json", "adapter_model.safetensors", "optimizer.pt"} <= {
        p.name for p in (ckpt / "step-1").iterdir()
    }
    assert not (runs.Path(m["path"]) / "trainer").exists()

    # Resumed from it, step 2 samples the same prompts with the same RNG and learns what it did without stopping.
    resumed = ppo.run(
        load_config(ppo.Config, None, overrides(setup, f"algorithm={algorithm}", f"resume_from={ckpt / 'step-1'}"))
    )
    again = [s for s in step_lines(resumed) if "loss" in s]
    assert [s["step"] for s in again] == [2]
    for key in ("loss", "reward", "kl", "entropy", "completions/mean_length"):
        assert again[0][key] == pytest.approx(logged[1][key], abs=1e-5), key
    assert runs.read_manifest(resumed["path"])["metrics"]["first_step"] == 2
    assert any(i["role"] == "resume_from" for i in runs.read_manifest(resumed["path"])["inputs"])
    # The same directory refuses another algorithm or other TRL settings (exit 2, nothing written).
    other = "grpo" if algorithm == "rloo" else "rloo"
    assert f"algorithm={algorithm}" in refused(setup, capsys, f"algorithm={other}", f"resume_from={ckpt / 'step-1'}")
    assert "training" in refused(
        setup, capsys, f"algorithm={algorithm}", "training.max_grad_norm=0.5", f"resume_from={ckpt / 'step-1'}"
    )


def refused(setup, capsys, *extra):
    before = sorted(p.name for p in setup["runs"].iterdir())
    code = main(["ppo", *overrides(setup, *extra)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert sorted(p.name for p in setup["runs"].iterdir()) == before, "a run directory was written"
    return err


def test_refuses_missing_reward_model(setup, capsys):
    assert "does not exist" in refused(setup, capsys, f"reward_model={setup['tmp'] / 'no-such-run'}")


def test_refuses_a_policy_as_reward_model(setup, capsys):
    err = refused(setup, capsys, f"reward_model={setup['model']}")
    assert "not a one-output sequence classifier" in err


def test_refuses_a_run_that_is_not_a_reward_model(setup, ppo_run, capsys):
    assert "not a reward model" in refused(setup, capsys, f"reward_model={ppo_run['path']}")


def test_refuses_a_reward_model_on_another_tokenizer(setup, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    other = setup["tmp"] / "other-tokenizer-rm"
    if not other.exists():
        model = AutoModelForSequenceClassification.from_pretrained(setup["model"], num_labels=1)
        model.save_pretrained(other)
        tokenizer = AutoTokenizer.from_pretrained(setup["model"])
        tokenizer.add_tokens(["<extra-token>"])
        tokenizer.save_pretrained(other)
    err = refused(setup, capsys, f"reward_model={other}")
    assert "different tokenizer" in err and "vocabulary" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["batch_size=5", "num_generations=2"], "not divisible by num_generations"),
        (["algorithm=grpo", "num_generations=1"], "num_generations must be >= 2"),
        (["algorithm=ppo", "training.learning_rate=1e-4"], "ppo:"),
        (["algorithm=rloo", "training.beta=0.1"], "kl_coef"),
        (["lora.enabled=false"], "adapter disabled"),
        (["ppo.minibatch_size=8"], "minibatch_size"),
        (["max_new_tokens=200"], "no room for the prompt"),
        (["algorithm=rloo", "rollout=vllm"], "rollout=vllm applies to algorithm=ppo"),
        (["rollout=tensorrt"], "rollout"),
    ],
)
def test_refuses_impossible_settings(setup, capsys, extra, message):
    assert message in refused(setup, capsys, *extra)


def test_refuses_vllm_rollout_without_vllm(setup, capsys, monkeypatch):
    import align.rollout.engines

    monkeypatch.setattr(align.rollout.engines, "vllm_available", lambda: (False, "the vllm package is not installed"))
    err = refused(setup, capsys, "rollout=vllm")
    assert "rollout=vllm but the vllm package is not installed; or set rollout=hf" in err


@pytest.mark.skipif(not vllm_available()[0], reason=f"vLLM not importable: {vllm_available()[1]}")
def test_refuses_merged_vllm_rollouts_in_a_spawned_engine(setup, capsys):
    err = refused(setup, capsys, "rollout=vllm", "vllm.lora=merge", "vllm.multiprocessing=true")
    assert "vllm.lora=merge" in err and "vllm.multiprocessing=false" in err


def test_ppo_resume_gives_the_same_steps_as_not_stopping(setup, ppo_run):
    ckpt = setup["tmp"] / "checkpoints"
    # The smoke run (2 steps) checkpointed after step 1 only: the last step needs none.
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-1"]
    resumed = ppo.run(load_config(ppo.Config, None, overrides(setup, f"resume_from={ckpt / 'step-1'}")))
    a, b = step_lines(ppo_run)[1:], step_lines(resumed)
    assert [x["step"] for x in b] == [2]
    for key in ("reward", "kl", "policy_loss", "value_loss", "response_length"):
        assert [x[key] for x in b] == pytest.approx([x[key] for x in a], abs=1e-5), key
    assert any(i["role"] == "resume_from" for i in runs.read_manifest(resumed["path"])["inputs"])


def test_refuses_resume_with_other_settings(setup, ppo_run, capsys):
    ckpt = setup["tmp"] / "checkpoints" / "step-1"
    assert "batch_size" in refused(setup, capsys, f"resume_from={ckpt}", "batch_size=2", "num_generations=1")
    assert "not before steps=1" in refused(setup, capsys, f"resume_from={ckpt}", "steps=1")
    assert "not an `align ppo` checkpoint" in refused(setup, capsys, f"resume_from={setup['tmp']}")
    assert "algorithm=ppo" in refused(setup, capsys, f"resume_from={ckpt}", "algorithm=rloo")
    # Another held-out split of the same file trains on other prompts.
    assert "other prompts" in refused(setup, capsys, f"resume_from={ckpt}", "eval.prompts=0")


def test_held_out_prompts_from_their_own_file(setup):
    """`eval.path`: the prompt set trains whole and the held-out prompts come from the other file,
    recorded as an input; a file sharing a prompt with the training set is refused before any run."""
    held = write_jsonl(setup["tmp"] / "held.jsonl", [{"prompt": f"Describe place {i}"} for i in range(5)])
    manifest = ppo.run(
        load_config(
            ppo.Config, None, overrides(setup, "algorithm=ppo", "steps=1", f"eval.path={held}", "eval.prompts=3")
        )
    )
    on_disk = runs.read_manifest(manifest["path"])
    assert on_disk["notes"]["prompts"] == {"train": 8, "held_out": 3}
    assert on_disk["metrics"]["rm_eval_prompts"] == 3
    assert {i["role"]: i for i in on_disk["inputs"]}["eval_prompts"]["path"] == str(held.resolve())
    # The replies behind the held-out figures are kept, one line per prompt, and match the metrics.
    assert on_disk["outputs"]["held_out_replies"]["path"] == "held_out_replies.jsonl"
    rows = [json.loads(x) for x in (Path(manifest["path"]) / "held_out_replies.jsonl").read_text().splitlines()]
    assert [r["prompt"][-1]["content"] for r in rows] == [f"Describe place {i}" for i in range(3)]
    assert sum(r["policy_reward"] for r in rows) / 3 == pytest.approx(on_disk["metrics"]["rm_policy_mean_reward"])
    assert sum(r["reference_reward"] for r in rows) / 3 == pytest.approx(on_disk["metrics"]["rm_reference_mean_reward"])
    assert all(isinstance(r["policy"], str) and isinstance(r["reference"], str) for r in rows)

    mixed = write_jsonl(
        setup["tmp"] / "mixed.jsonl", [{"prompt": "Describe place 0"}, {"prompt": "Tell me about topic 3"}]
    )
    before = sorted(p.name for p in setup["runs"].iterdir())
    with pytest.raises(AlignError, match=r"1 of its 2 held-out prompts are also training prompts"):
        ppo.run(load_config(ppo.Config, None, overrides(setup, "algorithm=ppo", f"eval.path={mixed}")))
    assert sorted(p.name for p in setup["runs"].iterdir()) == before
