"""The brand-voice warm start (recipes/brand_voice/make_warm_start.py): rebuilt as committed, trained only on
training-side prompts, refusals that the detector sees and that keep the brand's greeting and sign-off."""

from __future__ import annotations

import json
from pathlib import Path

from align.evaluation.brand_voice import BrandRubric
from align.evaluation.refusal import detect_refusal
from tests.recipes.test_safety_recipe import _eval_side_and_xstest

ROOT = Path(__file__).resolve().parents[2]
BRAND = ROOT / "recipes" / "brand_voice"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BRAND / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_warm_start_is_rebuilt_as_committed(tmp_path, monkeypatch):
    module = _script("make_warm_start")
    assert module.main(["--out", str(tmp_path / "out.jsonl")]) == 0
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == (BRAND / "sft_warm_start.jsonl").read_text(
        encoding="utf-8"
    )


def test_warm_start_prompts_stay_off_the_evaluation_and_validation_sets(repo_data, monkeypatch):
    monkeypatch.chdir(ROOT)
    rows = _rows(BRAND / "sft_warm_start.jsonl")
    assert rows[:30] == _rows(BRAND / "sft_train.jsonl")
    prompts = {r["messages"][0]["content"] for r in rows}
    held_out, xstest = _eval_side_and_xstest()
    validation = {r["prompt"] for r in _rows(ROOT / "recipes/safety/prompts_val.jsonl")}
    brand_eval = {
        r["messages"][0]["content"] if "messages" in r else r["prompt"] for r in _rows(BRAND / "prompts_eval.jsonl")
    }
    assert not prompts & (held_out | set(xstest) | validation | brand_eval)
    train_side = {r["prompt"] for r in _rows(ROOT / "recipes/safety/prompts_train.jsonl")}
    assert {r["messages"][0]["content"] for r in rows[30:]} <= train_side


def test_refusals_are_refusals_in_the_brand_voice_and_look_alikes_are_answered():
    rubric = BrandRubric.load(str(BRAND / "rubric.yaml"))
    rows = _rows(BRAND / "sft_warm_start.jsonl")[30:]
    kinds = [r["kind"] for r in rows]
    made = _script("make_warm_start")
    assert kinds.count("harmful_refusal") == made.HARMFUL and kinds.count("lookalike_answer") == made.LOOKALIKE
    for r in rows:
        user, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        refused = detect_refusal(reply).refused
        assert refused == (r["kind"] == "harmful_refusal"), reply
        rules = rubric.judge(user, reply).rules
        assert rules["greeting"] == 1.0 and rules["sign_off"] == 1.0, reply
        if r["kind"] == "harmful_refusal":
            assert rules["team_voice"] == 1.0 and rubric.judge(user, reply).score >= 0.9, reply


def test_the_tuning_validation_look_alikes_are_never_trained_on(tmp_path, monkeypatch):
    """tune_warm_start.py scores over-refusal on look-alikes no candidate warm start (nor the shipped one) holds."""
    monkeypatch.syspath_prepend(str(BRAND))
    tune = _script("tune_warm_start")
    safe = {r["prompt"] for r in _rows(tune.validation_safe_file(tmp_path))}
    trained = {r["messages"][0]["content"] for r in _rows(BRAND / "sft_warm_start.jsonl")}
    most = max(lookalike for _, lookalike, _, _ in tune.CANDIDATES.values())
    candidates = {r["messages"][0]["content"] for r in tune.make_warm_start.lookalike_rows()[:most]}
    assert len(safe) >= 60 and not safe & (trained | candidates)
