"""An annotator's view: headless Chromium (Debian's package) opens the annotation page of a pushed
dataset on the local Argilla, and the page shows the record. The screenshot is kept in
artifacts/annotate/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from align.annotate import push

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "annotate"


def test_annotation_page_shows_the_record(argilla, tmp_path):
    prompt = "Which colour is the sky on a clear day?"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps(
            {
                "prompt": prompt,
                "response_a": "It is blue, because air scatters blue light most.",
                "response_b": "Green.",
                "source": "browser-test",
            }
        )
        + "\n"
    )
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="browser",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
            journal_dir=str(tmp_path / "journal"),
        )
    )
    with argilla.owner() as conn:
        dataset_id = conn.dataset("browser", "align")["id"]
    browser = argilla.signed_in_browser(tmp_path / "profile")
    page = f"{argilla.api_url}/dataset/{dataset_id}/annotation-mode"
    dom = subprocess.run([*browser, "--dump-dom", page], capture_output=True, text=True, timeout=90, check=True).stdout
    assert prompt in dom
    assert "Which response is better?" in dom
    assert "It is blue" in dom and "Green." in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "annotation-page.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*browser, f"--screenshot={shot}", page], capture_output=True, timeout=90, check=True)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
