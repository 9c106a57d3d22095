"""The brand-voice feedback demo's simulated users (recipes/brand_voice/make_feedback.py) and their shipped file:
valid through the real `align feedback import` checks, training prompts only, ratings that follow the rubric."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from align.annotate.judges import last_user_text
from align.core.config import load_config
from align.loop.config import LoopConfig
from align.stages import feedback

ROOT = Path(__file__).resolve().parents[2]
BRAND = ROOT / "recipes" / "brand_voice"
SHIPPED = BRAND / "feedback_simulated.jsonl"


def _script():
    spec = importlib.util.spec_from_file_location("make_feedback", BRAND / "make_feedback.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prompts(path: Path) -> set[str]:
    return {json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _args(module, **overrides) -> argparse.Namespace:
    args = module.parse_args(["--no-check"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_shipped_feedback_passes_the_import_checks(monkeypatch):
    monkeypatch.chdir(ROOT)
    report = feedback.check(feedback.Config(inputs=[str(SHIPPED)], redaction_backend="rules"))
    rows = [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]
    assert SHIPPED.stat().st_size < 1_000_000
    assert report["duplicates_dropped"] == 0
    assert sum(r["rating"] == "up" for r in rows) > 0 and sum(r["rating"] == "down" for r in rows) > 0
    assert {r["policy_run"] for r in rows} == {"embedded"}
    # Simulated users only: every user id is a hash of a simulated user's name, never a raw id.
    assert all(r["user"].startswith("sha256:") for r in rows)


def test_shipped_feedback_is_on_training_prompts_only():
    rows = [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]
    asked = {last_user_text(r["messages"]) for r in rows}
    assert asked <= _prompts(BRAND / "prompts_train.jsonl")
    assert not asked & _prompts(BRAND / "prompts_eval.jsonl")
    hand_written = _script().read_hand_written()
    corrected = [r for r in rows if "correction" in r]
    assert corrected, "the demo's file has agent corrections"
    assert all(
        r["rating"] == "down" and r["correction"] == hand_written[last_user_text(r["messages"])] for r in corrected
    )


def test_careful_users_rate_by_the_rubric():
    module = _script()
    hand_written = module.read_hand_written()
    prompt = next(iter(hand_written))
    good = hand_written[prompt]  # the recipe's own reply: greeting, "we", sign-off; scores near 1
    generations = [{"prompt": [{"role": "user", "content": prompt}], "prompt_id": "p", "responses": [good, "No."]}]
    rows = module.rate(generations, _args(module, random_users=0.0, slip=0.0, flag_share=1.0, correction_share=1.0))
    by_reply = {r["reply"]: r for r in rows}
    assert by_reply[good]["rating"] == "up" and "flag" not in by_reply[good] and "correction" not in by_reply[good]
    assert by_reply["No."]["rating"] == "down"
    # "No." has no greeting, no team voice and no sign-off (each scores 0); the first of the lowest is the flag.
    assert by_reply["No."]["flag"] == {"reason": "no greeting"}
    assert by_reply["No."]["correction"] == good


def test_random_users_ignore_the_reply():
    module = _script()
    prompt = next(iter(module.read_hand_written()))
    generations = [{"prompt": [{"role": "user", "content": prompt}], "prompt_id": "p", "responses": ["No."] * 200}]
    rows = module.rate(generations, _args(module, random_users=1.0, slip=0.0))
    ups = sum(r["rating"] == "up" for r in rows)
    assert 70 < ups < 130  # a coin flip each: 100 expected, far from the rubric's 0
    careful = module.rate(generations, _args(module, random_users=0.0, slip=0.0))
    assert all(r["rating"] == "down" for r in careful)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "loop_dir=runs/x",
            f"feedback.source={SHIPPED}",
            "feedback.mode=kto",
            "feedback.use=instead",
            "train.stages=[kto]",
        ],
    ],
)
def test_feedback_loop_config_loads_both_ways(overrides, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(LoopConfig, str(BRAND / "feedback_loop.yaml"), overrides)
    assert cfg.rounds == 1 and cfg.policy == "embedded"
    assert cfg.feedback.on == bool(overrides)
