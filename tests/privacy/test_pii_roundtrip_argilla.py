"""Issue 33's round trip for personal data: the shipped PII set (data/pii_eval.jsonl) pushed to a real
local Argilla with the presidio backend and the NER model; what an annotator reads back from the
server, the push's journal and run, and the pulled run (preferences.jsonl) hold no labelled value.

Every labelled value of the set is checked (names, places, street addresses, SSNs, e-mails, phones,
cards, IPs, the IBAN and the date of birth), as a whole word, in each pair's prompt and in one of its
two responses, which quotes the message back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from align.annotate import pull, push
from tests.privacy.test_pii_eval import NER_MODEL, ROWS, needs_ner

pytestmark = [pytest.mark.integration, needs_ner]

DATASET = "pii-roundtrip"
VALUES = sorted({e["value"] for row in ROWS for e in row["entities"]})


def leaked(text: str) -> list[str]:
    """Labelled values found in `text` as whole words ("Ana" in "Analytics" is not a leak)."""
    return [v for v in VALUES if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text)]


def files_text(*folders: Path) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for folder in folders for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pushed(argilla, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pii-roundtrip")
    pairs = tmp / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": row["text"]}],
                    "response_a": "Thanks, we are looking into it.",
                    "response_b": f"To confirm, you wrote: {row['text']}",
                    "source": row["id"],
                }
            )
            + "\n"
            for row in ROWS
        )
    )
    manifest = push.run(
        push.Config(
            pairs=str(pairs),
            dataset=DATASET,
            redaction_backend="presidio",
            redaction_spacy_model=NER_MODEL,
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp / "runs"),
            journal_dir=str(tmp / "journal"),
        )
    )
    return {"tmp": tmp, "manifest": manifest}


def test_the_values_would_leak_without_redaction():
    # The check below can fail: every labelled value is in the text that is pushed.
    assert len(VALUES) > 70 and all(leaked(row["text"]) for row in ROWS if row["entities"])


def test_an_annotator_reads_no_labelled_value(argilla, pushed):
    detectors = pushed["manifest"]["notes"]["redaction_detectors"]
    assert detectors["backend"] == "presidio" and detectors["ner"] is True
    annotator = argilla.annotator("pii_reader")
    mine = annotator.http.get("/api/v1/me/datasets").json()["items"]
    dataset_id = next(d["id"] for d in mine if d["name"] == DATASET)
    # What the annotation page asks for: the dataset's records through the annotator's search endpoint.
    found = annotator.http.post(f"/api/v1/me/datasets/{dataset_id}/records/search", params={"limit": 1000}, json={})
    assert found.status_code == 200, found.text
    records = [item["record"] for item in found.json()["items"]]
    assert len(records) == len(ROWS)
    shown = json.dumps([r["fields"] for r in records])
    assert "[PERSON]" in shown and "[ADDRESS]" in shown and "[SSN]" in shown
    assert leaked(shown) == []
    # ... and everything else the server holds about them (metadata, ids), read by the owner.
    assert leaked(json.dumps(argilla.records_by_id(DATASET))) == []


def test_the_journal_the_push_run_and_the_pulled_preferences_hold_no_labelled_value(argilla, pushed):
    annotator = argilla.annotator("pii_labeller")
    for record in argilla.records_by_id(DATASET).values():
        annotator.respond(record["id"], preference="A")
    tmp = pushed["tmp"]
    manifest = pull.run(
        pull.Config(
            dataset=DATASET,
            argilla=argilla.argilla_config(),
            journal_dir=str(tmp / "journal"),
            runs_dir=str(tmp / "pulled"),
            push_runs=[pushed["manifest"]["path"]],
        )
    )
    preferences = (Path(manifest["path"]) / "preferences.jsonl").read_text()
    assert len(preferences.splitlines()) == len(ROWS)
    written = files_text(tmp / "journal", Path(pushed["manifest"]["path"]), Path(manifest["path"]))
    assert any(name.endswith("journal.jsonl") for name in written)
    assert {name: leaked(text) for name, text in written.items() if leaked(text)} == {}
