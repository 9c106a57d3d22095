"""Checkpoints, resume and evaluation during training for sft, reward and dpo (align/core/checkpoints.py).

A real `align sft` / `align dpo` process is SIGKILLed once a checkpoint is complete and continued with
`resume_from=latest`: its later steps must log the losses of a run that never stopped. The tiny model
trains a step in milliseconds, so the killed process is paced (a sleep after each optimizer step, through
transformers' callback handler) to be caught between its checkpoint and its end; nothing else is changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align.cli import main
from align.core import runs
from align.core.errors import AlignError
from tests.conftest import build_tiny_model

REPO = Path(__file__).resolve().parents[2]
STEPS, SAVE = 4, 2
COMMON = [
    "max_length=64",
    f"training.max_steps={STEPS}",
    "training.logging_steps=1",
    "training.per_device_train_batch_size=2",
    "training.save_strategy=steps",
    f"training.save_steps={SAVE}",
]
# Run as `python -c PACED <align args>`: align's CLI with a pause after every optimizer step.
PACED = """
import sys, time
from transformers.trainer_callback import CallbackHandler
step_end = CallbackHandler.on_step_end
def paced(self, *args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return step_end(self, *args, **kwargs)
CallbackHandler.on_step_end = paced
from align.cli import main
sys.exit(main(sys.argv[2:]))
"""


def stage_args(stage, tiny_model, pairs, runs_dir, *extra):
    data = [f"data.train={pairs}"] + (["data.format=preference-chosen"] if stage == "sft" else [])
    return [stage, f"model={tiny_model}", *data, *COMMON, f"runs_dir={runs_dir}", *extra]


def losses(run_path) -> dict[int, float]:
    lines = [json.loads(line) for line in (Path(run_path) / runs.METRICS).read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def error_line(capsys) -> str:
    """The one error line of a refused command (progress bars of data measured before it may precede it)."""
    err = capsys.readouterr().err
    errors = [
        line[line.index("align: error: ") :]
        for line in err.replace("\r", "\n").splitlines()
        if "align: error: " in line
    ]
    assert len(errors) == 1, err
    return errors[0]


def kill_after_checkpoint(args, runs_dir: Path, step: int) -> Path:
    """Start `align ARGS` paced, SIGKILL it once its checkpoint at `step` is complete; its partial directory."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PACED, "0.5", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = f".*.partial-{proc.pid}/{runs.CHECKPOINTS_DIR}/checkpoint-{step}/{runs.CHECKPOINT_INFO}"
    deadline = time.time() + 240
    try:
        while not list(runs_dir.glob(marker)):
            if proc.poll() is not None:
                pytest.fail(
                    f"align exited ({proc.returncode}) before its checkpoint at step {step}: "
                    f"{proc.stderr.read()[-2000:]}"
                )
            if time.time() > deadline:
                pytest.fail(f"no checkpoint at step {step} after 240 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    (partial,) = runs_dir.glob(f".*.partial-{proc.pid}")
    return partial


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_killed_run_resumes_with_the_losses_of_a_run_that_never_stopped(stage, tiny_model, easy_pairs, tmp_path):
    runs_dir = tmp_path / "runs"
    partial = kill_after_checkpoint(stage_args(stage, tiny_model, easy_pairs, runs_dir, "name=killed"), runs_dir, SAVE)
    # The next run in runs_dir sweeps stale partial directories, but not one holding a checkpoint.
    assert main(stage_args(stage, tiny_model, easy_pairs, runs_dir, "name=straight")) == 0
    assert partial.is_dir()

    assert main(stage_args(stage, tiny_model, easy_pairs, runs_dir, "resume_from=latest", "name=resumed")) == 0
    straight, resumed = losses(runs_dir / "straight"), losses(runs_dir / "resumed")
    assert sorted(straight) == sorted(resumed) == list(range(1, STEPS + 1))
    # Steps after the checkpoint were trained again by the resumed process; those up to it are carried over.
    for step in range(1, STEPS + 1):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), (step, straight, resumed)
    manifest = runs.read_manifest(runs_dir / "resumed")
    assert manifest["notes"]["resume"]["step"] == SAVE
    assert manifest["notes"]["resume"]["stopped_run"] == partial.name
    assert manifest["metrics"]["first_step"] == SAVE + 1 and manifest["metrics"]["global_step"] == STEPS
    (record,) = [i for i in manifest["inputs"] if i["role"] == "resume_from"]
    assert record["step"] == SAVE and record["path"].endswith(f"checkpoint-{SAVE}")
    # The stopped run's checkpoints moved into the resumed run (which published them), and it is gone.
    assert not partial.exists()
    assert [p.name for p in runs.resumable_checkpoints(runs_dir / "resumed")] == ["checkpoint-2", "checkpoint-4"]
    assert manifest["notes"]["checkpoints"] == {"path": "checkpoints", "steps": [2, 4], "kept": True}


@pytest.mark.slow
def test_reward_resumes_from_a_kept_checkpoint_path(tiny_model, easy_pairs, tmp_path):
    runs_dir = tmp_path / "runs"
    assert main(stage_args("reward", tiny_model, easy_pairs, runs_dir, "training.max_steps=4", "name=a")) == 0
    checkpoint = runs_dir / "a" / runs.CHECKPOINTS_DIR / "checkpoint-2"
    # Settings that do not change what is trained may differ: here what is kept and the held-out scoring batch.
    assert (
        main(
            stage_args(
                "reward",
                tiny_model,
                easy_pairs,
                runs_dir,
                "training.max_steps=4",
                "name=b",
                f"resume_from={checkpoint}",
                "keep_checkpoints=false",
                "eval_batch_size=3",
            )
        )
        == 0
    )
    first, resumed = losses(runs_dir / "a"), losses(runs_dir / "b")
    assert sorted(resumed) == [1, 2, 3, 4]
    assert [resumed[s] for s in (3, 4)] == pytest.approx([first[s] for s in (3, 4)], rel=1e-5)
    assert runs.read_manifest(runs_dir / "b")["notes"]["resume"] == {
        "checkpoint": str(checkpoint.resolve()),
        "step": 2,
        "stopped_run": None,
    }
    assert checkpoint.is_dir()  # a checkpoint given by path is read where it lies


@pytest.mark.slow
def test_interrupted_run_keeps_its_checkpoints_and_resume_checks_settings(
    tiny_model, easy_pairs, tmp_path, capsys, monkeypatch
):
    from transformers.trainer_callback import CallbackHandler

    runs_dir = tmp_path / "runs"
    step_end = CallbackHandler.on_step_end

    def interrupt_at_3(self, args, state, control):
        if state.global_step == 3:
            raise KeyboardInterrupt("signal 15")  # what align's SIGTERM handler raises
        return step_end(self, args, state, control)

    monkeypatch.setattr(CallbackHandler, "on_step_end", interrupt_at_3)
    assert main(stage_args("sft", tiny_model, easy_pairs, runs_dir, "name=cut")) == 130
    monkeypatch.setattr(CallbackHandler, "on_step_end", step_end)
    (partial,) = runs_dir.glob(".cut.partial-*")
    assert [p.name for p in runs.resumable_checkpoints(partial)] == ["checkpoint-2"]
    capsys.readouterr()

    def refused(*extra):
        assert main(stage_args("sft", tiny_model, easy_pairs, runs_dir, *extra)) == 2
        return error_line(capsys)

    err = refused("resume_from=latest", "training.learning_rate=1e-3")
    assert "training.learning_rate=0.0002" in err and "training.learning_rate=0.001" in err
    assert "training examples" in refused("resume_from=latest", "data.max_examples=20")
    build_tiny_model(tmp_path / "other", seed=1)  # other weights, same tokenizer
    assert "models" in refused(f"resume_from={partial}", f"model={tmp_path / 'other'}")
    assert main(stage_args("dpo", tiny_model, easy_pairs, runs_dir, "resume_from=latest")) == 2
    assert "no checkpoint of a stopped `align dpo` run" in capsys.readouterr().err
    assert "not a complete align checkpoint" in refused(f"resume_from={tmp_path}")
    assert "training.resume_from_checkpoint" in refused("training.resume_from_checkpoint=x")
    # Nothing was written by the refused runs, and the cut run's checkpoints are still there.
    assert sorted(p.name for p in runs_dir.iterdir()) == [partial.name]
    assert runs.resumable_checkpoints(partial)


@pytest.mark.slow
def test_eval_during_training_logs_eval_loss_to_metrics_and_tensorboard(tiny_model, easy_pairs, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs_dir = tmp_path / "runs"
    assert (
        main(
            [
                "sft",
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                "data.format=preference-chosen",
                "data.test_fraction=0.25",
                "max_length=64",
                "training.max_steps=4",
                "training.logging_steps=1",
                "training.eval_strategy=steps",
                "training.eval_steps=2",
                "training.report_to=[tensorboard]",
                "training.save_strategy=steps",
                "training.save_steps=2",
                "keep_checkpoints=false",
                f"runs_dir={runs_dir}",
                "name=ev",
            ]
        )
        == 0
    )
    run = runs_dir / "ev"
    lines = [json.loads(line) for line in (run / runs.METRICS).read_text().splitlines()]
    evals = [r for r in lines if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(r["eval_loss"] == r["eval_loss"] for r in evals)
    accumulator = EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("eval/loss")] == [2, 4]
    assert [e.value for e in accumulator.Scalars("eval/loss")] == pytest.approx([r["eval_loss"] for r in evals])
    manifest = runs.read_manifest(run)
    held_out = manifest["notes"]["data"]["examples_held_out"]
    assert manifest["notes"]["eval_during_training"] == {"split": "test", "rows": held_out} and held_out > 0
    # keep_checkpoints=false: written during training, deleted once the run completed.
    assert manifest["notes"]["checkpoints"] == {"path": None, "steps": [2, 4], "kept": False}
    assert not (run / runs.CHECKPOINTS_DIR).exists() and not (run / "trainer").exists()


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_eval_during_training_needs_a_held_out_split(stage, tiny_model, easy_pairs, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    assert main(stage_args(stage, tiny_model, easy_pairs, runs_dir, "training.eval_strategy=steps")) == 2
    err = error_line(capsys)
    assert "training.eval_strategy=steps" in err and "data.test_fraction" in err, err
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_choosing_a_checkpoint_on_the_test_split_is_refused(tiny_model, easy_pairs, tmp_path, capsys):
    assert (
        main(
            stage_args(
                "dpo",
                tiny_model,
                easy_pairs,
                tmp_path / "runs",
                "data.test_fraction=0.25",
                "training.eval_strategy=steps",
                "training.load_best_model_at_end=true",
            )
        )
        == 2
    )
    assert "data.validation_fraction" in capsys.readouterr().err


def test_a_stopped_run_of_the_same_name_is_set_aside_and_taken_over(tmp_path):
    """A multi-process run's partial directory has no pid in its name, so the resumed run (same name) would
    open the very same directory: the stopped one is set aside under its writer's pid, then taken over."""
    import platform
    from types import SimpleNamespace

    from align.core import checkpoints, partials

    stopped = tmp_path / ".foo.partial"
    checkpoint = stopped / runs.CHECKPOINTS_DIR / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    now = {
        "stage": "sft",
        "settings": {"seed": 1},
        "model_sha256": ["m"],
        "examples": 3,
        "examples_sha256": "e",
        "processes": 2,
    }
    (checkpoint / runs.CHECKPOINT_INFO).write_text(json.dumps({**now, "step": 2, "written": "2026-12-06T08:00:00"}))
    (checkpoint / checkpoints.METRICS_COPY).write_text('{"step": 1, "loss": 1.5}\n{"step": 2, "loss": 1.25}\n')
    (stopped / partials.OWNER).write_text(json.dumps({"host": platform.node(), "pid": 4242, "stopped": True}))
    cut = stopped / runs.CHECKPOINTS_DIR / "checkpoint-3"  # killed while writing it: no checkpoint.json
    cut.mkdir()
    (cut / "optimizer.pt").write_bytes(b"half")

    resume = checkpoints.plan(SimpleNamespace(resume_from="latest", runs_dir=str(tmp_path)), now)
    assert (resume.checkpoint, resume.step, resume.stopped_run) == (checkpoint, 2, stopped)
    run = runs.Run("sft", {}, tmp_path, name="foo")
    run.path = stopped  # what a multi-process run opens (runs.Run drops the pid when world_size > 1)
    run._open()
    assert (tmp_path / ".foo.partial-4242" / runs.CHECKPOINTS_DIR / "checkpoint-2").is_dir()
    assert checkpoints.take_over(run, resume) == str(stopped / runs.CHECKPOINTS_DIR / "checkpoint-2")
    assert (stopped / runs.CHECKPOINTS_DIR / "checkpoint-2" / runs.CHECKPOINT_INFO).is_file()
    assert not (stopped / runs.CHECKPOINTS_DIR / "checkpoint-3").exists()
    assert not (tmp_path / ".foo.partial-4242").exists()
    assert losses(stopped) == {1: 1.5, 2: 1.25}
    # Another setting: refused, naming it.
    with pytest.raises(AlignError, match="seed=1, this run has seed=2"):
        checkpoints.plan(
            SimpleNamespace(resume_from=str(stopped), runs_dir=str(tmp_path)), {**now, "settings": {"seed": 2}}
        )


@pytest.mark.slow
def test_two_processes_write_complete_checkpoints_and_resume_from_one(tiny_model, easy_pairs, tmp_path):
    """DDP over gloo (tests/core/test_multiprocess.py): every rank writes its RNG state into a checkpoint before
    rank 0 completes it; a two-process run resumed from one logs the steps the first run logged after it."""
    from tests.core.test_multiprocess import free_port

    runs_dir = tmp_path / "runs"

    def launch(*extra):
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            "-m",
            "align",
            *stage_args(
                "sft",
                tiny_model,
                easy_pairs,
                runs_dir,
                "training.max_steps=3",
                "lora.dropout=0",
                "training.save_steps=1",
                *extra,
            ),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    launch("name=a")
    checkpoint = runs_dir / "a" / runs.CHECKPOINTS_DIR / "checkpoint-1"
    assert sorted(p.name for p in checkpoint.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert json.loads((checkpoint / runs.CHECKPOINT_INFO).read_text())["processes"] == 2
    launch("name=b", f"resume_from={checkpoint}")
    first, resumed = losses(runs_dir / "a"), losses(runs_dir / "b")
    assert sorted(resumed) == [1, 2, 3]
    assert [resumed[s] for s in (2, 3)] == pytest.approx([first[s] for s in (2, 3)], rel=1e-5)
    assert sorted(p.name for p in runs_dir.iterdir()) == ["a", "b"]
