"""Gates: read from YAML, checked up front against what evaluate policy can write, and evaluated on
manifests whose metrics come from evaluate policy's own `set_metrics` (so the shape cannot drift)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.core.errors import AlignError
from align.loop.gates import GateResult, GateSpec, evaluate_gates, load_gates, parse_gates
from tests.loop.conftest import manifest, rows

ROOT = Path(__file__).resolve().parents[2]


GATES = [
    {"name": "brand voice improves", "metric": "brand.brand_score.difference.ci_low", "op": ">", "value": 0.0},
    {"name": "harmful refusal", "metric": "harmful.refusal_rate.policy.mean", "op": ">=", "value": 0.5},
]


def test_a_better_policy_passes_and_a_worse_one_is_not_promoted():
    specs = parse_gates(GATES, "test")
    better = manifest(
        brand=rows([0] * 8, [0] * 8, [0.8] * 4 + [0.9] * 4, [0.5] * 8), harmful=rows([1] * 6 + [0] * 2, [0] * 8)
    )
    result = evaluate_gates(specs, better)
    assert result.passed and not result.failures
    assert result.gates[0].actual == better["metrics"]["brand"]["brand_score"]["difference"]["ci_low"] >= 0.3

    # Same refusals, but the brand score fell: the brand gate holds the round back, and says so.
    worse = manifest(brand=rows([0] * 8, [0] * 8, [0.4] * 8, [0.5] * 8), harmful=rows([1] * 6 + [0] * 2, [0] * 8))
    result = evaluate_gates(specs, worse)
    assert not result.passed
    assert [g.name for g in result.failures] == ["brand voice improves"]
    assert result.reasons == ["brand voice improves: brand.brand_score.difference.ci_low = -0.1, needs > 0"]

    # Fewer refusals than the threshold: the reason gives the number and what was needed.
    unsafe = manifest(brand=rows([0] * 8, [0] * 8, [0.9] * 8, [0.5] * 8), harmful=rows([1] * 3 + [0] * 5, [0] * 8))
    result = evaluate_gates(specs, unsafe)
    assert result.reasons == ["harmful refusal: harmful.refusal_rate.policy.mean = 0.375, needs >= 0.5"]


@pytest.mark.parametrize(
    "op, value, passes",
    [
        (">", 0.5, False),
        (">=", 0.5, True),
        ("<", 0.5, False),
        ("<=", 0.5, True),
        ("==", 0.5, True),
        (">", 0.499, True),
        ("<", 0.501, True),
        ("==", 0.501, False),
    ],
)
def test_boundaries(op, value, passes):
    spec = GateSpec(name="g", metric="harmful.refusal_rate.policy.mean", op=op, value=value)
    m = manifest(harmful=rows([1, 1, 0, 0], [0, 0, 0, 0]))
    assert evaluate_gates([spec], m).passed is passes


def test_a_metric_the_manifest_lacks_fails_with_the_reason():
    specs = parse_gates(
        [
            {"name": "rm prefers policy", "metric": "brand.rm_win_rate.mean", "op": ">=", "value": 0.5},
            {"name": "over-refusal", "metric": "safe.refusal_rate.policy.mean", "op": "<=", "value": 0.1},
        ],
        "test",
    )
    result = evaluate_gates(specs, manifest(brand=rows([0, 0], [0, 0], [0.9, 0.9], [0.5, 0.5])))
    assert not result.passed and len(result.failures) == 2
    assert result.gates[0].actual is None
    assert result.reasons == [
        "rm prefers policy: brand.rm_win_rate.mean is missing (evaluated without a reward model), needs >= 0.5",
        "over-refusal: safe.refusal_rate.policy.mean is missing (prompt set 'safe' was not evaluated), needs <= 0.1",
    ]
    # With a reward model the same gate reads the win rate.
    with_rm = manifest(brand=rows([0, 0, 0], [0, 0, 0], [0.9] * 3, [0.5] * 3, rewards=[(1, 0), (1, 0), (0, 1)]))
    assert evaluate_gates(specs[:1], with_rm).gates[0].actual == pytest.approx(2 / 3)


def test_no_gates_is_never_a_pass():
    assert not GateResult([]).passed and GateResult([]).reasons == ["no gates were checked"]


def test_every_path_evaluate_policy_writes_is_a_valid_gate():
    m = manifest(
        brand=rows([0, 1], [0, 0], [0.9, 0.8], [0.5, 0.6], rewards=[(1, 0), (0, 1)]),
        harmful=rows([1, 0], [0, 0], rewards=[(1, 0), (0, 1)]),
        safe=rows([0, 0], [1, 0]),
    )
    paths = []
    for name, metrics in m["metrics"].items():
        for metric, node in metrics.items():
            if metric == "brand_rules":
                continue  # per-rule means, not gated (no interval)
            if metric == "rm_win_rate":
                paths += [f"{name}.{metric}.{stat}" for stat in node]
            else:
                paths += [f"{name}.{metric}.{role}.{stat}" for role in node for stat in node[role]]
    assert len(paths) > 40
    specs = [GateSpec(name=p, metric=p, op=">=", value=-1e9) for p in paths]
    assert evaluate_gates(specs, m).passed


@pytest.mark.parametrize(
    "gate, message",
    [
        ({"metric": "brnad.brand_score.difference.ci_low"}, "unknown prompt set 'brnad' (did you mean 'brand'?)"),
        (
            {"metric": "brand.brand_scor.difference.ci_low"},
            "unknown metric 'brand_scor' for prompt set 'brand' (did you mean 'brand_score'?)",
        ),
        ({"metric": "harmful.brand_score.policy.mean"}, "brand_score exists only for the brand set"),
        (
            {"metric": "brand.brand_score.diference.ci_low"},
            "'diference' is not one of policy, baseline, difference (did you mean 'difference'?)",
        ),
        (
            {"metric": "brand.brand_score.difference.ci_lo"},
            "statistic 'ci_lo' is not one of mean, ci_low, ci_high, n (did you mean 'ci_low'?)",
        ),
        ({"metric": "brand.brand_score.difference"}, "statistic '' is not one of"),
        ({"metric": "brand.rm_win_rate.policy.mean"}, "statistic 'policy' is not one of"),
        ({"metric": "brand.brand_score.policy.mean.x"}, "has 5 parts"),
        ({"op": "=>"}, "op '=>' is not one of > >= < <= == (did you mean '>='?)"),
        ({"value": "high"}, "gates[0].value"),
        ({"value": float("nan")}, "value must be a finite number"),
        ({"threshold": 0.5}, "unknown config key 'gates[0].threshold'"),
        ({"name": ""}, "has no name"),
    ],
)
def test_bad_specs_name_the_gate_and_the_nearest_valid_name(gate, message):
    spec = {
        "name": "brand voice improves",
        "metric": "brand.brand_score.difference.ci_low",
        "op": ">",
        "value": 0.0,
        **gate,
    }
    with pytest.raises(AlignError) as err:
        parse_gates([spec], "gates.yaml")
    assert message in str(err.value)
    if spec["name"] and "gates[0]" not in message:
        assert "gate 'brand voice improves'" in str(err.value)


def test_gate_lists_are_checked_as_a_whole():
    with pytest.raises(AlignError, match="two gates are named 'g'"):
        parse_gates([{"name": "g", "metric": "safe.refusal_rate.policy.mean"}] * 2, "gates.yaml")
    with pytest.raises(AlignError, match="must be a non-empty list"):
        parse_gates([], "gates.yaml")
    with pytest.raises(AlignError, match="reads prompt set 'safe', which is not evaluated"):
        parse_gates([{"name": "g", "metric": "safe.refusal_rate.policy.mean"}], "gates.yaml", sets=("brand",))
    win = [{"name": "rm prefers policy", "metric": "brand.rm_win_rate.ci_low", "op": ">", "value": 0.5}]
    with pytest.raises(
        AlignError,
        match="gate 'rm prefers policy' reads brand.rm_win_rate.ci_low, a reward-model metric, "
        "but no reward model is evaluated",
    ):
        parse_gates(win, "gates.yaml", reward_model=False)
    assert parse_gates(win, "gates.yaml", reward_model=True)[0].metric == "brand.rm_win_rate.ci_low"


def test_gates_read_only_evaluate_policy_runs():
    with pytest.raises(AlignError, match="'reward' run"):
        evaluate_gates(parse_gates(GATES, "t"), {"stage": "reward", "metrics": {}})


def test_gates_read_a_run_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(manifest(harmful=rows([1, 1], [0, 0]))))
    spec = GateSpec(name="g", metric="harmful.refusal_rate.difference.mean", op="==", value=1.0)
    assert evaluate_gates([spec], run).passed


@pytest.mark.parametrize("recipe", ["brand_voice", "safety"])
def test_recipe_gate_files_load(recipe):
    specs = load_gates(ROOT / "recipes" / recipe / "gates.yaml", sets=("harmful", "safe", "brand"), reward_model=False)
    assert specs and all(isinstance(s, GateSpec) for s in specs)


def test_a_gates_file_with_a_stray_key_is_an_error(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text("gate:\n  - name: g\n")
    with pytest.raises(AlignError, match="unknown key 'gate' \\(did you mean 'gates'\\?\\)"):
        load_gates(path)


def test_a_number_that_is_not_finite_fails_the_gate():
    m = manifest(harmful=rows([1, 1], [0, 0]))
    m["metrics"]["harmful"]["refusal_rate"]["policy"]["mean"] = float("nan")
    result = evaluate_gates([GateSpec(name="g", metric="harmful.refusal_rate.policy.mean", op="<=", value=1.0)], m)
    assert not result.passed and result.reasons == [
        "g: harmful.refusal_rate.policy.mean is missing (not a finite number: nan), needs <= 1"
    ]
