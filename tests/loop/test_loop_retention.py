"""Retention inside `align loop`: a `retention` section runs `align evaluate retention` on each round's
candidate against the loop's base model, and `retention_gates` can hold the round back; bad retention
settings are refused before anything runs; the brand_voice and safety recipes' documented command
lines (retention on by override) pass the preflight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("lm_eval", reason="IFEval scoring needs the eval extra (pip install -e '.[eval]')")

from align.cli import main as cli_main
from align.core import runs
from align.core.config import load_config
from align.loop.config import LoopConfig, describe_change
from align.loop.preflight import load_retention_gates, preflight
from align.loop.state import LoopState
from tests.conftest import write_jsonl
from tests.loop.test_loop import SFT_WARM_START, loop_yaml

ROOT = Path(__file__).resolve().parents[2]
FAILING = "policy unchanged from the base"


def retention_section(tmp: Path) -> dict:
    """Three IFEval prompts and three general prompts, six new tokens: seconds on the tiny model."""
    ifeval = write_jsonl(
        tmp / "ifeval.jsonl",
        [
            {
                "key": 1,
                "prompt": "Write a haiku. Do not use any commas.",
                "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{}],
            },
            {
                "key": 2,
                "prompt": "Describe tea in less than 3 sentences, all lowercase.",
                "instruction_id_list": ["length_constraints:number_sentences", "change_case:english_lowercase"],
                "kwargs": [{"relation": "less than", "num_sentences": 3}, {}],
            },
            {
                "key": 3,
                "prompt": "Say hi and end with 'Bye.'",
                "instruction_id_list": ["startend:end_checker"],
                "kwargs": [{"end_phrase": "Bye."}],
            },
        ],
    )
    drift = write_jsonl(
        tmp / "drift.jsonl",
        [
            {"question_id": i, "turns": [q]}
            for i, q in enumerate(["How do plants grow?", "What is a prime number?", "Name a river."])
        ],
    )
    return {
        "config": "configs/evaluate/retention.yaml",
        "engine": "hf",
        "ifeval": {"path": str(ifeval), "limit": None, "max_tokens": 6},
        "drift": {"paths": [str(drift)], "max_prompts": 3},
        "drift_sampling": {"max_tokens": 6},
        "bootstrap": {"resamples": 200},
    }


def retention_gates(tmp: Path, gates: list[dict] | None = None) -> Path:
    path = tmp / "retention-gates.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gates": gates
                or [
                    {
                        "name": "instruction following kept",
                        "metric": "ifeval.prompt_strict.difference.mean",
                        "op": ">=",
                        "value": -1.0,
                    },
                    # A trained policy always moves from its base (KL > 0): this gate must fail and hold the round back.
                    {"name": FAILING, "metric": "drift.kl.mean", "op": "<=", "value": 0.0},
                ]
            }
        )
    )
    return path


@pytest.mark.slow
def test_a_retention_gate_holds_a_round_back(argilla, tiny_model, tmp_path, capsys):
    config = loop_yaml(
        tmp_path,
        tiny_model,
        argilla,
        "kept",
        rounds=1,
        sft=SFT_WARM_START,
        retention=retention_section(tmp_path),
        retention_gates=str(retention_gates(tmp_path)),
    )
    assert cli_main(["loop", "--config", str(config)]) == 3
    captured = capsys.readouterr()
    assert "round 1 was held back" in captured.err and FAILING in captured.err
    assert "IFEval p-strict vs base" in captured.out and "KL vs base" in captured.out  # the printed score table
    loop_dir = tmp_path / "kept"
    state = LoopState.load(loop_dir)
    rnd = state.rounds[1]
    # The policy gate held; the retention gate alone held the round back, and loop.json says which.
    assert rnd["promoted"] is False
    assert {g["name"]: g["passed"] for g in rnd["gates"]["gates"]} == {
        "replies stay short": True,
        "instruction following kept": True,
        FAILING: False,
    }
    assert len(rnd["reasons"]) == 1 and rnd["reasons"][0].startswith(f"{FAILING}: drift.kl.mean = ")
    assert Path(state.abs(state.current["policy"])) == loop_dir / "round-0" / "sft"  # the warm start stays current
    # round-N/retention is an ordinary run: the round's candidate against the loop's base model.
    for n, policy in ((1, loop_dir / "round-1" / "dpo"), (0, loop_dir / "round-0" / "sft")):
        manifest = runs.read_manifest(loop_dir / f"round-{n}" / "retention")
        roles = {i["role"]: i for i in manifest["inputs"]}
        assert manifest["stage"] == "evaluate retention"
        assert Path(roles["policy"]["path"]) == policy.resolve()
        assert Path(roles["baseline"]["path"]) == tiny_model.resolve()
        assert state.rounds[n]["steps"]["retention"]["status"] == "done"
    kl = runs.read_manifest(loop_dir / "round-1" / "retention")["metrics"]["drift"]["kl"]
    assert kl["mean"] > 0 and rnd["gates"]["gates"][2]["actual"] == kl["mean"]
    # The report shows retention per round (both rounds' IFEval and KL with intervals) and the failing gate.
    page = (loop_dir / "report.html").read_text()
    assert "Retention per round" in page and FAILING in page
    assert f"{kl['mean']:.3f} [{kl['ci_low']:.3f}, {kl['ci_high']:.3f}]" in page
    strict0 = runs.read_manifest(loop_dir / "round-0" / "retention")["metrics"]["ifeval"]["prompt_strict"]["policy"]
    assert f"{strict0['mean']:.3f} [{strict0['ci_low']:.3f}, {strict0['ci_high']:.3f}]" in page
    assert "round 0: retention.png" in page and "round 1: retention.png" in page
    # Running the finished loop again redoes nothing, retention included, and says the same.
    assert cli_main(["loop", "--config", str(config)]) == 3
    assert LoopState.load(loop_dir).rounds[1]["steps"]["retention"]["attempts"] == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {
                "retention_gates": [
                    {"name": "typo", "metric": "ifeval.prompt_strictt.difference.mean", "op": ">=", "value": 0}
                ]
            },
            "unknown metric 'prompt_strictt' for prompt set 'ifeval' (did you mean 'prompt_strict'?)",
        ),
        ({"retention": {"baseline": "runs/other"}}, "'retention.baseline' is set by the loop"),
        ({"retention": {"ifeval": {"limt": 3}}}, "loop section 'retention'"),
        ({"retention_gates": "missing"}, "retention_gates: no such file"),
        ({"retention": None}, "needs a 'retention' section"),
        ({"retention": {"drift": {"paths": []}}}, "reads prompt set 'drift', which is not evaluated"),
        (
            {
                "retention_gates": [
                    {"name": "brand", "metric": "brand.brand_score.difference.mean", "op": ">=", "value": 0}
                ]
            },
            "move the gate to the 'gates' file",
        ),
        (
            {"gates": [{"name": "kl", "metric": "drift.kl.mean", "op": "<=", "value": 1}]},
            "move the gate to the 'retention_gates' file",
        ),
        (
            {"retention_gates": [{"name": "replies stay short", "metric": "drift.kl.mean", "op": "<=", "value": 1}]},
            "gate 'replies stay short' is named in both",
        ),
    ],
)
def test_bad_retention_settings_exit_2_before_anything_runs(tiny_model, tmp_path, capsys, change, message):
    class NoServer:
        credentials = tmp_path / "none.json"

    section = retention_section(tmp_path)
    gates = retention_gates(tmp_path)
    config = loop_yaml(tmp_path, tiny_model, NoServer(), "bad", retention=section, retention_gates=str(gates))
    data = yaml.safe_load(config.read_text())
    for key, value in change.items():
        if isinstance(value, list):  # a gates file's list
            path = gates if key == "retention_gates" else tmp_path / "policy-gates.yaml"
            path.write_text(yaml.safe_dump({"gates": value}))
            value = str(path)
        elif key == "retention_gates":
            value = str(tmp_path / "no-such-gates.yaml")
        elif isinstance(value, dict):
            value = {**section, **value}
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    config.write_text(yaml.safe_dump(data))
    assert cli_main(["loop", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing made


@pytest.mark.parametrize("recipe", ["brand_voice", "safety"])
def test_the_documented_command_line_turns_retention_on_and_passes_preflight(recipe, monkeypatch):
    """`align loop --config recipes/<recipe>/loop.yaml retention.config=... retention_gates=...` (README)."""
    monkeypatch.chdir(ROOT)
    cfg = load_config(
        LoopConfig,
        f"recipes/{recipe}/loop.yaml",
        [
            "retention.config=configs/evaluate/retention.yaml",
            f"retention_gates=recipes/{recipe}/retention_gates.yaml",
            f"loop_dir=runs/{recipe}-loop-retention",
        ],
    )
    specs, _ = preflight(cfg)
    retention = load_retention_gates(cfg)
    assert {s.path[0] for s in retention} == {"ifeval", "drift"} and specs
    # The recipe itself ships with retention off: the demo's time budget has no room for it.
    assert not load_config(LoopConfig, f"recipes/{recipe}/loop.yaml").retention


def test_a_loop_started_before_retention_existed_resumes_without_a_config_change(tiny_model, tmp_path):
    class NoServer:
        credentials = tmp_path / "none.json"

    from align.core.config import to_dict

    now = to_dict(load_config(LoopConfig, loop_yaml(tmp_path, tiny_model, NoServer(), "old")))
    assert now["retention"] == {} and now["retention_gates"] == ""  # off by default, and saved in loop.json
    then = {k: v for k, v in now.items() if k not in ("retention", "retention_gates")}
    assert describe_change(then, now) == []
    turned_on = json.loads(json.dumps(now))
    turned_on["retention_gates"] = "recipes/brand_voice/retention_gates.yaml"
    assert describe_change(then, turned_on) == [
        'retention_gates: (not set) -> "recipes/brand_voice/retention_gates.yaml"'
    ]
