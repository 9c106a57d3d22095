"""Redaction before annotation, against a real local Argilla: annotators see only placeholders.

Pairs holding e-mail addresses and phone numbers are pushed with the default `redaction: redact`;
the records read back through Argilla's API, the annotation page in a browser, and every file the
push wrote hold placeholders and never the values. Labels pulled back refer to the redacted text:
the record ids are computed from it and the pulled preference rows carry it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from align.annotate import pull, push
from align.annotate.votes import record_id
from align.cli import main as cli_main
from tests.annotate.conftest import shown_orders

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "annotate"
VALUES = ["jane.doe@example.com", "(415) 555-2671", "+44 20 7946 0958", "bob@example.org", "415-555-0199"]
PAIRS = [
    {
        "prompt": [{"role": "user", "content": "I'm jane.doe@example.com, call me at (415) 555-2671 about my order"}],
        "response_a": "Thanks! We will call (415) 555-2671 today about order #A-1029384.",
        "response_b": "Write to bob@example.org instead.",
        "source": "redaction-test",
    },
    {
        "prompt": [{"role": "user", "content": "What is our London office number?"}],
        "response_a": "It is +44 20 7946 0958, open from 9:00.",
        "response_b": "Call 415-555-0199.",
        "source": "redaction-test",
    },
    {
        "prompt": [{"role": "user", "content": "Which version fixed the bug?"}],
        "response_a": "Version 2.13.0, released 2026-12-01.",
        "response_b": "No idea.",
        "source": "redaction-test",
    },
]
REDACTED = [
    (
        [{"role": "user", "content": "I'm [EMAIL], call me at [PHONE] about my order"}],
        "Thanks! We will call [PHONE] today about order #A-1029384.",
        "Write to [EMAIL] instead.",
    ),
    (
        [{"role": "user", "content": "What is our London office number?"}],
        "It is [PHONE], open from 9:00.",
        "Call [PHONE].",
    ),
    ([{"role": "user", "content": "Which version fixed the bug?"}], "Version 2.13.0, released 2026-12-01.", "No idea."),
]


def write_pairs(path: Path) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return path


def files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def pushed(argilla, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redaction")
    pairs = write_pairs(tmp / "pairs.jsonl")
    manifest = push.run(
        push.Config(
            pairs=str(pairs),
            dataset="redacted",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp / "runs"),
            journal_dir=str(tmp / "journal"),
        )
    )
    return {"tmp": tmp, "manifest": manifest}


def test_push_shows_annotators_only_placeholders(argilla, pushed):
    records = argilla.records_by_id("redacted")
    ids = [record_id(prompt, a, b, 1) for prompt, a, b in REDACTED]
    assert sorted(records) == sorted(ids)  # ids are computed from the text annotators see
    for rid, (prompt, a, b) in zip(ids, REDACTED):
        fields = records[rid]["fields"]
        assert fields["prompt"] == prompt
        assert {fields["response_a"], fields["response_b"]} == {a, b}
    server_text = json.dumps(records)
    for value in VALUES:
        assert value not in server_text, value
    metrics = pushed["manifest"]["metrics"]
    assert metrics["redaction"] == {
        "mode": "redact",
        "findings": {"EMAIL": 2, "PHONE": 4},
        "pairs_redacted": 2,
        "pairs_dropped": 0,
        "skipped_identical_after_redaction": 0,
    }
    written = files_under(Path(pushed["manifest"]["path"]))
    assert len(written) >= 3
    for value in VALUES:
        assert not [p for p in written if value in p.read_text(errors="replace")], value


def test_labels_pulled_back_refer_to_the_redacted_text(argilla, pushed, tmp_path):
    records = argilla.records_by_id("redacted")
    first = records[record_id(*REDACTED[0], 1)]
    # The annotator prefers the candidate shown as A; which candidate that is depends on the swap.
    argilla.annotator("redaction_annotator").respond(first["id"], preference="A")
    journal = tmp_path / "journal"
    manifest = pull.run(
        pull.Config(
            dataset="redacted",
            argilla=argilla.argilla_config(),
            journal_dir=str(journal),
            runs_dir=str(tmp_path / "runs"),
            push_runs=[pushed["manifest"]["path"]],
        )
    )
    rows = [json.loads(line) for line in (Path(manifest["path"]) / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    prompt, a, b = REDACTED[0]
    order = shown_orders(pushed["tmp"] / "runs")[first["external_id"]]
    chosen, rejected = (a, b) if order == "a" else (b, a)
    assert rows[0]["record_id"] == record_id(prompt, a, b, 1)
    assert rows[0]["prompt"] == prompt
    assert rows[0]["chosen"] == [{"role": "assistant", "content": chosen}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": rejected}]
    for value in VALUES:
        assert not [p for p in files_under(Path(manifest["path"]), journal) if value in p.read_text(errors="replace")]


def test_drop_mode_pushes_only_clean_pairs(argilla, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    manifest = push.run(
        push.Config(
            pairs=str(pairs),
            dataset="redacted-drop",
            redaction="drop",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert manifest["metrics"]["redaction"]["pairs_dropped"] == 2
    records = argilla.records_by_id("redacted-drop")
    assert [r["fields"]["prompt"] for r in records.values()] == [REDACTED[2][0]]


def test_bad_redaction_setting_exits_2_before_connecting(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    rc = cli_main(
        [
            "annotate",
            "push",
            str(pairs),
            "dataset=x",
            "redaction=mask",
            f"runs_dir={tmp_path / 'runs'}",
            "argilla.api_url=http://127.0.0.1:9",
        ]
    )
    assert rc == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "align: error: 'redaction' must be one of redact, drop, off, got 'mask'"
    )
    assert not (tmp_path / "runs").exists()


def test_annotation_page_shows_placeholders(argilla, tmp_path):
    """The annotator's page in a browser: placeholders, no values; the screenshot is kept in artifacts/."""
    # The page shows one record, picked by the server's order: only pairs that carry personal data
    # go into this dataset, so whichever is shown has placeholders (the look-alike pair has none).
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS[:2]))
    push.run(
        push.Config(
            pairs=str(pairs), dataset="redacted-page", argilla=argilla.argilla_config(), runs_dir=str(tmp_path / "runs")
        )
    )
    with argilla.owner() as conn:
        dataset_id = conn.dataset("redacted-page", "align")["id"]
    browser = argilla.signed_in_browser(tmp_path / "profile")
    page = f"{argilla.api_url}/dataset/{dataset_id}/annotation-mode"
    dom = subprocess.run([*browser, "--dump-dom", page], capture_output=True, text=True, timeout=90, check=True).stdout
    assert "[EMAIL]" in dom or "[PHONE]" in dom
    for value in VALUES:
        assert value not in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "annotation-page-redacted.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*browser, f"--screenshot={shot}", page], capture_output=True, timeout=90, check=True)
    assert shot.stat().st_size > 20_000


def test_off_is_accepted_as_written_on_the_command_line(tmp_path, capsys):
    """`redaction=off` (which YAML reads as false) means off, and the resolved config says so."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    assert cli_main(["annotate", "push", str(pairs), "dataset=x", "redaction=off", "--dry-run"]) == 0
    assert "redaction: 'off'" in capsys.readouterr().out
    assert push.Config(pairs=str(pairs), dataset="x", redaction=False).redaction == "off"


def test_off_sends_the_text_as_it_is(argilla, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    manifest = push.run(
        push.Config(
            pairs=str(pairs),
            dataset="redaction-off",
            redaction="off",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert manifest["metrics"]["redaction"]["findings"] == {}
    prompts = {r["fields"]["prompt"][0]["content"] for r in argilla.records_by_id("redaction-off").values()}
    assert PAIRS[0]["prompt"][0]["content"] in prompts
