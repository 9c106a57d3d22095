"""The label journal: a torn last line is healed, a pull killed with SIGKILL loses nothing, a response
withdrawn on the server stops counting (the journal keeps its history), journals are private and kept
per server and dataset id."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from align.annotate import pull, push
from align.annotate.journal import Journal, journal_path
from align.core.errors import AlignError

REPO = Path(__file__).resolve().parents[2]
DATASET_ID = "0b7c3a52-6f0e-4a43-9c1a-2f4a7d1e9b10"


def response(i: int, user: str = "u1") -> dict:
    return {
        "kind": "response",
        "record_id": f"r{i}",
        "user_id": user,
        "username": user,
        "status": "submitted",
        "values": {"preference": {"value": "A"}},
        "updated_at": f"2026-01-01T00:00:0{i}",
    }


def test_append_after_a_cut_last_line_heals_it(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    Journal(path).append([response(1), response(2), response(3)])
    data = path.read_bytes()
    cut = data[: len(data) - 25]  # a crash in the middle of the third line
    path.write_bytes(cut)
    torn = Journal(path)
    assert sorted(torn.responses) == [("r1", "u1"), ("r2", "u1")]
    with caplog.at_level(logging.WARNING, logger="align.annotate.journal"):
        torn.append([response(4)])
    healed = Journal(path)  # before the fix this raised: line 3 was the torn one merged with the new one
    assert sorted(healed.responses) == [("r1", "u1"), ("r2", "u1"), ("r4", "u1")]
    torn_bytes = len(cut) - (cut.rfind(b"\n") + 1)
    assert f"removing a cut last line ({torn_bytes} bytes" in caplog.text
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert path.read_bytes().endswith(b"\n")


def test_a_last_line_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path).append([response(1), response(2)])
    path.write_bytes(path.read_bytes()[:-1])
    journal = Journal(path)
    journal.append([response(3)])
    assert sorted(Journal(path).responses) == [("r1", "u1"), ("r2", "u1"), ("r3", "u1")]


def test_damage_before_the_last_line_is_refused(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path).append([response(1), response(2)])
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0][:10] + "\n" + lines[1])
    with pytest.raises(AlignError, match=r"journal.jsonl:1: journal line is not JSON"):
        Journal(path)


def test_journal_is_keyed_by_server_and_dataset_id_and_private(tmp_path):
    one = journal_path(tmp_path, "http://10.0.0.1:6900", "align", "round1", DATASET_ID)
    other = journal_path(tmp_path, "http://10.0.0.2:6900", "align", "round1", DATASET_ID)
    again = journal_path(tmp_path, "http://10.0.0.1:6900", "align", "round1", DATASET_ID.replace("0b7c", "1111"))
    assert len({one, other, again}) == 3
    assert "10.0.0.1_6900" in str(one) and f"round1-{DATASET_ID}" in str(one)  # still readable
    Journal(one).append([response(1)])
    assert stat.S_IMODE(one.stat().st_mode) == 0o600
    folder = one.parent
    while folder != tmp_path:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        folder = folder.parent


# -- against the server ----------------------------------------------------------------------------


def _push(argilla, tmp_path, dataset: str, n: int) -> list[dict]:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"{dataset}: suggest a name for pet number {i}"}],
            "response_a": f"How about Biscuit the {i}th?",
            "response_b": "No.",
            "source": dataset,
        }
        for i in range(n)
    ]
    pairs = tmp_path / f"{dataset}.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset=dataset,
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
            journal_dir=str(tmp_path / "journal"),
        )
    )
    with argilla.owner() as conn:
        return sorted(conn.records(conn.dataset(dataset)["id"], responses=False), key=lambda r: r["external_id"])


def shown_orders(tmp_path) -> dict[str, str]:
    """record id -> the candidate shown as A, from the push runs (the server does not have it)."""
    return {
        r["record_id"]: r["shown_as_a"]
        for path in (tmp_path / "runs").glob("*/records.jsonl")
        for r in map(json.loads, path.read_text().splitlines())
    }


def _pull(argilla, tmp_path, dataset: str, journal_dir: Path, **extra) -> tuple[dict, dict]:
    m = pull.run(
        pull.Config(
            dataset=dataset,
            argilla=argilla.argilla_config(),
            journal_dir=str(journal_dir),
            runs_dir=str(tmp_path / "pull-runs"),
            **extra,
        )
    )
    rows = {
        r["record_id"]: r for r in map(json.loads, (Path(m["path"]) / "preferences.jsonl").read_text().splitlines())
    }
    return m, rows


@pytest.mark.integration
def test_pull_killed_mid_journal_write_then_the_next_pull_loses_nothing(argilla, tmp_path):
    records = _push(argilla, tmp_path, "sigkill", 5)
    alice, bob = argilla.annotator("alice"), argilla.annotator("bob")
    for rec in records:
        alice.respond(rec["id"], preference="A", reason="clear and kind")
        bob.respond(rec["id"], preference="B")
    # A journal of its own needs the push run for the A/B order, which is not on the server.
    [push_run] = (tmp_path / "runs").iterdir()
    _, reference = _pull(argilla, tmp_path, "sigkill", tmp_path / "reference-journal", push_runs=[str(push_run)])

    journal_dir = tmp_path / "journal"
    # A real pull in its own process, writing the journal 3 lines at a time; the second batch is
    # half on disk when the process is killed with SIGKILL.
    script = f"""
import os, sys, time
from align.annotate import journal, pull
from align.annotate.connection import ArgillaConfig

calls = []
real_write = journal.Journal._write

def write(self, f, data):
    calls.append(len(data))
    if len(calls) == 2:
        f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
        print("TORN", flush=True)
        time.sleep(120)
    real_write(self, f, data)

journal.Journal._write = write
pull.JOURNAL_BATCH = 3
pull.run(pull.Config(dataset="sigkill", argilla=ArgillaConfig(credentials={str(argilla.credentials)!r}),
                     journal_dir={str(journal_dir)!r}, runs_dir={str(tmp_path / "killed-runs")!r}))
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == "TORN", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    [path] = journal_dir.glob("*/align/sigkill-*/journal.jsonl")
    assert not path.read_bytes().endswith(b"\n")  # the kill left a torn line
    assert not (tmp_path / "killed-runs").exists() or not any((tmp_path / "killed-runs").iterdir())

    m, rows = _pull(argilla, tmp_path, "sigkill", journal_dir)
    assert rows == {rid: {**row} for rid, row in reference.items()}  # same labels as an uninterrupted pull
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # every line whole again
    responses = [(e["record_id"], e["user_id"]) for e in lines if e["kind"] == "response"]
    assert len(responses) == len(set(responses)) == 10  # nothing lost, nothing twice
    assert m["metrics"]["votes"] == 10


@pytest.mark.integration
def test_withdrawn_responses_stop_counting_and_the_journal_keeps_them(argilla, tmp_path, capsys):
    records = _push(argilla, tmp_path, "withdrawals", 3)
    alice, bob = argilla.annotator("alice"), argilla.annotator("bob")
    answers = {}
    for rec in records:
        answers[(rec["id"], "alice")] = alice.respond(rec["id"], preference="A", strength=2)
        answers[(rec["id"], "bob")] = bob.respond(rec["id"], preference="A")
    journal_dir = tmp_path / "journal"
    first, rows = _pull(argilla, tmp_path, "withdrawals", journal_dir)
    assert [rows[r["external_id"]]["n_votes"] for r in records] == [2, 2, 2]
    progress = capsys.readouterr().err

    r0, r1, r2 = records
    alice.update(answers[(r0["id"], "alice")]["id"], status="draft", preference="B")  # back to draft
    bob.delete(answers[(r1["id"], "bob")]["id"])  # response deleted
    with argilla.owner() as conn:
        conn.request("DELETE", f"/api/v1/records/{r2['id']}")  # record deleted
    second, rows = _pull(argilla, tmp_path, "withdrawals", journal_dir)
    assert [v["annotator"] for v in rows[r0["external_id"]]["votes"]] == ["bob"]
    assert [v["annotator"] for v in rows[r1["external_id"]]["votes"]] == ["alice"]
    bob_chose = shown_orders(tmp_path)[r0["external_id"]]  # he clicked A: the candidate shown there
    assert rows[r0["external_id"]]["counts"] == {"a": 0, "b": 0, "tie": 0, bob_chose: 1}
    assert rows[r0["external_id"]]["n_votes"] == 1
    assert set(rows) == {r0["external_id"], r1["external_id"]}
    assert second["metrics"]["responses_withdrawn"] == 4

    [path] = journal_dir.glob("*/align/withdrawals-*/journal.jsonl")
    history = [json.loads(line) for line in path.read_text().splitlines()]
    alice_r0 = [
        e["status"]
        for e in history
        if e.get("user_id") == answers[(r0["id"], "alice")]["user_id"] and e["record_id"] == r0["external_id"]
    ]
    assert alice_r0 == ["submitted", "withdrawn"]  # the history is kept
    assert sorted(e["why"] for e in history if e.get("status") == "withdrawn") == [
        "back to draft",
        "record deleted",
        "record deleted",
        "response deleted",
    ]

    # Offline builds use the journal's latest state: the same rows as the last online pull.
    _, offline_rows = _pull(argilla, tmp_path, "withdrawals", journal_dir, offline=True)
    assert offline_rows == rows

    # Submitting again counts again.
    alice.update(answers[(r0["id"], "alice")]["id"], status="submitted", preference="B")
    third, rows = _pull(argilla, tmp_path, "withdrawals", journal_dir)
    assert third["metrics"]["responses_journaled"] == 1 and third["metrics"]["responses_withdrawn"] == 0
    assert sorted(v["annotator"] for v in rows[r0["external_id"]]["votes"]) == ["alice", "bob"]
    assert "pulling 'withdrawals'" in progress and "3/3" in progress  # the progress bar, with counts


def test_offline_pull_asks_which_journal_when_a_dataset_name_was_reused(tmp_path):
    url = "http://10.0.0.9:6900"
    ids = [DATASET_ID, DATASET_ID.replace("0b7c", "2222")]
    for i, dataset_id in enumerate(ids):
        record = {
            "kind": "record",
            "record_id": f"r{i}",
            "argilla_id": "x",
            "metadata": {"shown_as_a": "a"},
            "fields": {"prompt": [{"role": "user", "content": f"Q{i}"}], "response_a": "yes", "response_b": "no"},
        }
        Journal(journal_path(tmp_path / "j", url, "align", "reused", dataset_id)).append([record, response(i)])
    cfg = dict(
        dataset="reused",
        journal_dir=str(tmp_path / "j"),
        runs_dir=str(tmp_path / "runs"),
        offline=True,
        argilla=pull.ArgillaConfig(api_url=url),
    )
    with pytest.raises(AlignError, match=f"2 journals .* choose one with dataset_id= one of {ids[0]}, {ids[1]}"):
        pull.run(pull.Config(**cfg))
    m = pull.run(pull.Config(**cfg, dataset_id=ids[1]))
    rows = [json.loads(line) for line in (Path(m["path"]) / "preferences.jsonl").read_text().splitlines()]
    assert [r["record_id"] for r in rows] == ["r1"] and m["notes"]["dataset_id"] == ids[1]


def test_offline_pull_reads_a_journal_from_before_journals_were_per_server(tmp_path):
    record = {
        "kind": "record",
        "record_id": "r1",
        "argilla_id": "x",
        "metadata": {"shown_as_a": "b"},
        "fields": {"prompt": [{"role": "user", "content": "Q"}], "response_a": "yes", "response_b": "no"},
    }
    Journal(tmp_path / "j" / "align" / "old-round" / "journal.jsonl").append([record, response(1)])
    m = pull.run(
        pull.Config(
            dataset="old-round",
            journal_dir=str(tmp_path / "j"),
            runs_dir=str(tmp_path / "runs"),
            offline=True,
            argilla=pull.ArgillaConfig(api_url="http://10.0.0.9:6900"),
        )
    )
    [row] = [json.loads(line) for line in (Path(m["path"]) / "preferences.jsonl").read_text().splitlines()]
    # the vote is for shown A, which was candidate b
    assert row["majority"] == "b" and row["response_b"] == "yes" and row["chosen"][0]["content"] == "yes"
