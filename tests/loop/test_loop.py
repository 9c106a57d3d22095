"""`align loop` end to end on a tiny model against the real local Argilla with simulated annotators.

The tiny model writes nonsense, which is all these tests need: the rubric still tells replies apart, the
annotators (real Argilla users answering through the REST API) label them, DPO trains, the evaluation
and gates run, and the report is written. Whether a round makes a real model better is the demo's job
(recipes/brand_voice, README), not a test's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from align.cli import main as cli_main
from align.core import runs
from align.loop.state import LoopState

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ROUND_STEPS = ["generate", "pairs", "push", "simulate", "wait", "pull", "labels", "dpo", "evaluate"]


def loop_yaml(tmp: Path, tiny_model: Path, argilla, name: str, gates: list[dict] | None = None, **extra) -> Path:
    gates_file = tmp / f"{name}-gates.yaml"
    gates_file.write_text(yaml.safe_dump({"gates": gates or [
        {"name": "replies stay short", "metric": "brand.length_words.policy.mean", "op": "<=", "value": 1000},
    ]}))
    config = {
        "recipe": name,
        "loop_dir": str(tmp / name),
        "rounds": 2,
        "policy": str(tiny_model),
        "gates": str(gates_file),
        "annotators": "simulated",
        "argilla": {"credentials": str(argilla.credentials)},
        "wait": {"poll_seconds": 0.5},
        "train": {"stages": ["dpo"], "labels": "all", "min_pairs": 2},
        "generate": {"config": "configs/generate/default.yaml", "prompts": "recipes/brand_voice/prompts_train.jsonl",
                     "max_prompts": 6, "engine": "hf", "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 12}},
        "pairs": {"selection": "random"},
        "push": {"guidelines": "brand_voice", "annotators_per_record": 2},
        "simulate": {"annotators": "recipes/brand_voice/annotators.yaml", "judge": "brand_voice",
                     "rubric": "recipes/brand_voice/rubric.yaml", "tie_margin": 0.0},
        "dpo": {"config": "configs/dpo/default.yaml", "max_length": 128, "data": {"test_fraction": 0.0},
                "training": {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                             "logging_steps": 1}},
        "evaluate": {"config": "configs/evaluate/policy.yaml", "engine": "hf", "sampling": {"max_tokens": 12},
                     "harmful": {"max_prompts": 3}, "safe": {"max_prompts": 3}, "brand": {"max_prompts": 4},
                     "bootstrap": {"resamples": 200}},
    }
    for key, value in extra.items():
        config[key] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_rounds_promote_write_the_report_and_lineage(argilla, tiny_model, tmp_path, capsys):
    config = loop_yaml(tmp_path, tiny_model, argilla, "two-rounds")
    assert cli_main(["loop", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    loop_dir = tmp_path / "two-rounds"
    state = LoopState.load(loop_dir)
    assert state.data["phase"] == "finished"
    assert [r["round"] for r in state.rounds] == [0, 1, 2]
    for rnd in state.rounds[1:]:
        assert [s for s in ROUND_STEPS if rnd["steps"].get(s, {}).get("status") == "done"] == ROUND_STEPS
        assert rnd["promoted"] is True
    # The current policy is round 2's DPO run, trained from round 1's.
    current = Path(state.abs(state.current["policy"]))
    assert current == loop_dir / "round-2" / "dpo"
    manifest = runs.read_manifest(current)
    model_input = next(i for i in manifest["inputs"] if i["role"] == "model")
    assert Path(model_input["path"]) == (loop_dir / "round-1" / "dpo").resolve()
    # Round 2 trains on both rounds' labels; lineage reaches the pulls, pushes and the base model.
    labels = runs.read_manifest(loop_dir / "round-2" / "labels")
    assert sorted(labels["notes"]["rounds"]) == ["1", "2"]
    assert labels["metrics"]["records"] == 12
    tree = "\n".join(runs.lineage(current))
    for needle in ("annotate pull", "annotate push", "pairs", "generate", "loop labels", str(tiny_model)):
        assert needle in tree
    # Round 2's evaluation reused round 1's policy replies as its baseline: one model generated.
    ev = runs.read_manifest(loop_dir / "round-2" / "evaluate")
    assert ev["notes"]["baseline_replies_reused_from"] == str(loop_dir / "round-1" / "evaluate")
    assert "baseline_generation_s" not in ev["metrics"]
    # Every label was made by simulated annotators, and the pull says so.
    pull = runs.read_manifest(loop_dir / "round-1" / "pull")
    assert pull["metrics"]["simulated_votes"] == pull["metrics"]["votes"] > 0
    assert (loop_dir / "report.html").is_file()
    assert "brand score" in out and str((loop_dir / "report.html").resolve()) in out
    # Running the finished loop again does nothing new.
    before = json.loads((loop_dir / "loop.json").read_text())["rounds"]
    assert cli_main(["loop", "--config", str(config)]) == 0
    assert json.loads((loop_dir / "loop.json").read_text())["rounds"] == before
    status = subprocess.run([sys.executable, "-m", "align", "loop", "status", str(loop_dir)], capture_output=True,
                            text=True, cwd=REPO)
    assert status.returncode == 0 and "round 2: promoted" in status.stdout and "finished" in status.stdout


KILLER = """
import os, sys, time
from align.cli import main

def hang():
    print("KILL", flush=True)
    time.sleep(600)

mode, config = sys.argv[1], sys.argv[2]
if mode == "between-push-and-pull":  # the labels are in Argilla, not pulled yet
    from align.annotate import pull
    pull.run = lambda cfg: hang()
elif mode == "during-pull":  # the label journal's second batch is half on disk
    from align.annotate import journal, pull
    pull.JOURNAL_BATCH = 3
    real_write, calls = journal.Journal._write, []
    def write(self, f, data):
        calls.append(1)
        if len(calls) == 2:
            f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
            hang()
        real_write(self, f, data)
    journal.Journal._write = write
elif mode == "during-training":  # DPO has taken one optimizer step of two
    import trl
    real_step, calls = trl.DPOTrainer.training_step, []
    def training_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            hang()
        return real_step(self, *args, **kwargs)
    trl.DPOTrainer.training_step = training_step
sys.exit(main(["loop", "--config", config]))
"""


def kill_at(mode: str, config: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLER, mode, str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        for line in proc.stdout:
            if line.strip() == "KILL":
                os.kill(proc.pid, signal.SIGKILL)
                break
        else:
            raise AssertionError(f"{mode}: the loop ended without reaching the kill point:\n{proc.stderr.read()[-3000:]}")
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_at_three_points_then_resume_loses_no_label_and_redoes_no_step(argilla, tiny_model, tmp_path):
    config = loop_yaml(tmp_path, tiny_model, argilla, "killed", rounds=1)
    loop_dir = tmp_path / "killed"
    kill_at("between-push-and-pull", config)
    kill_at("during-pull", config)
    kill_at("during-training", config)
    state = LoopState.load(loop_dir)
    steps = state.rounds[1]["steps"]
    assert steps["dpo"]["status"] == "started" and steps["pull"]["status"] == "done"
    assert any(p.name.startswith(".dpo.partial") for p in (loop_dir / "round-1").iterdir())  # killed mid-training
    finished_before = {name: runs.read_manifest(loop_dir / "round-1" / name)["created"]
                       for name in ("generate", "pairs", "push", "simulate", "pull", "labels")}

    assert cli_main(["loop", "--config", str(config)]) == 0
    state = LoopState.load(loop_dir)
    steps = state.rounds[1]["steps"]
    assert [s for s in ROUND_STEPS if steps.get(s, {}).get("status") == "done"] == ROUND_STEPS  # none skipped
    # Nothing that had finished ran again; the killed steps ran once more each.
    assert {s: steps[s]["attempts"] for s in ("generate", "pairs", "push", "simulate")} == dict.fromkeys(
        ("generate", "pairs", "push", "simulate"), 1)
    # pull: started and killed twice (before its first call, then mid-journal), finished by the third run.
    assert steps["pull"]["attempts"] == 3 and steps["dpo"]["attempts"] == 2
    for name, created in finished_before.items():
        assert runs.read_manifest(loop_dir / "round-1" / name)["created"] == created
    assert not [p for p in (loop_dir / "round-1").iterdir() if ".partial" in p.name]
    # No record pushed twice, no label lost: the pull holds every submitted response on the server.
    server = argilla.records_by_id(state.rounds[1]["dataset"])
    pushed = [json.loads(line) for line in (loop_dir / "round-1" / "push" / "records.jsonl").read_text().splitlines()]
    assert len(server) == len(pushed) == 6
    submitted = {(rid, r["user_id"]) for rid, rec in server.items() for r in rec["responses"] if r["status"] == "submitted"}
    rows = [json.loads(line) for line in (loop_dir / "round-1" / "pull" / "preferences.jsonl").read_text().splitlines()]
    assert sum(len(r["votes"]) for r in rows) == len(submitted) > 0
    assert state.rounds[1]["promoted"] is True
