"""Headless Chromium for the tests that look at a page as a person would (annotation page, report)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Without the background-networking flags Chromium keeps trying hosts this closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def headless_chromium(profile: Path, window: str, budget_ms: int, required: bool = True) -> list[str]:
    """The command line to start with, a profile of its own (sessions persist across calls in it).

    Without Chromium a `required` test fails (the annotate tests' set-up installs it); others skip.
    """
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if required:
            pytest.fail(
                "chromium is not installed: `make argilla-server` installs it (scripts/setup-argilla-server.sh --with-browser)"
            )
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the page's rendering is not checked")
    return [path, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}", f"--virtual-time-budget={budget_ms}"]
