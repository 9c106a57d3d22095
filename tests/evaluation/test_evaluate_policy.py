"""`align evaluate policy` end to end on the tiny model (hf engine): default baseline, reward-model
win rate, metrics recomputed from replies.jsonl, and exit code 2 with nothing written for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.cli import main
from align.core import runs
from align.evaluation.bootstrap import bootstrap_mean, bootstrap_paired_difference
from align.stages.evaluate_policy import base_of
from tests.evaluation.conftest import RUBRIC

FAST = ["engine=hf", "sampling.max_tokens=6", "bootstrap.resamples=200"]


def sets_args(files) -> list[str]:
    return [
        f"harmful.paths=[{files['harmful']}]",
        f"safe.paths=[{files['safe']}]",
        "safe.match={label: safe}",
        f"brand.paths=[{files['brand']}]",
        f"brand_rubric={RUBRIC}",
    ]


def evaluate(tmp_path, policy, files, *overrides) -> tuple[int, Path]:
    runs_dir = tmp_path / "runs"
    code = main(
        ["evaluate", "policy", str(policy), f"runs_dir={runs_dir}", "name=ev", *FAST, *sets_args(files), *overrides]
    )
    return code, runs_dir


def replies(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "replies.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_policy_against_its_base_with_reward_model(tmp_path, policy_chain, prompt_files, tiny_model):
    code, runs_dir = evaluate(tmp_path, policy_chain["policy"], prompt_files, f"reward_model={policy_chain['reward']}")
    assert code == 0
    manifest = runs.read_manifest(runs_dir / "ev")
    rows = replies(runs_dir / "ev")
    # The baseline defaults to the model the SFT adapter sits on: the tiny model directory.
    assert manifest["notes"]["baseline"] == str(tiny_model.resolve()) and not manifest["notes"]["baseline_is_policy"]
    assert {i["role"] for i in manifest["inputs"]} >= {"policy", "baseline", "reward_model", "brand_rubric"}
    assert [r["prompt_set"] for r in rows] == ["harmful"] * 2 + ["safe"] * 2 + ["brand"] * 2
    assert rows[2]["source"].endswith("safe.jsonl:1") and rows[3]["source"].endswith("safe.jsonl:3")
    for row in rows:
        for role in ("policy", "baseline"):
            judged = row[role]
            assert judged["refusal"] in ("refusal", "partial", "compliance") and 1 <= judged["tokens"] <= 6
            assert isinstance(judged["reward"], float)
        assert row["policy_wins"] in (0.0, 0.5, 1.0)
    metrics = manifest["metrics"]
    assert set(metrics["brand"]) == {
        "refusal_rate",
        "length_words",
        "brand_score",
        "rm_reward",
        "rm_win_rate",
        "brand_rules",
    }
    assert "brand_score" not in metrics["harmful"]
    # Every figure is recomputable from replies.jsonl with the same bootstrap settings.
    for name in ("harmful", "safe", "brand"):
        set_rows = [r for r in rows if r["prompt_set"] == name]
        pol = [r["policy"]["reward"] for r in set_rows]
        base = [r["baseline"]["reward"] for r in set_rows]
        assert metrics[name]["rm_reward"]["policy"] == bootstrap_mean(pol, resamples=200).as_dict()
        assert (
            metrics[name]["rm_reward"]["difference"] == bootstrap_paired_difference(pol, base, resamples=200).as_dict()
        )
        assert metrics[name]["rm_win_rate"]["mean"] == pytest.approx(sum(r["policy_wins"] for r in set_rows) / 2)
        words = [float(r["policy"]["words"]) for r in set_rows]
        assert metrics[name]["length_words"]["policy"]["mean"] == pytest.approx(sum(words) / len(words))
    brand = [r["policy"]["brand_score"] for r in rows if r["prompt_set"] == "brand"]
    assert metrics["brand"]["brand_score"]["policy"]["mean"] == pytest.approx(sum(brand) / 2)
    assert rows[4]["policy"]["brand_rules"]["complaint"] is not None  # "arrived broken" is a complaint
    assert rows[5]["policy"]["brand_rules"]["complaint"] is None
    lines = (runs_dir / "ev" / runs.METRICS).read_text().splitlines()
    assert [json.loads(line)["prompt_set"] for line in lines] == ["harmful", "safe", "brand"]


@pytest.mark.slow
def test_a_model_without_a_base_is_compared_with_itself(tmp_path, tiny_model, prompt_files):
    code, runs_dir = evaluate(tmp_path, tiny_model, {**prompt_files}, "brand.paths=[]")
    assert code == 0
    manifest = runs.read_manifest(runs_dir / "ev")
    assert manifest["notes"]["baseline_is_policy"] and set(manifest["metrics"]) >= {"harmful", "safe"}
    assert "brand" not in manifest["metrics"] and "baseline_generation_s" not in manifest["metrics"]
    for name in ("harmful", "safe"):
        diff = manifest["metrics"][name]["refusal_rate"]["difference"]
        assert diff["mean"] == diff["ci_low"] == diff["ci_high"] == 0.0


@pytest.mark.slow
def test_base_of_follows_adapters_to_the_first_base(policy_chain, tiny_model):
    assert base_of(str(policy_chain["policy"])) == str(tiny_model.resolve())
    # The reward run was trained from the SFT run: followed through it to the same first base.
    assert base_of(str(policy_chain["reward"])) == str(tiny_model.resolve())
    assert base_of("embedded") == "embedded"


@pytest.mark.slow
@pytest.mark.parametrize(
    "case,message",
    [
        ("missing_file", "data not found"),
        ("empty_set", "prompt set 'safe' is empty"),
        ("policy_is_reward_model", "is a reward model, not a policy"),
        ("reward_model_is_policy", "not a reward model"),
        ("no_rubric", "brand_rubric is not"),
        ("n_samples", "sampling.n=1"),
        ("no_sets", "no prompt set given"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, policy_chain, prompt_files, capsys, case, message):
    files = dict(prompt_files)
    policy, extra = policy_chain["policy"], []
    if case == "missing_file":
        files["harmful"] = tmp_path / "nope.jsonl"
    elif case == "empty_set":
        extra = ["safe.match={label: nothing}"]
    elif case == "policy_is_reward_model":
        policy = policy_chain["reward"]
    elif case == "reward_model_is_policy":
        extra = [f"reward_model={policy_chain['policy']}"]
    elif case == "no_rubric":
        extra = ["brand_rubric="]
    elif case == "n_samples":
        extra = ["sampling.n=2", "sampling.temperature=0.7"]
    elif case == "no_sets":
        extra = ["harmful.paths=[]", "safe.paths=[]", "brand.paths=[]"]
    code, runs_dir = evaluate(tmp_path, policy, files, *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len([line for line in err.splitlines() if line.startswith("align: error")]) == 1
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_greedy_one_reply_survives_a_partial_sampling_override():
    """Overriding one sampling key must not bring back generation's defaults (n=2, temperature 0.8)."""
    from align.core.config import load_config
    from align.stages.evaluate_policy import Config

    cfg = load_config(Config, None, ["policy=embedded", "sampling.max_tokens=8"])
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.max_tokens) == (1, 0.0, 8)


def test_dry_run_reads_and_counts_every_prompt_set(tmp_path, capsys):
    # The shipped config's sets, read from data/ without loading a model; a missing file is exit 2.
    root = Path(__file__).resolve().parents[2]
    config = str(root / "configs" / "evaluate" / "policy.yaml")
    assert main(["evaluate", "policy", "--config", config, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "harmful: 100" in out and "safe: 100" in out
    missing = tmp_path / "nope.csv"
    assert main(["evaluate", "policy", "--config", config, f"harmful.paths=[{missing}]", "--dry-run"]) == 2
    assert "data not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_set_decodes_to_its_own_max_tokens(tmp_path, tiny_model, prompt_files):
    """`sampling.set_max_tokens` caps one set's replies (a refusal shows in its first words) and leaves the others
    at `sampling.max_tokens`, in one engine load; replies stay in prompt order."""
    code, runs_dir = evaluate(tmp_path, tiny_model, prompt_files, "sampling.set_max_tokens={harmful: 2, safe: 3}")
    assert code == 0
    rows = replies(runs_dir / "ev")
    budget = {"harmful": 2, "safe": 3, "brand": 6}
    for row in rows:
        assert 1 <= row["policy"]["tokens"] <= budget[row["prompt_set"]]
    # The random tiny model never ends a reply early, so every reply uses its set's whole budget.
    assert {(r["prompt_set"], r["policy"]["tokens"]) for r in rows} == set(budget.items())
    assert [r["prompt_set"] for r in rows] == sorted((r["prompt_set"] for r in rows), key=list(budget).index)
    metrics = runs.read_manifest(runs_dir / "ev")["metrics"]
    assert metrics["policy_new_tokens"] == sum(budget[r["prompt_set"]] for r in rows)


@pytest.mark.parametrize(
    "value, message",
    [
        ("{harmfull: 48}", "names prompt set 'harmfull'"),
        ("{safe: 0}", "'sampling.set_max_tokens.safe' must be a whole number >= 1"),
    ],
)
def test_a_bad_set_max_tokens_is_refused(value, message):
    from align.core.config import load_config
    from align.core.errors import AlignError
    from align.stages.evaluate_policy import Config

    with pytest.raises(AlignError, match=message):
        load_config(Config, None, ["policy=embedded", f"sampling.set_max_tokens={value}"])
