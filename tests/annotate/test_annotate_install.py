"""A non-editable install annotates: the wheel carries the templates, guidelines and server files,
and `python -m align annotate push` works from outside the checkout with only the installed package
on the path (plus the venv's site-packages for the dependencies, not the repo)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_wheel_install_pushes_from_outside_the_repo(argilla, tmp_path):
    src = tmp_path / "src"  # build from a copy: no build/ or egg-info left in the checkout
    src.mkdir()
    shutil.copytree(REPO / "align", src / "align", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("align-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "align/annotate/templates/pairwise.yaml",
        "align/annotate/guidelines/safety.md",
        "align/annotate/server/launch.py",
        "align/annotate/server/sql_engine.py",
    } <= names
    target = tmp_path / "target"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    pairs = outside / "pairs.jsonl"
    pairs.write_text(
        json.dumps(
            {
                "prompt": "Is a wheel install enough to annotate?",
                "response_a": "Yes, it is.",
                "response_b": "Only from a checkout.",
                "source": "install-test",
            }
        )
        + "\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ARGILLA_API_URL", "ARGILLA_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *site.getsitepackages()])
    env["ALIGN_CACHE"] = str(tmp_path / "cache")
    # -S: no site processing, so no .pth file (e.g. an editable install of the checkout) adds the repo.
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            "-m",
            "align",
            "annotate",
            "push",
            str(pairs),
            "dataset=from-wheel",
            "guidelines=brand_voice",
            f"argilla.credentials={argilla.credentials}",
            "runs_dir=runs",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pushed 1 new records to 'from-wheel'" in done.stdout
    assert "pushing to 'from-wheel'" in done.stderr and "1/1" in done.stderr  # progress with counts
    manifest = json.loads(next((outside / "runs").glob("*/manifest.json")).read_text())
    assert manifest["notes"]["template"].startswith(str(target))  # the installed copy, not the repo's
    with argilla.owner() as conn:
        ds = conn.dataset("from-wheel")
        assert ds["guidelines"] == (REPO / "align/annotate/guidelines/brand_voice.md").read_text().strip()
        assert len(conn.records(ds["id"], responses=False)) == 1
