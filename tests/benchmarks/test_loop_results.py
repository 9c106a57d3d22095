"""benchmarks/loop_results.py on a small loop directory laid out as `align loop` writes it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from align.core.errors import AlignError

ROOT = Path(__file__).resolve().parents[2]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ci(mean, low, high, n):
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n}


def metric(policy, difference):
    return {"policy": ci(*policy), "baseline": ci(0.5, 0.4, 0.6, policy[3]), "difference": ci(*difference)}


def write_run(path: Path, stage: str, metrics: dict) -> None:
    path.mkdir(parents=True)
    manifest = {"stage": stage, "metrics": metrics, "host": {"platform": "Linux-test"}, "versions": {"trl": "1.16.0"}}
    (path / "manifest.json").write_text(json.dumps(manifest))


def step(run: str, wall: float) -> dict:
    return {"status": "done", "run": f"<loop>/{run}", "wall_time_s": wall}


def make_loop(loop_dir: Path, phase: str = "finished") -> None:
    write_run(
        loop_dir / "round-0/evaluate",
        "evaluate policy",
        {
            "brand": {"brand_score": metric((0.9, 0.85, 0.95, 30), (0.3, 0.25, 0.35, 30))},
            "harmful": {"refusal_rate": metric((0.7, 0.6, 0.8, 100), (0.5, 0.4, 0.6, 100))},
            "safe": {"refusal_rate": metric((0.15, 0.08, 0.23, 100), (0.12, 0.06, 0.19, 100))},
        },
    )
    write_run(
        loop_dir / "round-0/versus_start",
        "versus start",
        {"safe": {"refusal_rate": {"difference": ci(0.12, 0.06, 0.19, 100)}}},
    )
    write_run(
        loop_dir / "round-1/evaluate",
        "evaluate policy",
        {"safe": {"refusal_rate": metric((0.1, 0.05, 0.16, 100), (-0.05, -0.09, -0.01, 100))}},
    )
    write_run(
        loop_dir / "round-1/versus_start",
        "versus start",
        {"safe": {"refusal_rate": {"difference": ci(0.07, 0.02, 0.12, 100)}}},
    )
    write_run(
        loop_dir / "round-1/pull",
        "annotate pull",
        {"records": 40, "votes": 118, "simulated_votes": 100, "human_votes": 18, "ties": 3},
    )
    failed = {"name": "over-refusal at most 0.05", "passed": False}
    state = {
        "version": 1,
        "recipe": "safety",
        "loop_id": "abc123",
        "created": "2026-12-06T09:50:37+00:00",
        "phase": phase,
        "current": {"policy": "<loop>/round-0/sft", "round": 0},
        "rounds": [
            {
                "round": 0,
                "steps": {
                    "sft": step("round-0/sft", 244.0),
                    "evaluate": step("round-0/evaluate", 164.0),
                    "versus_start": step("round-0/versus_start", 0.5),
                },
                "decided": True,
                "promoted": True,
            },
            {
                "round": 1,
                "steps": {
                    "evaluate": step("round-1/evaluate", 100.0),
                    "pull": step("round-1/pull", 1.5),
                    "dpo": step("round-1/dpo", 120.0),
                    "versus_start": step("round-1/versus_start", 0.0),
                },
                "decided": True,
                "promoted": False,
                "gates": {"passed": False, "gates": [{"name": "harmful kept", "passed": True}, failed]},
                "reasons": ["over-refusal at most 0.05: 0.1 > 0.05"],
            },
        ],
    }
    (loop_dir / "loop.json").write_text(json.dumps(state))


def test_a_finished_loop_becomes_a_result_file_and_a_table(tmp_path):
    loop_results = load("loop_results", ROOT / "benchmarks" / "loop_results.py")
    make_loop(tmp_path / "loop")
    out = tmp_path / "out.json"
    assert loop_results.main([str(tmp_path / "loop"), "--config", "recipes/safety/loop.yaml", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    r0, r1 = data["rounds"]
    assert (r0["outcome"], r1["outcome"]) == ("start", "held back")
    assert r1["failed_gates"] == ["over-refusal at most 0.05"]
    assert r0["metrics"]["harmful_refusal"]["vs_previous"]["mean"] == 0.5
    assert r0["metrics"]["harmful_refusal"]["vs_start"] is None  # versus_start compared only the safe set
    assert r1["metrics"]["over_refusal"]["vs_start"]["mean"] == 0.07
    assert "brand_score" not in r1["metrics"]
    assert r1["labels"] == {"records": 40, "votes": 118, "simulated_votes": 100, "human_votes": 18, "ties": 3}
    assert list(r1["wall_time_s"]) == ["pull", "dpo", "evaluate", "versus_start"]  # the loop's step order
    # 244 + 164 + 0.5 + 100 + 1.5 + 120 + 0 = 630 s
    assert data["total_wall_time_s"] == 630.0
    assert data["config"] == "recipes/safety/loop.yaml" and data["machine"]["platform"] == "Linux-test"
    assert data["command"].startswith("python benchmarks/loop_results.py ") and data["command"].endswith(str(out))

    tables = load("results_tables", ROOT / "scripts" / "results_tables.py")
    text = tables.loop_results([("x.json", data)])
    # round 1: held back at the failed gate; over-refusal 0.100 [0.050, 0.160], +0.070 vs start; 221.5 s -> 3 min 42 s
    assert (
        "| 1 | held back (over-refusal at most 0.05) | - | - | 0.100 [0.050, 0.160] | - | - | - "
        "| +0.070 [+0.020, +0.120] | 40 records, 118 votes (100 simulated, 18 human) | 3 min 42 s |" in text
    )
    assert "| 0 | start | 0.900 [0.850, 0.950] | 0.700 [0.600, 0.800] |" in text
    assert "10 min 30 s of steps in all" in text


def test_an_unfinished_loop_is_refused(tmp_path):
    loop_results = load("loop_results", ROOT / "benchmarks" / "loop_results.py")
    make_loop(tmp_path / "loop", phase="running")
    with pytest.raises(AlignError, match="not finished"):
        loop_results.loop_results(tmp_path / "loop")
    assert loop_results.main([str(tmp_path / "loop"), "--out", str(tmp_path / "o.json")]) == 2
    assert not (tmp_path / "o.json").exists()
