"""An annotator's view: headless Chromium (Debian's package) opens the annotation page of a pushed
dataset on the local Argilla, and the page shows the record. The screenshot is kept in
artifacts/annotate/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from align.annotate import push

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "annotate"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `make argilla-server` installs it (scripts/setup-argilla-server.sh --with-browser)")
    return path


def test_annotation_page_shows_the_record(argilla, tmp_path):
    prompt = "Which colour is the sky on a clear day?"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": prompt, "response_a": "It is blue, because air scatters blue light most.",
                                 "response_b": "Green.", "source": "browser-test"}) + "\n")
    push.run(push.Config(pairs=str(pairs), dataset="browser", argilla=argilla.argilla_config(), runs_dir=str(tmp_path / "runs")))
    with argilla.owner() as conn:
        dataset_id = conn.dataset("browser", "align")["id"]
    creds = json.loads(argilla.credentials.read_text())
    auth = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000", "--virtual-time-budget=15000"]
    # Sign in the way Argilla's UI supports (`?auth=` base64 user:password), keeping the session in the profile.
    subprocess.run([*browser, "--dump-dom", f"{argilla.api_url}/sign-in?auth={auth}"], capture_output=True, timeout=90, check=True)
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
