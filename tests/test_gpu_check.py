"""scripts/gpu_check.sh: the one-call GPU check, run here in its --cpu mode (the same pipeline, expecting
cpu/float32 in every stage's notes.device), and its manifest check failing where it must."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["sft", "reward", "dpo", "ppo", "generate", "evaluate_policy"]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402


@pytest.mark.slow
def test_cpu_mode_runs_every_stage_and_writes_the_json(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gpu_check: PASS (cpu)" in done.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] is True and "failed" not in report
    assert list(report["stages"]) == STAGES
    for stage, result in report["stages"].items():
        assert (result["device_type"], result["dtype"]) == ("cpu", "float32"), stage
        assert result["wall_s"] > 0 and result["world_size"] == 1
        assert result["peak_memory_bytes"] is None  # recorded on CUDA only
    for stage in ("sft", "reward", "dpo", "generate"):
        assert report["stages"][stage]["tokens_per_s"] > 0, stage
    for package in ("torch", "transformers", "trl"):
        assert report["versions"][package]
    assert report["versions"]["unmet_requirements"] == []
    assert report["machine"]["cuda_available"] is False
    assert sorted(p.stem for p in tmp_path.glob("*.log")) == sorted(STAGES)  # each stage's output beside the JSON
    assert (tmp_path / "sft.log").read_text().startswith("$ python -m align sft ")


def write_run(runs: Path, stage: str, device: dict | None) -> None:
    run = runs / stage
    run.mkdir(parents=True)
    notes = {"device": device} if device is not None else {}
    (run / "manifest.json").write_text(json.dumps({"stage": stage, "notes": notes, "metrics": {"tokens_per_s": 12.5}}))


def test_stage_on_the_wrong_device_fails_naming_it(tmp_path, monkeypatch):
    """A stage that ran on the CPU in float32 fails a CUDA check with its name and what it ran on."""
    ok = subprocess.CompletedProcess([], 0, "", "")
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *a, **k: ok)
    write_run(
        tmp_path,
        "sft",
        {"type": "cpu", "name": "cpu", "dtype": "float32", "attn_implementation": "sdpa", "world_size": 1},
    )
    with pytest.raises(gpu_check.CheckFailed) as failed:
        gpu_check.run_stage("sft", ["sft"], tmp_path, "cuda")
    assert failed.value.stage == "sft" and "ran on cpu/float32, expected cuda/bfloat16" in failed.value.reason
    result = gpu_check.run_stage("sft", ["sft"], tmp_path, "cpu")
    assert result["dtype"] == "float32" and result["tokens_per_s"] == 12.5

    write_run(tmp_path, "dpo", None)
    with pytest.raises(gpu_check.CheckFailed, match="no notes.device"):
        gpu_check.run_stage("dpo", ["dpo"], tmp_path, "cpu")


def test_a_failing_stage_is_named_with_its_last_error_line(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 2, "", "lots of log\nalign: error: 'data.train' does not exist\n")
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(gpu_check.CheckFailed) as caught:
        gpu_check.run_stage("reward", ["reward"], tmp_path, "cpu")
    assert caught.value.reason.endswith("exited 2: align: error: 'data.train' does not exist")


def test_unknown_option_is_refused():
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--gpu"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash scripts/gpu_check.sh [--cpu]" in done.stderr
