"""`align evaluate retention` end to end on the tiny model (hf engine): default baseline, metrics in the
gates' shape and recomputable from the replies, KL zero against itself, and exit 2 with nothing
written for bad input or a missing lm-eval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="IFEval scoring needs the eval extra (pip install -e '.[eval]')")

from align.cli import main  # noqa: E402
from align.core import runs  # noqa: E402
from align.evaluation import ifeval  # noqa: E402
from align.loop.gates import evaluate_gates, load_gates, parse_gates  # noqa: E402
from tests.conftest import write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAST = ["engine=hf", "ifeval.max_tokens=6", "drift_sampling.max_tokens=6", "bootstrap.resamples=200"]


@pytest.fixture(scope="module")
def retention_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("retention-prompts")
    return {
        "ifeval": write_jsonl(
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
        ),
        "drift": write_jsonl(
            tmp / "drift.jsonl",
            [
                {"question_id": i, "turns": [q, "And then?"]}
                for i, q in enumerate(["How do plants grow?", "What is a prime number?", "Name a river."])
            ],
        ),
    }


def evaluate(tmp_path, policy, files, *overrides) -> tuple[int, Path]:
    runs_dir = tmp_path / "runs"
    code = main(
        [
            "evaluate",
            "retention",
            str(policy),
            f"runs_dir={runs_dir}",
            "name=ret",
            *FAST,
            f"ifeval.path={files['ifeval']}",
            f"drift.paths=[{files['drift']}]",
            *overrides,
        ]
    )
    return code, runs_dir / "ret"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_policy_against_its_base(tmp_path, policy_chain, retention_files, tiny_model):
    code, run = evaluate(tmp_path, policy_chain["policy"], retention_files, f"reward_model={policy_chain['reward']}")
    assert code == 0
    manifest = runs.read_manifest(run)
    assert manifest["stage"] == "evaluate retention"
    assert manifest["notes"]["baseline"] == str(tiny_model.resolve()) and not manifest["notes"]["baseline_is_policy"]
    assert manifest["notes"]["ifeval"]["unscored"]["instructions"] == 0  # Punkt provided offline
    rows = lines(run / "ifeval_replies.jsonl")
    drift = lines(run / "drift_replies.jsonl")
    assert [r["key"] for r in rows] == [1, 2, 3] and len(drift) == 3
    assert manifest["outputs"]["plot"]["path"].endswith("retention.png") and (run / "retention.png").stat().st_size > 0
    assert drift[0]["prompt"] == [{"role": "user", "content": "How do plants grow?"}]  # MT-bench: first turn
    m = manifest["metrics"]
    assert set(m["ifeval"]) == {*ifeval.LEVELS, "length_words"}
    assert set(m["drift"]) == {"kl", "baseline_logprob", "length_words", "length_tokens", "rm_reward", "rm_win_rate"}
    # Recomputable from the replies: prompt-level strict accuracy and the per-token KL.
    for role in ("policy", "baseline"):
        assert m["ifeval"]["prompt_strict"][role]["mean"] == pytest.approx(
            sum(r[role]["prompt_strict"] for r in rows) / 3
        )
    assert m["drift"]["kl"]["mean"] == pytest.approx(sum(r["kl_per_token"] for r in drift) / 3)
    assert m["drift"]["kl"]["mean"] > 0  # one LoRA step moved the policy from its base
    assert m["drift"]["baseline_logprob"]["difference"]["mean"] == pytest.approx(
        sum(r["baseline_reply_logprob"]["policy"] - r["baseline_reply_logprob"]["baseline"] for r in drift) / 3
    )
    # The gates read these numbers with the same paths as evaluate policy's.
    specs = parse_gates(
        [
            {"name": "kl bounded", "metric": "drift.kl.mean", "op": "<=", "value": 10.0},
            {"name": "ifeval kept", "metric": "ifeval.inst_loose.difference.mean", "op": ">=", "value": -1.0},
        ],
        "test",
    )
    assert evaluate_gates(specs, run).passed


@pytest.mark.slow
def test_model_against_itself_has_zero_kl_and_no_difference(tmp_path, tiny_model, retention_files):
    code, run = evaluate(tmp_path, tiny_model, retention_files)
    assert code == 0
    m = runs.read_manifest(run)["metrics"]
    assert m["drift"]["kl"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert m["drift"]["baseline_logprob"]["difference"]["mean"] == 0.0
    assert m["ifeval"]["prompt_loose"]["difference"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 3}


def test_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_model, retention_files, capsys):
    code, run = evaluate(tmp_path, tiny_model, {**retention_files, "ifeval": tmp_path / "missing.jsonl"})
    assert code == 2 and not run.parent.exists()
    assert "missing.jsonl" in capsys.readouterr().err
    code, run = evaluate(tmp_path, tiny_model, retention_files, "drift_sampling.n=2", "drift_sampling.temperature=1")
    assert code == 2 and "drift_sampling.n=1" in capsys.readouterr().err


def test_without_lm_eval_it_exits_2_before_loading_a_model(tmp_path, tiny_model, retention_files, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval.tasks.ifeval", None)  # an import of it raises ImportError
    ifeval._lm_eval.cache_clear()
    try:
        code, run = evaluate(tmp_path, tiny_model, retention_files)
    finally:
        ifeval._lm_eval.cache_clear()
    assert code == 2 and not run.parent.exists()
    assert 'pip install -e ".[eval]"' in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["brand_voice", "safety"])
def test_shipped_retention_gates_load_and_refuse_a_policy_that_forgot(recipe):
    specs = load_gates(REPO / "recipes" / recipe / "retention_gates.yaml")
    assert {s.path[0] for s in specs} <= {"ifeval", "drift"}
    interval = lambda mean: {"mean": mean, "ci_low": mean - 0.05, "ci_high": mean + 0.05, "n": 60}  # noqa: E731
    kept = {
        "ifeval": {
            name: {"policy": interval(0.3), "baseline": interval(0.3), "difference": interval(0.0)}
            for name in ifeval.LEVELS
        },
        "drift": {
            "kl": interval(0.05),
            "baseline_logprob": {"policy": interval(-1.5), "baseline": interval(-1.5), "difference": interval(0.0)},
        },
    }
    manifest = {"stage": "evaluate retention", "metrics": kept}
    assert evaluate_gates(specs, manifest).passed
    # IFEval prompt-level strict 20 points lower than the base: refused, and the reason says which gate.
    forgot = json.loads(json.dumps(kept))
    forgot["ifeval"]["prompt_strict"] = {
        "policy": interval(0.1),
        "baseline": interval(0.3),
        "difference": interval(-0.2),
    }
    result = evaluate_gates(specs, {**manifest, "metrics": forgot})
    assert not result.passed and any("ifeval.prompt_strict.difference" in r for r in result.reasons)
    drifted = json.loads(json.dumps(kept))
    drifted["drift"]["kl"] = interval(5.0)
    assert not evaluate_gates(specs, {**manifest, "metrics": drifted}).passed
    # A retention gates file is checked against a retention run, not an evaluate-policy one.
    with pytest.raises(Exception, match="align evaluate retention"):
        evaluate_gates(specs, {"stage": "evaluate policy", "metrics": {}})


def test_baseline_option_sets_the_baseline(tmp_path, tiny_model, capsys):
    code = main(
        ["evaluate", "retention", str(tiny_model), "--baseline", "runs/other", f"runs_dir={tmp_path}", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "baseline: runs/other" in out and f"policy: {tiny_model}" in out
