"""Every shipped annotate YAML loads into its stage's config and opens with the command that runs it;
every template and guideline loads."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from align.annotate.template import GUIDELINES_DIR, TEMPLATES_DIR, guidelines_text, load_template
from align.core.config import load_config
from align.core.errors import AlignError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "annotate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# align annotate "), first
    command = first.split()[3]  # push | pull | status | serve
    module = importlib.import_module(f"align.annotate.{command}")
    assert f"--config configs/annotate/{path.name}" in first
    load_config(module.Config, path)


def test_templates_and_guidelines_load():
    assert {p.stem for p in TEMPLATES_DIR.glob("*.yaml")} >= {"pairwise"}
    for p in TEMPLATES_DIR.glob("*.yaml"):
        if p.stem == "review":  # the feedback review template is not pairwise: its own loader reads it
            from align.annotate import review

            assert review.review_template().question("verdict") is not None
            continue
        assert load_template(p.stem).question("preference") is not None
    for name in ("safety", "brand_voice"):
        assert guidelines_text(name).startswith("# ")
    assert {p.stem for p in GUIDELINES_DIR.glob("*.md")} >= {"safety", "brand_voice"}


def test_template_without_the_preference_question_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((TEMPLATES_DIR / "pairwise.yaml").read_text().replace("      tie: Tie\n", ""))
    with pytest.raises(AlignError, match="needs question 'preference'"):
        load_template(str(bad))


def test_unknown_template_suggests_the_nearest():
    with pytest.raises(AlignError, match="did you mean 'pairwise'"):
        load_template("pairwse")
