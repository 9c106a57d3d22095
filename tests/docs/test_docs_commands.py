"""Every command shown in the README's and the docs' bash blocks parses.

The commands are read from the ```bash blocks of README.md, docs/**/*.md and recipes/*/README.md
(the recipe READMEs are pages of the docs site). Each `align ...` command (also `.venv/bin/align`,
`python -m align`, and `-m align` after `accelerate launch` or `torchrun`) goes through the CLI's own
code, in this process, up to the point where the command would start working:

- a stage command (`align dpo --config ... key=value`) is parsed by `align.cli.dispatch` and its
  config loaded by `align.core.config.load_config`, exactly as a real run does (the YAML file must
  exist, every override key must be a config key and every value of its type), then stopped before
  the dry run or the run: no model, data file or service is touched, so placeholders such as
  `model=runs/sft-…` parse;
- `align loop --config ...` likewise, stopped before the loop starts;
- commands that need a run directory or only print (`align lineage RUN`, `align loop status DIR`,
  `align --help`, `align stages`) are run with `--help`;
- `python -m recipes.hh_harmless.run ...` loads its three stage configs with the given overrides;
  `python -m align.annotate.team FILE` checks the module and the team file; `make X` checks the
  Makefile has the target.

So a renamed key, a removed config file or a command that no longer exists in the docs fails here.
Not checked: keys under `training:`, which pass through to TRL's config class and are checked by the
stage when it starts (`align.core.training.training_arguments`), and whether the paths a command
names exist (placeholders such as `runs/<policy-run>` stand for the reader's own runs).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S+)\s*$")


class Parsed(Exception):
    """Raised where the command would start working: everything before it parsed."""


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted(ROOT.glob("recipes/*/README.md"))]
    return [f for f in files if f.is_file()]


def bash_blocks(path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each bash/sh/shell block, continuation lines joined."""
    blocks, current, start, indent = [], None, 0, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and current is None:
            if fence.group(2) in ("bash", "sh", "shell", "console"):
                current, start, indent = [], number + 1, fence.group(1)
            else:
                current, start = False, number  # another language: skipped to its closing fence
            continue
        if fence and current is not None:
            if isinstance(current, list):
                blocks.append((start, join_continuations(current)))
            current = None
            continue
        if isinstance(current, list):
            current.append(line[len(indent) :] if line.startswith(indent) else line)
    return blocks


def join_continuations(lines: list[str]) -> list[str]:
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command worth checking, with `$VAR`s of the same block expanded."""
    found = []
    for path in doc_files():
        for start, lines in bash_blocks(path):
            variables: dict[str, str] = {}
            for offset, line in enumerate(lines):
                where = f"{path.relative_to(ROOT)}:{start + offset}"
                assign = ASSIGN.match(line.strip())
                if assign and "$" not in assign.group(2):
                    variables[assign.group(1)] = (
                        shlex.split(assign.group(2))[0] if assign.group(2)[0] in "\"'" else assign.group(2)
                    )
                    continue
                for segment in re.split(r"&&|;|\|\|", line):
                    argv = command_argv(segment, variables)
                    if argv is not None:
                        found.append((where, argv))
    return found


def command_argv(segment: str, variables: dict[str, str]) -> list[str] | None:
    try:
        tokens = shlex.split(segment, comments=True)
    except ValueError:
        return None
    if not tokens:
        return None
    interesting = (
        tokens[0] in ("align", ".venv/bin/align", "make")
        or "-m" in tokens
        and any(t == "align" or t.startswith(("align.", "recipes.")) for t in tokens)
    )
    if not interesting:
        return None
    expanded = []
    for token in tokens:
        for name, value in variables.items():
            token = token.replace("${" + name + "}", value).replace("$" + name, value)
        if "$" in token:
            raise AssertionError(f"`{segment.strip()}`: {token} is not defined in its code block")
        # A variable holding several words expands to several arguments, as the shell splits it.
        expanded.extend(shlex.split(token) if token in variables.values() else [token])
    return expanded


@functools.cache
def import_align() -> None:
    """Import every align module before `check` patches `load_config`: a module first imported while the
    patch is in place would bind the patched function by `from align.core.config import load_config` and
    keep it after the test (other tests' runs then stopped at their config)."""
    import align

    for info in pkgutil.walk_packages(align.__path__, "align."):
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional edge (vllm, presidio) that is not installed: nothing to bind
            pass


def check(argv: list[str], monkeypatch, capsys) -> None:
    """Raise AssertionError (with the reason) unless `argv` parses."""
    import_align()
    from align import cli
    from align.core import config as config_module
    from align.core.errors import AlignError

    if argv[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        missing = [t for t in argv[1:] if not t.startswith("-") and t not in targets]
        assert not missing, f"no Makefile target {missing}"
        return
    if "-m" in argv:  # python -m X, accelerate launch ... -m X, torchrun ... -m X
        module, rest = argv[argv.index("-m") + 1], argv[argv.index("-m") + 2 :]
    else:
        module, rest = "align", argv[1:]
    if module == "recipes.hh_harmless.run":
        return check_hh_pipeline(rest, monkeypatch)
    if module != "align":
        importlib.import_module(module)
        files = [a for a in rest if not a.startswith("-") and "/" in a]
        assert all((ROOT / f).exists() for f in files), f"missing file in {files}"
        return

    def stop(*args, **kwargs):
        real_load_config(*args, **kwargs)
        raise Parsed

    real_load_config = config_module.load_config
    monkeypatch.setattr(config_module, "load_config", stop)
    import align.loop.run as loop_run

    monkeypatch.setattr(loop_run, "run", lambda *a, **k: (_ for _ in ()).throw(Parsed()))
    if rest[:1] == ["lineage"] or rest[:2] == ["loop", "status"]:
        rest = rest[:2] if rest[0] == "loop" else rest[:1]
        rest = rest + ["--help"]
    try:
        code = cli.dispatch(rest)
    except Parsed:
        return
    except AlignError as exc:
        raise AssertionError(f"exit {exc.exit_code}: {exc}") from None
    except SystemExit as exc:  # argparse: --help exits 0, a usage error 2
        assert exc.code in (0, None), f"argparse exited {exc.code}: {capsys.readouterr().err.strip()}"
        return
    assert code == 0, f"exit {code}"


def check_hh_pipeline(rest: list[str], monkeypatch) -> None:
    from recipes.hh_harmless import run as hh

    if "--resume" in rest:  # needs a pipeline directory: its flags parse
        with pytest.raises(SystemExit) as exc:
            hh.main([*rest, "--help"])
        assert exc.value.code == 0
        return
    for module in hh.STAGES.values():
        monkeypatch.setattr(module, "run", lambda cfg: (_ for _ in ()).throw(Parsed()))
    try:
        hh.run_pipeline("runs", None, [a for a in rest if not a.startswith("--")])
    except Parsed:
        return
    except Exception as exc:  # noqa: BLE001 - the message is the failure
        raise AssertionError(str(exc)) from None
    raise AssertionError("the pipeline did not reach its first stage")


def test_docs_show_commands():
    """The extraction finds the commands (a broken extractor would pass everything below)."""
    found = commands()
    shown = {" ".join(argv[:3]) for _, argv in found}
    assert len(found) >= 60, len(found)
    for expected in ("make demo", "align loop --config", "align annotate push", "align sft --config"):
        assert any(s.startswith(expected) for s in shown), expected


def test_every_docs_command_parses(monkeypatch, capsys):
    failures = []
    for where, argv in commands():
        with monkeypatch.context() as patch:
            try:
                check(argv, patch, capsys)
            except AssertionError as exc:
                failures.append(f"{where}: {shlex.join(argv)}\n    {exc}")
        capsys.readouterr()
    assert not failures, f"{len(failures)} documented command(s) do not parse:\n" + "\n".join(failures)


def test_a_wrong_key_in_a_command_is_caught(monkeypatch, capsys):
    """The check is not a formality: a misspelt key, a missing config and an unknown command fail."""
    for argv in (
        ["align", "dpo", "--config", "configs/dpo/default.yaml", "lora.rr=8"],
        ["align", "sft", "--config", "configs/sft/nope.yaml"],
        ["align", "loop", "--config", "recipes/brand_voice/loop.yaml", "rounds=two"],
        ["align", "evaluate", "polcy"],
        ["make", "nonexistent-target"],
    ):
        with monkeypatch.context() as patch, pytest.raises(AssertionError):
            check(argv, patch, capsys)
