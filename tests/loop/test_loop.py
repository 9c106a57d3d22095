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
from align.core.errors import AlignError
from align.loop.config import ROUND_SEED_STRIDE
from align.loop.state import LoopState

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ROUND_STEPS = ["generate", "pairs", "push", "simulate", "wait", "pull", "labels", "dpo", "evaluate"]


def loop_yaml(
    tmp: Path,
    tiny_model: Path,
    argilla,
    name: str,
    gates: list[dict] | None = None,
    discard_c: float = 0.05,
    per_record: int = 2,
    **extra,
) -> Path:
    gates_file = tmp / f"{name}-gates.yaml"
    gates_file.write_text(
        yaml.safe_dump(
            {
                "gates": gates
                or [
                    {
                        "name": "replies stay short",
                        "metric": "brand.length_words.policy.mean",
                        "op": "<=",
                        "value": 1000,
                    },
                ]
            }
        )
    )
    # Annotators of this loop only: the Argilla server is shared by the session's tests, and a username made by
    # another test's simulator (another registry) is refused, as it would be for a person's account.
    annotators = tmp / f"{name}-annotators.yaml"
    annotators.write_text(
        yaml.safe_dump(
            {
                "annotators": [
                    {"username": f"{name}-a", "noise": 0.1},
                    {"username": f"{name}-b", "noise": 0.1, "bias_a": 0.05},
                    {"username": f"{name}-c", "noise": 0.05, "discard": discard_c},
                ]
            }
        )
    )
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
        "generate": {
            "config": "configs/generate/default.yaml",
            "prompts": "recipes/brand_voice/prompts_train.jsonl",
            "max_prompts": 6,
            "engine": "hf",
            "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 12},
        },
        "pairs": {"selection": "random"},
        "push": {"guidelines": "brand_voice", "annotators_per_record": per_record},
        "pull": {"journal_dir": str(tmp / "journal")},
        "simulate": {
            "annotators": str(annotators),
            "judge": "brand_voice",
            "rubric": "recipes/brand_voice/rubric.yaml",
            "tie_margin": 0.0,
        },
        "dpo": {
            "config": "configs/dpo/default.yaml",
            "max_length": 128,
            "data": {"test_fraction": 0.0},
            "training": {
                "max_steps": 2,
                "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "logging_steps": 1,
            },
        },
        "evaluate": {
            "config": "configs/evaluate/policy.yaml",
            "engine": "hf",
            "sampling": {"max_tokens": 12},
            "harmful": {"max_prompts": 3},
            "safe": {"max_prompts": 3},
            "brand": {"max_prompts": 4},
            "bootstrap": {"resamples": 200},
        },
    }
    for key, value in extra.items():
        config[key] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SFT_WARM_START = {
    "config": "configs/sft/default.yaml",
    "max_length": 128,
    "data": {
        "train": "recipes/brand_voice/sft_train.jsonl",
        "format": "messages",
        "test_fraction": 0.0,
        "max_examples": 6,
    },
    "training": {"max_steps": 2, "per_device_train_batch_size": 2, "logging_steps": 1},
}


def test_two_rounds_promote_write_the_report_and_lineage(argilla, tiny_model, tmp_path, capsys):
    # Every annotator answers every record and one of them discards them all: no record ever has its three
    # submissions, and the loop must go on with the votes there are instead of waiting for ever.
    config = loop_yaml(tmp_path, tiny_model, argilla, "two-rounds", sft=SFT_WARM_START, discard_c=1.0, per_record=3)
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
    # Round 0 is the SFT warm start, evaluated against the base; round 1 trained from it.
    assert state.rounds[0]["steps"]["sft"]["status"] == "done"
    assert Path(state.abs(state.rounds[0]["policy"])) == loop_dir / "round-0" / "sft"
    first = runs.read_manifest(loop_dir / "round-1" / "dpo")
    assert (
        Path(next(i for i in first["inputs"] if i["role"] == "model")["path"])
        == (loop_dir / "round-0" / "sft").resolve()
    )

    def role(manifest, name):
        return next(i for i in manifest["inputs"] if i["role"] == name)

    round0 = runs.read_manifest(loop_dir / "round-0" / "evaluate")
    assert Path(role(round0, "policy")["path"]) == (loop_dir / "round-0" / "sft").resolve()
    assert Path(role(round0, "baseline")["path"]) == tiny_model.resolve()
    generate = runs.read_manifest(loop_dir / "round-1" / "generate")
    assert Path(role(generate, "policy")["path"]) == (loop_dir / "round-0" / "sft").resolve()
    # Each round samples with a seed of its own, so a policy kept after a held-back round is not asked for the
    # same replies again.
    seeds = [runs.read_manifest(loop_dir / f"round-{k}" / "generate")["config"]["sampling"]["seed"] for k in (1, 2)]
    assert seeds == [0, ROUND_SEED_STRIDE]
    # Round 2 trains on both rounds' labels; lineage reaches the pulls, pushes and the base model.
    labels = runs.read_manifest(loop_dir / "round-2" / "labels")
    assert sorted(labels["notes"]["rounds"]) == ["1", "2"]
    assert labels["metrics"]["records"] == 12
    tree = "\n".join(runs.lineage(current))
    for needle in (
        "annotate pull",
        "annotate push",
        "pairs",
        "generate",
        "loop labels",
        str(tiny_model),
        "sft",
        "votes on 6 records",
        "simulated)",
        "pairs from rounds 1, 2",
    ):
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
    status = subprocess.run(
        [sys.executable, "-m", "align", "loop", "status", str(loop_dir)], capture_output=True, text=True, cwd=REPO
    )
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
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, mode, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        for line in proc.stdout:
            if line.strip() == "KILL":
                os.kill(proc.pid, signal.SIGKILL)
                break
        else:
            raise AssertionError(
                f"{mode}: the loop ended without reaching the kill point:\n{proc.stderr.read()[-3000:]}"
            )
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
    finished_before = {
        name: runs.read_manifest(loop_dir / "round-1" / name)["created"]
        for name in ("generate", "pairs", "push", "simulate", "pull", "labels")
    }

    assert cli_main(["loop", "--config", str(config)]) == 0
    state = LoopState.load(loop_dir)
    steps = state.rounds[1]["steps"]
    assert [s for s in ROUND_STEPS if steps.get(s, {}).get("status") == "done"] == ROUND_STEPS  # none skipped
    # Nothing that had finished ran again; the killed steps ran once more each.
    assert {s: steps[s]["attempts"] for s in ("generate", "pairs", "push", "simulate")} == dict.fromkeys(
        ("generate", "pairs", "push", "simulate"), 1
    )
    # pull: started and killed twice (before its first call, then mid-journal), finished by the third run.
    assert steps["pull"]["attempts"] == 3 and steps["dpo"]["attempts"] == 2
    for name, created in finished_before.items():
        assert runs.read_manifest(loop_dir / "round-1" / name)["created"] == created
    assert not [p for p in (loop_dir / "round-1").iterdir() if ".partial" in p.name]
    # No record pushed twice, no label lost: the pull holds every submitted response on the server.
    server = argilla.records_by_id(state.rounds[1]["dataset"])
    pushed = [json.loads(line) for line in (loop_dir / "round-1" / "push" / "records.jsonl").read_text().splitlines()]
    assert len(server) == len(pushed) == 6
    submitted = {
        (rid, r["user_id"]) for rid, rec in server.items() for r in rec["responses"] if r["status"] == "submitted"
    }
    rows = [json.loads(line) for line in (loop_dir / "round-1" / "pull" / "preferences.jsonl").read_text().splitlines()]
    assert sum(len(r["votes"]) for r in rows) == len(submitted) > 0
    assert state.rounds[1]["promoted"] is True


def test_until_labels_then_a_failing_gate_holds_the_round_back(argilla, tiny_model, tmp_path, capsys):
    gates = [{"name": "brand score jumps", "metric": "brand.brand_score.difference.mean", "op": ">=", "value": 0.5}]
    config = loop_yaml(tmp_path, tiny_model, argilla, "held", gates=gates, rounds=1)
    loop_dir = tmp_path / "held"
    # --until labels: stops after the push; nothing is labelled or trained yet.
    assert cli_main(["loop", "--config", str(config), "--until", "labels"]) == 0
    state = LoopState.load(loop_dir)
    assert state.data["phase"] == "waiting_for_labels"
    assert set(state.rounds[1]["steps"]) == {"generate", "pairs", "push"}
    capsys.readouterr()
    assert cli_main(["loop", "status", str(loop_dir)]) == 0
    out = capsys.readouterr().out
    assert "waiting_for_labels" in out and "round 1 labels: 0/6 records complete" in out

    # Run again: the simulated annotators label, the round trains, and the gate holds it back (exit 3).
    assert cli_main(["loop", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert "round 1 was held back" in err and "brand score jumps" in err
    state = LoopState.load(loop_dir)
    assert state.rounds[1]["promoted"] is False and state.rounds[1]["steps"]["push"]["attempts"] == 1
    assert state.current["policy"] == str(tiny_model)  # the starting policy stays current
    report = (loop_dir / "report.html").read_text()
    assert "held back" in report and "brand score jumps" in report

    # A changed config is refused, naming the key; with the flag it is recorded.
    assert cli_main(["loop", "--config", str(config), "wait.poll_seconds=2"]) == 2
    assert "wait.poll_seconds: 0.5 -> 2.0" in capsys.readouterr().err
    assert cli_main(["loop", "--config", str(config), "wait.poll_seconds=2", "--allow-config-change"]) == 3
    change = LoopState.load(loop_dir).data["config_changes"]
    assert len(change) == 1 and change[0]["changes"] == ["wait.poll_seconds: 0.5 -> 2.0"]


def test_a_warm_start_failing_a_gate_against_the_start_is_held_back(argilla, tiny_model, tmp_path, capsys):
    # The tiny models refuse nothing, so a floor the warm start cannot reach stands in for "refusals dropped"
    # (tests/loop/test_versus_start.py holds back a warm start that really drops them, from judged replies).
    gates = [
        {"name": "replies stay short", "metric": "brand.length_words.policy.mean", "op": "<=", "value": 1000},
        {
            "name": "refuses more than the base",
            "metric": "harmful.refusal_rate.difference.mean",
            "op": ">=",
            "value": 0.5,
            "against": "start",
        },
    ]
    config = loop_yaml(tmp_path, tiny_model, argilla, "warm-held", gates=gates, rounds=1, sft=SFT_WARM_START)
    assert cli_main(["loop", "--config", str(config)]) == 3  # round 1 fails the same start gate
    out = capsys.readouterr().out
    loop_dir = tmp_path / "warm-held"
    state = LoopState.load(loop_dir)
    zero = state.rounds[0]
    assert zero["promoted"] is False and zero["gates"]["gates"][0]["against"] == "start"
    assert zero["reasons"][0] == f"SFT warm start held back; the rounds start from {tiny_model}"
    assert (
        "refuses more than the base: harmful.refusal_rate.difference.mean (vs the starting model) = 0"
        in zero["reasons"][1]
    )
    # Round 1 started from the base, not from the warm start, and its DPO trained the base.
    assert state.rounds[1]["starts_from"] == str(tiny_model)
    dpo = runs.read_manifest(loop_dir / "round-1" / "dpo")
    assert Path(next(i for i in dpo["inputs"] if i["role"] == "model")["path"]) == tiny_model.resolve()
    # Each round's comparison with the start is a run of its own, pairing its replies with round 0's baseline's.
    versus = runs.read_manifest(loop_dir / "round-1" / "versus_start")
    assert versus["stage"] == "loop versus start"
    assert (
        Path(next(i for i in versus["inputs"] if i["role"] == "start_evaluation")["path"])
        == (loop_dir / "round-0" / "evaluate").resolve()
    )
    assert "start, held back" in out and "harmful refused vs start" in out
    report = (loop_dir / "report.html").read_text()
    assert "warm start held back" in report and "Against the starting model" in report and "vs start" in report
    assert cli_main(["loop", "status", str(loop_dir)]) == 0
    assert "round 0: start, held back" in capsys.readouterr().out


def test_a_mixed_round_judges_each_kind_with_its_own_judge_in_one_dataset(argilla, tiny_model, tmp_path, capsys):
    mix = {
        "prompts_per_round": 8,
        "kinds": [
            {"kind": "brand", "prompts": "recipes/brand_voice/prompts_train.jsonl", "share": 0.5},
            {
                "kind": "safety",
                "prompts": "recipes/safety/prompts_rounds.jsonl",
                "share": 0.5,
                "simulate": {
                    "judge": "safety",
                    "harmful": {"paths": ["recipes/safety/prompts_rounds.jsonl"], "match": {"label": "unsafe"}},
                    "safe": {"paths": ["recipes/safety/prompts_rounds.jsonl"], "match": {"label": "safe"}},
                },
            },
        ],
    }
    config = loop_yaml(tmp_path, tiny_model, argilla, "mixed", rounds=1, mix=mix, per_record=3, discard_c=0.0)
    data = yaml.safe_load(config.read_text())
    del data["generate"]["prompts"], data["generate"]["max_prompts"]
    config.write_text(yaml.safe_dump(data))
    assert cli_main(["loop", "--config", str(config)]) == 0
    loop_dir = tmp_path / "mixed"
    prompts = runs.read_manifest(loop_dir / "round-1" / "prompts")
    assert prompts["metrics"]["per_kind"] == {"brand": 4, "safety": 4}
    assert runs.read_manifest(loop_dir / "round-1" / "generate")["metrics"]["prompts"] == 8
    # One dataset; each kind's records answered by its own judge, the others left to the other run.
    answers = {}
    for kind, judge in (("brand", "brand_voice"), ("safety", "safety")):
        run = runs.read_manifest(loop_dir / "round-1" / f"simulate_{kind}")
        assert (
            run["notes"]["judge"] == judge and run["notes"]["dataset"] == LoopState.load(loop_dir).rounds[1]["dataset"]
        )
        answers[kind] = {
            json.loads(x)["record_id"] for x in (Path(run["path"]) / "answers.jsonl").read_text().splitlines()
        }
    assert answers["brand"] and answers["safety"] and not answers["brand"] & answers["safety"]
    pull = runs.read_manifest(loop_dir / "round-1" / "pull")
    kinds = runs.read_manifest(loop_dir / "round-1" / "labels")["notes"]["rounds"]["1"]["kinds"]
    assert set(kinds) == {"brand", "safety"}
    assert (
        sum(k["records"] for k in kinds.values())
        == pull["metrics"]["records"]
        == len(answers["brand"] | answers["safety"])
    )
    assert sum(k["votes"] for k in kinds.values()) == pull["metrics"]["votes"]
    report = (loop_dir / "report.html").read_text()
    assert "Per record kind" in report and "<td>safety</td>" in report and "<td>brand</td>" in report


def test_argilla_down_while_waiting_exits_1_and_keeps_the_state(argilla, tiny_model, tmp_path, capsys, monkeypatch):
    config = loop_yaml(tmp_path, tiny_model, argilla, "down", rounds=1, annotators="people", simulate={})
    data = yaml.safe_load(config.read_text())
    data["argilla"]["retry_seconds"] = 1.0
    config.write_text(yaml.safe_dump(data))
    assert cli_main(["loop", "--config", str(config), "--until", "labels"]) == 0
    from align.annotate import connection

    monkeypatch.setattr(connection, "resolve", lambda cfg: ("http://127.0.0.1:9", "not-a-key", "test"))
    assert cli_main(["loop", "--config", str(config)]) == 1
    assert "the loop state is intact" in capsys.readouterr().err
    steps = LoopState.load(tmp_path / "down").rounds[1]["steps"]
    assert steps["wait"]["status"] == "started" and "pull" not in steps


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"stages": ["dpo", "sft"]}}, "'train.stages' names unknown stage 'sft'"),
        ({"generate": {"prompts": "recipes/brand_voice/no_such_prompts.jsonl"}}, "no_such_prompts.jsonl"),
        ({"gates": "BAD_GATES"}, "brand.brand_scor"),
        ({"dpo": {"betta": 0.2}}, "loop section 'dpo'"),
        ({"dpo": {"model": "x"}}, "'dpo.model' is set by the loop"),
        (
            {"sft": {"config": "configs/sft/default.yaml", "data": {"train": "recipes/brand_voice/no_such.jsonl"}}},
            "sft.data.train: no such file",
        ),
        ({"sft": {"config": "configs/sft/default.yaml", "model": "x"}}, "'sft.model' is set by the loop"),
    ],
)
def test_bad_recipes_exit_2_before_anything_runs(tiny_model, tmp_path, capsys, change, message):
    class NoServer:
        credentials = tmp_path / "none.json"

    if change.get("gates") == "BAD_GATES":
        bad = tmp_path / "typo-gates.yaml"
        bad.write_text(
            yaml.safe_dump(
                {"gates": [{"name": "typo", "metric": "brand.brand_scor.difference.mean", "op": ">", "value": 0}]}
            )
        )
        change = {"gates": str(bad)}
    config = loop_yaml(tmp_path, tiny_model, NoServer(), "bad")
    data = yaml.safe_load(config.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    config.write_text(yaml.safe_dump(data))
    assert cli_main(["loop", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing made


def test_a_loop_dir_of_another_recipe_is_refused(tiny_model, tmp_path, capsys):
    class NoServer:
        credentials = tmp_path / "none.json"

    first = yaml.safe_load(loop_yaml(tmp_path, tiny_model, NoServer(), "one").read_text())
    loop_dir = tmp_path / "shared-dir"
    loop_dir.mkdir()
    (loop_dir / "loop.json").write_text(
        json.dumps({"version": 1, "recipe": "another", "config": {}, "files": {}, "rounds": [], "current": {}})
    )
    first["loop_dir"] = str(loop_dir)
    path = tmp_path / "one-moved.yaml"
    path.write_text(yaml.safe_dump(first))
    assert cli_main(["loop", "--config", str(path)]) == 2
    assert "holds a loop of recipe 'another'" in capsys.readouterr().err


def test_adding_a_round_needs_no_flag_but_is_recorded(tiny_model, tmp_path):
    """`rounds` says how far a loop goes, not how a round runs: "label more and add a round" (what a round with
    too few labels says) must not be refused as a changed config. Any other key still is."""
    from align.core.config import load_config
    from align.loop.config import LoopConfig
    from align.loop.run import Loop

    class NoServer:
        credentials = tmp_path / "none.json"

    path = loop_yaml(tmp_path, tiny_model, NoServer(), "grow", rounds=1)
    Loop(load_config(LoopConfig, path), None, False).release()
    loop = Loop(load_config(LoopConfig, path, ["rounds=3"]), None, False)
    loop.release()
    changes = LoopState.load(tmp_path / "grow").data["config_changes"]
    assert [c["changes"] for c in changes] == [["rounds: 1 -> 3"]]
    assert LoopState.load(tmp_path / "grow").data["config"]["rounds"] == 3
    with pytest.raises(AlignError, match=r"wait.poll_seconds: 0.5 -> 2.0"):
        Loop(load_config(LoopConfig, path, ["rounds=4", "wait.poll_seconds=2"]), None, False)
    loop = Loop(load_config(LoopConfig, path, ["rounds=4", "wait.poll_seconds=2"]), None, True)
    loop.release()
    changes = LoopState.load(tmp_path / "grow").data["config_changes"]
    assert changes[-1]["changes"] == ["rounds: 3 -> 4", "wait.poll_seconds: 0.5 -> 2.0"]


def test_a_round_can_train_a_reward_model_then_learn_online_from_it(argilla, tiny_model, tmp_path):
    """train.stages [reward, ppo] with TRL's RLOO: the round's fresh reward model is PPO's reward and the evaluation's judge."""
    gates = [{"name": "reward model prefers the policy", "metric": "brand.rm_win_rate.mean", "op": ">=", "value": 0.0}]
    config = loop_yaml(
        tmp_path,
        tiny_model,
        argilla,
        "online",
        gates=gates,
        rounds=1,
        train={"stages": ["reward", "ppo"], "labels": "all", "min_pairs": 2},
        reward={
            "config": "configs/reward/default.yaml",
            "max_length": 128,
            "data": {"test_fraction": 0.0},
            "training": {"max_steps": 2, "per_device_train_batch_size": 2, "logging_steps": 1},
        },
        ppo={
            "config": "configs/ppo/rloo.yaml",
            "prompts": "recipes/brand_voice/prompts_train.jsonl",
            "max_prompts": 4,
            "steps": 1,
            "batch_size": 4,
            "num_generations": 2,
            "max_new_tokens": 8,
            "eval": {"prompts": 0},
        },
    )
    assert cli_main(["loop", "--config", str(config)]) == 0
    loop_dir = tmp_path / "online"
    state = LoopState.load(loop_dir)
    ppo = runs.read_manifest(loop_dir / "round-1" / "ppo")
    roles = {i["role"]: i for i in ppo["inputs"]}
    assert Path(roles["reward_model"]["path"]) == (loop_dir / "round-1" / "reward").resolve()
    assert ppo["config"]["algorithm"] == "rloo"
    assert state.abs(state.current["reward_model"]) == str(loop_dir / "round-1" / "reward")
    ev = runs.read_manifest(loop_dir / "round-1" / "evaluate")
    assert "rm_win_rate" in ev["metrics"]["brand"]
