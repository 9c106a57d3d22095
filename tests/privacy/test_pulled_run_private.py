"""A pulled run's preferences.jsonl names annotators and holds their reasons: owner-only (0600), like
the journal it is built from, whatever the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from align.annotate import pull
from align.annotate.journal import Journal, journal_path

URL = "http://10.0.0.9:6900"
DATASET_ID = "0b7c3a52-6f0e-4a43-9c1a-2f4a7d1e9b10"


def test_offline_pull_writes_preferences_owner_only(tmp_path):
    record = {
        "kind": "record",
        "record_id": "r1",
        "argilla_id": "x",
        "metadata": {"shown_as_a": "a"},
        "fields": {"prompt": [{"role": "user", "content": "Q"}], "response_a": "yes", "response_b": "no"},
    }
    vote = {
        "kind": "response",
        "record_id": "r1",
        "user_id": "u1",
        "username": "dana.lee",
        "status": "submitted",
        "values": {"preference": {"value": "A"}, "reason": {"value": "B is rude"}},
        "updated_at": "2026-01-01T00:00:01",
    }
    Journal(journal_path(tmp_path / "j", URL, "align", "round-1", DATASET_ID)).append([record, vote])
    old = os.umask(0o022)  # the usual umask: without care the file would be world-readable (0644)
    try:
        m = pull.run(
            pull.Config(
                dataset="round-1",
                journal_dir=str(tmp_path / "j"),
                runs_dir=str(tmp_path / "runs"),
                offline=True,
                argilla=pull.ArgillaConfig(api_url=URL),
            )
        )
    finally:
        os.umask(old)
    path = Path(m["path"]) / pull.PREFERENCES
    [row] = [json.loads(line) for line in path.read_text().splitlines()]
    assert row["votes"][0]["annotator"] == "dana.lee"  # the file does hold a name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
