"""The multi-process path run for real: two processes (DDP over gloo on this CPU) of sft, reward
and dpo on the tiny model. One run directory each, written by rank 0 alone, with a complete
manifest, and per-step losses equal to a single process with the same global batch.

Launcher: `accelerate launch --multi_gpu --num_processes 2` (torchrun underneath; without a GPU align
sets `use_cpu`, so the trainer does DDP over gloo). `accelerate launch --cpu --num_processes 2` is
not used: on one machine accelerate's CPU launcher starts a single process (it needs mpirun for more).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from align.core import runs
from align.core.config import load_config
from align.stages import dpo, reward, sft
from tests.stages.test_training_stages import assert_complete_manifest, hh_sample

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"sft": sft, "reward": reward, "dpo": dpo}
# Same pairs, steps and global batch (2 processes x 2 = 1 process x 4); LoRA dropout off, since its
# random masks differ between one process and two.
COMMON = ["max_length=128", "training.max_steps=3", "training.logging_steps=1", "lora.dropout=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_lines(run_path) -> list[dict]:
    lines = [json.loads(line) for line in (Path(run_path) / runs.METRICS).read_text().splitlines()]
    return [line for line in lines if "loss" in line]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_two_processes_write_one_run_with_single_process_losses(stage, tiny_model, repo_data, tmp_path):
    data = hh_sample(repo_data, tmp_path, n=64)
    args = [f"model={tiny_model}", f"data.train={data}", *COMMON]
    if stage == "sft":
        args.append("data.format=preference-chosen")
    launched = tmp_path / "launched"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
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
        stage,
        *args,
        f"runs_dir={launched}",
        "training.per_device_train_batch_size=2",
    ]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"{stage}: run written to") == 1, result.stdout  # the summary, by rank 0 alone

    # One finished run directory, nothing partial left by either rank.
    entries = sorted(p.name for p in launched.iterdir())
    assert len(entries) == 1 and not entries[0].startswith("."), entries
    run_path = launched / entries[0]
    manifest = assert_complete_manifest(runs.read_manifest(run_path), stage)
    assert manifest["host"]["processes"] == 2
    # Metrics written once (by rank 0), one line per logging step.
    assert [line["step"] for line in step_lines(run_path)] == [1, 2, 3]

    single = STAGES[stage].run(
        load_config(
            STAGES[stage].Config,
            None,
            [*args, f"runs_dir={tmp_path / 'single'}", "training.per_device_train_batch_size=4"],
        )
    )
    assert single["host"]["processes"] == 1
    launched_steps, single_steps = step_lines(run_path), step_lines(single["path"])
    assert [s["loss"] for s in launched_steps] == pytest.approx([s["loss"] for s in single_steps], rel=1e-4)
    assert manifest["metrics"]["train_loss"] == pytest.approx(single["metrics"]["train_loss"], rel=1e-4)
    # The same examples per step (2 x 2 = 4): the same fraction of an epoch after each step.
    assert [s["epoch"] for s in launched_steps] == pytest.approx([s["epoch"] for s in single_steps])
