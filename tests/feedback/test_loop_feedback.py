"""The loop's `feedback:` source (align/loop/feedback.py): what a round trains on, marked by origin, KTO weights
from the round's counts, the config checks, and the report's tables (origins, users' ratings per policy run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.core import runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.data.preferences import load_preference_pairs
from align.loop.config import LoopConfig
from align.loop.feedback import FeedbackSource, kto_wiring, report_section, write_round_data
from align.stages import feedback

EXAMPLE = Path(__file__).parent / "data" / "feedback_example.jsonl"


@pytest.fixture
def feedback_run(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("ALIGN_FEEDBACK_SALT", "s")
    cfg = load_config(
        feedback.Config, None, [f"inputs={json.dumps([str(EXAMPLE)])}", f"runs_dir={tmp_path}", "name=fb"]
    )
    return feedback.run(cfg)["path"]


@pytest.fixture
def labels_run(tmp_path) -> str:
    """A round's labels as the loop's labels run holds them: 3 usable pairs and a tie."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": f"Helpful answer {i}."}],
            "rejected": [{"role": "assistant", "content": "No."}],
        }
        for i in range(3)
    ]
    rows.append({"prompt": [{"role": "user", "content": "Tie?"}], "chosen": None, "rejected": None})
    with runs.new_run("loop labels", {}, tmp_path, "labels") as run:
        (run.path / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        run.add_output("preferences", "preferences.jsonl")
        return runs.finish(run)["path"]


def test_pairs_with_generated_labels_count_both_origins(tmp_path, feedback_run, labels_run):
    data = write_round_data(
        FeedbackSource(source=feedback_run, mode="pairs"), feedback_run, labels_run, tmp_path / "r1"
    )
    # 3 usable generated pairs (the tie is left out) + 6 corrections in the example file.
    assert data["metrics"]["by_origin"] == {"correction": 6, "generated": 3} and data["metrics"]["usable_pairs"] == 9
    pairs = load_preference_pairs(data["path"])
    assert len(pairs.rows) == 9 and pairs.rows[-1]["origin"] == "correction"
    assert [i["role"] for i in data["inputs"]] == ["labels", "feedback"]  # lineage to both


def test_kto_instead_of_generated_pairs_and_its_weights(tmp_path, feedback_run):
    cfg = FeedbackSource(source=feedback_run, mode="kto", use="instead")
    data = write_round_data(cfg, feedback_run, None, tmp_path / "r1")
    assert data["metrics"]["by_origin"] == {"thumbs": 25}
    assert (data["metrics"]["desirable"], data["metrics"]["undesirable"]) == (15, 10)
    # 15 vs 10: ratio 1.5 -> undesirable_weight 1.5 / (7/6) = 1.2857 (the KTO paper's [1, 4/3]).
    assert kto_wiring(data, {}) == {"training.desirable_weight": 1.0, "training.undesirable_weight": 1.2857}
    assert kto_wiring(data, {"training": {"desirable_weight": 2.0}}) == {}  # the user's choice stays
    examples = load_preference_pairs(data["path"], unpaired=True)
    assert examples.report["desirable"] == 15


def test_kto_with_generated_pairs_unpairs_them(tmp_path, feedback_run, labels_run):
    data = write_round_data(FeedbackSource(source=feedback_run, mode="kto"), feedback_run, labels_run, tmp_path / "r1")
    assert data["metrics"]["by_origin"] == {"generated": 6, "thumbs": 25}
    assert (data["metrics"]["desirable"], data["metrics"]["undesirable"]) == (18, 13)


def test_report_shows_origins_and_ratings_per_policy_run(tmp_path, feedback_run, labels_run):
    from align.loop.rounds import RoundSummary

    data = write_round_data(
        FeedbackSource(source=feedback_run, mode="pairs"), feedback_run, labels_run, tmp_path / "r1"
    )
    page = report_section(
        [RoundSummary(round=0, policy="base"), RoundSummary(round=1, policy="p", feedback=data["path"])]
    )
    assert "Training data by origin" in page and "correction 6, generated 3" in page
    assert "Users&#x27; ratings per policy run" in page or "Users' ratings per policy run" in page
    assert (
        "dpo-round1" in page and "0.500 [0.254, 0.746]" in page
    )  # 6 of 12 up, Wilson by hand in test_feedback_drift.py
    assert report_section([RoundSummary(round=0, policy="base")]) == ""


def loop_config(tmp_path, *overrides):
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates: []\n")
    return load_config(LoopConfig, None, ["recipe=fb", f"gates={gates}", *overrides])


def test_loop_config_checks_the_feedback_source(tmp_path, feedback_run):
    cfg = loop_config(tmp_path, f"feedback.source={feedback_run}", "feedback.mode=kto", "train.stages=[kto]")
    assert cfg.feedback.applies(1) and cfg.feedback.use is None  # unset: with the generated pairs
    with pytest.raises(AlignError, match="feedback.mode=kto trains KTO: set train.stages to end with kto"):
        loop_config(tmp_path, f"feedback.source={feedback_run}", "feedback.mode=kto")
    with pytest.raises(AlignError, match="train.stages has kto, which the loop trains on feedback"):
        loop_config(tmp_path, "train.stages=[kto]")
    with pytest.raises(AlignError, match="'feedback.source' not found"):
        loop_config(tmp_path, f"feedback.source={tmp_path / 'nope.jsonl'}", "feedback.mode=pairs")
    with pytest.raises(AlignError, match="'feedback.mode' is required with feedback.source"):
        loop_config(tmp_path, f"feedback.source={feedback_run}")
    only_round_2 = loop_config(
        tmp_path, f"feedback.source={feedback_run}", "feedback.mode=pairs", "feedback.rounds=[2]"
    )
    assert not only_round_2.feedback.applies(1) and only_round_2.feedback.applies(2)


def test_a_loop_started_before_the_feedback_section_resumes_without_a_config_change(tmp_path):
    from align.core.config import to_dict
    from align.loop.config import loop_changes

    now = to_dict(loop_config(tmp_path))
    then = {k: v for k, v in now.items() if k not in ("feedback", "kto")}  # as a loop written before them saved it
    assert loop_changes(then, {}, now, {}) == ([], [])
