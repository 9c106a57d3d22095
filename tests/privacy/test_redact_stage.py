"""`align redact FILE`: a redacted copy as a run, counts in the manifest, values nowhere; --dry-run."""

from __future__ import annotations

import json
from pathlib import Path

from align.cli import main
from align.data.records import read_records
from align.privacy.redact import detector_versions

VALUES = [
    "jane.doe@example.com",
    "(415) 555-2671",
    "4111 1111 1111 1111",
    "DE89370400440532013000",
    "192.168.1.20",
    "EMP-123456",
]
ROWS = [
    {
        "messages": [
            {"role": "user", "content": "I'm jane.doe@example.com, call (415) 555-2671"},
            {"role": "assistant", "content": "Noted; release 2.13.0 ships 2026-12-01."},
        ]
    },
    {"messages": [{"role": "user", "content": "charge 4111 1111 1111 1111 or DE89370400440532013000"}]},
    {"messages": [{"role": "user", "content": "order #A-1029384, ISBN 978-3-16-148410-0, $12.50"}]},
    {"messages": [{"role": "user", "content": "host 192.168.1.20, badge EMP-123456"}]},
]


def write(tmp_path: Path) -> Path:
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_redact_writes_a_redacted_run_with_counts_and_no_values(tmp_path):
    data = write(tmp_path)
    runs = tmp_path / "runs"
    rc = main(
        ["redact", str(data), f"runs_dir={runs}", "name=clean", "patterns.EMPLOYEE_ID=EMP-\\d{6}", "backend=rules"]
    )
    assert rc == 0
    run = runs / "clean"
    rows = [r for _, r in read_records(run)]  # later stages read the run as data
    assert rows[0]["messages"][0]["content"] == "I'm [EMAIL], call [PHONE]"
    assert rows[0]["messages"][1] == ROWS[0]["messages"][1]
    assert rows[1]["messages"][0]["content"] == "charge [CARD] or [IBAN]"
    assert rows[2] == ROWS[2]
    assert rows[3]["messages"][0]["content"] == "host [IP], badge [EMPLOYEE_ID]"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["metrics"]["findings"] == {"CARD": 1, "EMAIL": 1, "EMPLOYEE_ID": 1, "IBAN": 1, "IP": 1, "PHONE": 1}
    assert (manifest["metrics"]["records_read"], manifest["metrics"]["records_redacted"]) == (4, 3)
    assert manifest["notes"]["redaction"] == {"backend": "rules", **detector_versions()}
    written = files_under(run)
    assert len(written) >= 3
    for value in VALUES:
        assert not [p for p in written if value in p.read_text(errors="replace")], value


def test_drop_mode_leaves_out_records_with_findings(tmp_path):
    data = write(tmp_path)
    assert (
        main(["redact", str(data), f"runs_dir={tmp_path / 'runs'}", "name=dropped", "mode=drop", "backend=rules"]) == 0
    )
    run = tmp_path / "runs" / "dropped"
    assert [r for _, r in read_records(run)] == [ROWS[2]]
    metrics = json.loads((run / "manifest.json").read_text())["metrics"]
    assert (metrics["records_dropped"], metrics["records_written"]) == (3, 1)


def test_dry_run_shows_masked_changes_and_writes_nothing(tmp_path, capsys):
    data = write(tmp_path)
    runs = tmp_path / "runs"
    # options after FILE, then overrides
    assert main(["redact", str(data), "--dry-run", f"runs_dir={runs}", "backend=rules"]) == 0
    out = capsys.readouterr().out
    assert not runs.exists()
    assert f"{data}:1  messages[0].content  EMAIL  j******************m  -> [EMAIL]" in out
    assert f"{data}:2  messages[0].content  CARD" in out and f"{data}:4  messages[0].content  IP" in out
    assert (
        "dry run (rules backend): 3 of 4 records would be redacted (CARD 1, EMAIL 1, IBAN 1, IP 1, PHONE 1); nothing written"
        in out
    )
    for value in VALUES:
        assert value not in out


def test_bad_mode_and_missing_file_exit_2_with_one_line(tmp_path, capsys):
    data = write(tmp_path)
    assert main(["redact", str(data), "mode=mask", f"runs_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "align: error: 'mode' must be one of redact, drop; got 'mask'"
    assert main(["redact", str(tmp_path / "nope.jsonl"), f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert "data not found" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["redact", str(tmp_path / "empty.jsonl"), f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert "no records to redact" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
