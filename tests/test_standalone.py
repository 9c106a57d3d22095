"""The repository stands alone: every file a shipped config, recipe, test or benchmark reads is in it.

A user's clone has nothing beside it. These tests check that no tracked file points at the data folder
that exists only beside the development checkout, that data/README.md describes data/ exactly (sha256,
row counts, every file listed), and, in a copy of the repository with nothing beside it, that every
shipped stage config and recipe passes its dry run (the loop: its preflight) and a tiny loop runs end to
end.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from align.cli import COMMANDS
from align.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
DATA_README = REPO / "data" / "README.md"
# Built from parts so that this file does not contain what it looks for.
OUTSIDE = [".." + "/shared", "shared" + "/data"]
# Runs and files a config's first line leaves to the user (`runs/<your-sft-run>`, `FILE`) are filled with the
# embedded model or a run made in the copy: by key for `key=runs/...`, and for positional placeholders here.
POSITIONAL = {
    "evaluate policy": ["policy={model}"],
    "evaluate retention": ["policy={model}"],
    "score": ["generations={generations}"],
    "pairs": ["generations={scored}"],
    "redact": ["input=data/instructions/oasst_prompts_en_250.jsonl"],
    "feedback import": ["inputs=[recipes/brand_voice/feedback_simulated.jsonl]"],
}


def repo_files(tracked_only: bool = False) -> list[str]:
    """Tracked files, and (unless tracked_only) untracked files git does not ignore: what a commit would ship."""
    extra = [] if tracked_only else ["--others", "--exclude-standard"]
    out = subprocess.run(["git", "ls-files", "-z", "--cached", *extra], cwd=REPO, capture_output=True, check=True)
    return sorted({p for p in out.stdout.decode().split("\0") if p and (REPO / p).is_file()})


def count_rows(path: Path) -> int:
    """Records in a data file, as data/README.md counts them: CSV rows after the header, else non-empty lines."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        if ".csv" in path.suffixes:
            return sum(1 for _ in csv.DictReader(f))
        return sum(1 for line in f if line.strip())


def readme_entries() -> dict[str, dict]:
    """data/README.md's table rows: path -> {sha256, rows (data files only)}."""
    entries = {}
    for line in DATA_README.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `data/"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        shas = [c.strip("`") for c in cells if re.fullmatch(r"`[0-9a-f]{64}`", c)]
        rows = [int(c) for c in cells[1:] if c.isdigit()]
        assert len(shas) == 1, f"data/README.md: no single sha256 in {line!r}"
        entries[cells[0].strip("`")] = {"sha256": shas[0], "rows": rows[0] if rows else None}
    return entries


def test_no_tracked_file_points_beside_the_checkout():
    named = {
        needle: [p for p in repo_files(tracked_only=True) if needle.encode() in (REPO / p).read_bytes()]
        for needle in OUTSIDE
    }
    assert named == {needle: [] for needle in OUTSIDE}, "point these at data/ (data/README.md lists what ships)"


def test_data_readme_lists_every_shipped_file_with_its_checksum_and_rows():
    entries = readme_entries()
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "data").rglob("*") if p.is_file() and p != DATA_README}
    assert set(entries) == shipped, "every file under data/ is listed in data/README.md, and nothing else"
    for rel, entry in entries.items():
        path = REPO / rel
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], rel
        if not rel.startswith("data/LICENSES/"):
            assert entry["rows"] == count_rows(path), rel


def test_every_data_path_in_a_shipped_yaml_is_shipped():
    """A config naming a data file its dry run does not read (evaluate policy/retention read theirs only when
    they run) still fails here when the file is missing."""
    missing = []
    for rel in repo_files():
        if rel.endswith(".yaml") and rel.startswith(("configs/", "recipes/")):
            for value in _strings(yaml.safe_load((REPO / rel).read_text())):
                if value.startswith("data/") and not (REPO / value).is_file():
                    missing.append(f"{rel}: {value}")
    assert not missing


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


# -- a copy with nothing beside it ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> Path:
    """The repository's files (tracked, and untracked ones git does not ignore; no .venv, runs/ or .git) in an
    otherwise empty directory."""
    copy = tmp_path_factory.mktemp("clone") / "align"
    for rel in repo_files():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, copy / rel)
    assert [p.name for p in copy.parent.iterdir()] == ["align"] and not (copy / ".." / "shared").exists()
    return copy


def shipped_configs(copy: Path) -> list[Path]:
    """Stage and loop configs under configs/ and recipes/ (not accelerate's own files, rubrics, gate or
    annotator lists: tests/core/test_config.py loads those)."""
    return sorted(
        p
        for p in [*(copy / "configs").rglob("*.yaml"), *(copy / "recipes").rglob("*.yaml")]
        if "accelerate" not in p.parts
        and p.name not in ("rubric.yaml", "annotators.yaml")
        and not p.name.endswith("gates.yaml")
    )


def command_of(path: Path) -> str:
    """The command a config's first line runs (`# align evaluate policy --config ...`); recipe stage files that
    a script runs (`# make demo-hh ...`) are named after their stage."""
    words = path.read_text().splitlines()[0].lstrip("# ").split()
    if "align" not in words:  # also `accelerate launch ... -m align sft ...`
        assert path.stem in COMMANDS, f"{path}: its first line names no align command and its name no stage"
        return path.stem
    words = words[words.index("align") :]
    for n in (2, 1):
        command = " ".join(words[1 : 1 + n])
        if command in COMMANDS or command == "loop":
            return command
    raise AssertionError(f"{path}: its first line names no align command")


def wiring(path: Path, command: str, made: dict[str, str]) -> list[str]:
    """Overrides filling the placeholders of a config's first line."""
    first = path.read_text().splitlines()[0]
    keys = [
        k
        for k in re.findall(r"(?:^|\s)([\w.]+)=runs/", first)
        if k.split(".")[-1] in ("model", "policy", "reward_model", "generations", "pairs")
    ]
    overrides = [f"{key}={made[key.split('.')[-1]] if key.split('.')[-1] in made else made['model']}" for key in keys]
    overrides += [w.format(**made) for w in POSITIONAL.get(command, [])]
    model = yaml.safe_load(path.read_text()).get("model")
    # A hub model id (recipes/gpu_7b) cannot be fetched here: the config's first line offers a local copy instead.
    if isinstance(model, str) and model != "embedded" and not Path(model).exists():
        overrides.append(f"model={made['model']}")
    return overrides


@pytest.mark.slow
def test_the_standalone_copy_runs_a_stage_in_a_subprocess(standalone):
    """A real `python -m align` start in the copy, reading its own data/ (the align package imported is the
    copy's: python -m puts the working directory first on sys.path)."""
    proc = subprocess.run(
        [sys.executable, "-m", "align", "generate", "--config", "configs/generate/default.yaml", "--dry-run"],
        cwd=standalone,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prompts: data/instructions/oasst_prompts_en_250.jsonl" in proc.stdout and "prompts: 32" in proc.stdout


@pytest.mark.slow  # minutes: each HH-RLHF config measures all 2,312 pairs with the real tokenizer
def test_every_shipped_config_dry_runs_in_the_standalone_copy(standalone, tiny_model, easy_pairs, monkeypatch, capsys):
    from align.core.config import load_config
    from align.core.errors import AlignError
    from align.evaluation import ifeval
    from align.evaluation.prompt_sets import load_prompt_set
    from align.loop.config import LoopConfig
    from align.loop.preflight import preflight
    from align.stages import evaluate_policy, evaluate_retention

    monkeypatch.chdir(standalone)
    # The runs some configs read are made in the copy, by its shipped configs: a reward run (the loop and
    # judges take only an `align reward` run as a reward model), generations, their scores and pairs.
    fast = ["max_length=128", "training.max_steps=1", "training.per_device_train_batch_size=2", "runs_dir=runs"]
    assert (
        cli_main(
            [
                "reward",
                "--config",
                "configs/reward/default.yaml",
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                "data.test_fraction=0.2",
                *fast,
                "name=reward",
            ]
        )
        == 0
    )
    tiny = [
        f"policy={tiny_model}",
        "max_prompts=3",
        "engine=hf",
        "sampling.n=2",
        "sampling.max_tokens=4",
        "runs_dir=runs",
        "name=gen",
    ]
    assert cli_main(["generate", "--config", "configs/generate/default.yaml", *tiny]) == 0
    assert (
        cli_main(
            [
                "score",
                "runs/gen",
                "--config",
                "configs/score/default.yaml",
                "reward_model=runs/reward",
                "runs_dir=runs",
                "name=scored",
            ]
        )
        == 0
    )
    assert (
        cli_main(["pairs", "runs/scored", "--config", "configs/pairs/default.yaml", "runs_dir=runs", "name=pairs"]) == 0
    )
    # A policy placeholder takes the embedded model: a dry run reads its tokenizer and context length only, and
    # the tiny model's 1,024-token context is shorter than the GPU configs' prompts and replies.
    made = {
        "model": "embedded",
        "reward_model": "runs/reward",
        "generations": "runs/gen",
        "scored": "runs/scored",
        "pairs": "runs/pairs",
    }
    capsys.readouterr()

    failed, ran = {}, []
    for path in shipped_configs(standalone):
        rel = str(path.relative_to(standalone))
        command = command_of(path)
        overrides = wiring(path, command, made)
        ran.append(f"{command}: {rel} {' '.join(overrides)}")
        if command == "loop":  # no dry run: its preflight builds every stage config and reads every input
            try:
                preflight(load_config(LoopConfig, rel, overrides))
            except AlignError as exc:  # what `align loop` exits 2 with
                failed[rel] = {"command": command, "overrides": overrides, "error": str(exc)}
            continue
        capsys.readouterr()
        code = cli_main([*command.split(), "--config", rel, *overrides, "--dry-run"])
        if code != 0:
            failed[rel] = {
                "command": command,
                "overrides": overrides,
                "exit": code,
                "stderr": capsys.readouterr().err[-500:],
            }
            continue
        # These two stages read their prompt files only when they run: read them here the way run() does.
        if command == "evaluate policy":
            cfg = load_config(evaluate_policy.Config, rel, overrides)
            for name in evaluate_policy.SETS:
                if getattr(cfg, name).paths:
                    load_prompt_set(name, getattr(cfg, name))
        if command == "evaluate retention":
            cfg = load_config(evaluate_retention.Config, rel, overrides)
            ifeval.load_ifeval_prompts(cfg.ifeval.path, cfg.ifeval.limit, cfg.ifeval.seed)
            load_prompt_set("drift", cfg.drift)
    print("\n".join(ran))
    assert not failed, json.dumps(failed, indent=1)
    assert {c.split(":")[0] for c in ran} >= {"sft", "reward", "dpo", "ppo", "generate", "evaluate policy", "loop"}


@pytest.mark.integration
def test_a_tiny_loop_runs_end_to_end_in_the_standalone_copy(standalone, argilla, tiny_model, monkeypatch, capsys):
    """One round of the brand-voice loop on the tiny model (tests/loop/test_loop.py's settings) with the copy as
    the working directory: its generate, evaluate (the safety sets of configs/evaluate/policy.yaml) and DPO
    stages read the copy's recipes/, configs/ and data/."""
    from align.core import runs
    from align.loop.state import LoopState
    from tests.loop.test_loop import ROUND_STEPS, loop_yaml

    monkeypatch.chdir(standalone)
    work = standalone / "runs" / "loop-test"
    work.mkdir(parents=True)
    config = loop_yaml(work, tiny_model, argilla, "standalone", rounds=1)
    assert cli_main(["loop", "--config", str(config)]) == 0, capsys.readouterr().err[-3000:]
    loop_dir = work / "standalone"
    state = LoopState.load(loop_dir)
    assert state.data["phase"] == "finished" and [r["round"] for r in state.rounds] == [0, 1]
    steps = state.rounds[1]["steps"]
    assert [s for s in ROUND_STEPS if steps.get(s, {}).get("status") == "done"] == ROUND_STEPS
    for step in ROUND_STEPS:
        if step != "wait":  # the wait is a poll of Argilla, not a run
            assert runs.read_manifest(loop_dir / "round-1" / step)["stage"], step
    evaluation = runs.read_manifest(loop_dir / "round-1" / "evaluate")
    read = [*evaluation["config"]["harmful"]["paths"], *evaluation["config"]["safe"]["paths"]]
    assert read and all(p.startswith("data/safety/") and (standalone / p).is_file() for p in read), read
    assert (loop_dir / "report.html").is_file()
