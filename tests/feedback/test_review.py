"""Flagged and thumbs-down replies through a real local Argilla: `align feedback review` pushes them with the
review template, a reviewer writes a better reply (one says fine, one drafts), `align feedback reviewed`
brings the better reply back as a pair that `align dpo` reads."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from align.annotate import review
from align.annotate import review_pull as reviewed
from align.core.config import load_config
from align.data.preferences import load_preference_pairs
from align.stages import feedback

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parent / "data" / "feedback_example.jsonl"


def test_review_round_trip(argilla, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_FEEDBACK_SALT", "s")
    imported = feedback.run(
        load_config(feedback.Config, None, [f"inputs={json.dumps([str(EXAMPLE)])}", f"runs_dir={tmp_path}", "name=fb"])
    )
    assert imported["metrics"]["review_rows"] == 4
    cfg = review.Config(
        feedback=imported["path"], dataset="feedback-review", argilla=argilla.argilla_config(), runs_dir=str(tmp_path)
    )
    first, again = review.run(cfg), review.run(cfg)
    assert first["metrics"]["records_new"] == 4 and again["metrics"]["records_new"] == 0
    records = sorted(argilla.records_by_id("feedback-review").values(), key=lambda r: r["metadata"]["source"])
    assert records[0]["fields"]["reply"] == "No." and "flagged: curt, off-brand" in records[0]["fields"]["feedback"]
    alice = argilla.annotator("alice")
    alice.respond(
        records[0]["id"],
        verdict="rewrite",
        better_reply="I'm sorry about your order. Write to me at help.desk@example.com and I'll fix it.",
    )
    alice.respond(records[1]["id"], verdict="fine")
    alice.respond(records[2]["id"], status="draft", verdict="rewrite", better_reply="draft only")
    pulled = reviewed.run(
        reviewed.Config(
            dataset="feedback-review", argilla=argilla.argilla_config(), runs_dir=str(tmp_path), name="reviewed"
        )
    )
    assert pulled["metrics"]["pairs"] == 1 and pulled["metrics"]["verdict_fine"] == 1
    assert pulled["metrics"]["responses_draft"] == 1
    pairs = load_preference_pairs(str(tmp_path / "reviewed"))
    assert (
        pairs.rows[0]["chosen"][0]["content"] == "I'm sorry about your order. Write to me at [EMAIL] and I'll fix it."
    )
    assert pairs.rows[0]["rejected"][0]["content"] == "No." and pairs.rows[0]["reviewer"] == "alice"
    assert stat.S_IMODE(os.stat(tmp_path / "reviewed" / "preferences.jsonl").st_mode) == 0o600
