"""The server stops in the middle of a pull: a clear error, nothing written, and nothing lost.

The stop is real (the server, its worker and Redis are terminated by pid); only the moment is
chosen, by stopping it just before the pull asks for its second page of records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.annotate import connection, pull, push
from align.core.errors import ServiceError
from tests.annotate.conftest import shown_orders

pytestmark = pytest.mark.integration


def test_server_stopped_mid_pull_then_a_later_pull_completes(argilla, tmp_path, monkeypatch):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Name a colour, please ({i})"}],
            "response_a": f"Blue, number {i}.",
            "response_b": "I will not.",
            "source": "faults",
        }
        for i in range(6)
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="faults",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
            journal_dir=str(tmp_path / "journal"),
        )
    )
    orders = shown_orders(tmp_path / "runs")
    alice, bob = argilla.annotator("alice"), argilla.annotator("bob")
    with argilla.owner() as conn:
        records = conn.records(conn.dataset("faults")["id"])
    for rec in records:
        alice.respond(rec["id"], preference="A")
        bob.respond(rec["id"], preference="B" if orders[rec["external_id"]] == "a" else "A")

    runs_dir = tmp_path / "pull-runs"
    reference = pull.run(
        pull.Config(
            dataset="faults",
            argilla=argilla.argilla_config(),
            journal_dir=str(tmp_path / "reference-journal"),
            runs_dir=str(tmp_path / "ref-runs"),
            push_runs=[str(p) for p in (tmp_path / "runs").iterdir()],
        )
    )

    monkeypatch.setattr(connection, "PAGE", 2)
    real_get = connection.Connection._get_json
    stopped = []

    def get_json(self, path, params):
        if path.endswith("/records") and params.get("offset", 0) >= 2 and not stopped:
            argilla.stop()
            stopped.append(True)
        return real_get(self, path, params)

    monkeypatch.setattr(connection.Connection, "_get_json", get_json)
    journal_dir = tmp_path / "journal"
    cfg = pull.Config(
        dataset="faults",
        argilla=argilla.argilla_config(retry_seconds=2),
        journal_dir=str(journal_dir),
        runs_dir=str(runs_dir),
    )
    try:
        with pytest.raises(ServiceError, match=argilla.api_url):
            pull.run(cfg)
        assert stopped
        assert not runs_dir.exists() or not any(runs_dir.iterdir())  # no run, not even a partial one
        [journal] = journal_dir.glob("*/align/faults-*/journal.jsonl")
        kinds = [json.loads(line)["kind"] for line in journal.read_text().splitlines()]
        assert kinds.count("response") == 4  # the first page (2 records x 2 annotators) was kept
    finally:
        monkeypatch.undo()
        if stopped:
            argilla.start()

    resumed = pull.run(
        pull.Config(
            dataset="faults", argilla=argilla.argilla_config(), journal_dir=str(journal_dir), runs_dir=str(runs_dir)
        )
    )
    assert resumed["metrics"]["responses_journaled"] == 8  # only what the failed pull had not kept
    got = (Path(resumed["path"]) / "preferences.jsonl").read_text()
    assert got == (Path(reference["path"]) / "preferences.jsonl").read_text()
    assert len(got.splitlines()) == 6
