"""MkDocs hooks (mkdocs.yml `hooks:`): pages built from the repository rather than written twice.

- `reference/<command>.md`: one page per `align` command, the text of `align <command> --help`
  (`align.cli.stage_help`, which reads the stage module's docstring and its `Config` dataclass's
  field docstrings through `align.core.config.describe`). The docs and `--help` cannot disagree:
  both are made by the same function from the same dataclass.
- `recipes/<name>.md`: each `recipes/<name>/README.md`, so a recipe's story lives beside its YAML
  and shows in the site unchanged. Links from a recipe README to files outside the docs (its
  `style_guide.md`, a config) become code spans naming the repository path, since the site has no
  copy of those files; links into docs/ become links between pages.

Nothing is written into docs/: the pages exist only in the build (`mkdocs build` / `mkdocs serve`).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def command_pages() -> dict[str, str]:
    """`reference/<slug>.md` -> page text, one per `align` command (and `align loop`)."""
    import importlib

    from align import cli
    from align.loop import run as loop_run

    pages: dict[str, str] = {}
    for name, cmd in cli.COMMANDS.items():
        try:
            module = importlib.import_module(cmd.module)
        except ImportError as exc:  # a command the CLI lists must have a page: fail the build, naming it
            raise RuntimeError(f"align {name}: its module {cmd.module} does not import ({exc})") from exc
        pages[f"reference/{name.replace(' ', '-')}.md"] = page(name, cli.stage_help(name, cmd, module))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # `align loop` builds its help in its own main
        loop_run.main(["--help"])
    loop_help = printed.getvalue()
    pages["reference/loop.md"] = page("loop", loop_help)
    rows = [f"| [`align {name}`]({name.replace(' ', '-')}.md) | {cmd.summary} |" for name, cmd in cli.COMMANDS.items()]
    rows.append("| [`align loop`](loop.md) | the feedback loop: rounds of generate, label, train, evaluate, gate |")
    pages["reference/index.md"] = (
        "# Command reference\n\nOne page per command, generated from the code when the site is built: each is "
        "what `align <command> --help` prints. `align lineage RUN` (the chain of runs behind RUN) and "
        "`align stages` (this list) take no config.\n\n| command | what it does |\n|---|---|\n" + "\n".join(rows) + "\n"
    )
    return pages


def page(name: str, help_text: str) -> str:
    return (
        f"# align {name}\n\n"
        f"Generated from the code: this is exactly what `align {name} --help` prints (the stage's docstring "
        f"and one line per config key: name, type, default, meaning). Keys nest with dots; set them in "
        f"the YAML given to `--config` or as `key=value` overrides.\n\n"
        f"```text\n{help_text.rstrip()}\n```\n"
    )


def recipe_pages() -> dict[str, str]:
    """`recipes/<name>.md` -> the recipe's README, its links to repository files made code spans."""
    pages = {}
    for readme in sorted(ROOT.glob("recipes/*/README.md")):
        name = readme.parent.name
        pages[f"recipes/{name}.md"] = LINK.sub(lambda m: relink(m, readme.parent), readme.read_text())
    return pages


def relink(match: re.Match, folder: Path) -> str:
    text, target = match.group(1), match.group(2)
    if re.match(r"^[a-z]+:", target) or target.startswith("#"):
        return match.group(0)  # a web address or an anchor: kept
    path = (folder / target.split("#")[0]).resolve()
    anchor = "#" + target.split("#", 1)[1] if "#" in target else ""
    if path.name == "README.md" and path.parent.parent == ROOT / "recipes":
        return f"[{text}]({path.parent.name}.md{anchor})"
    if path.is_relative_to(ROOT / "docs"):  # a docs page: the recipe page sits in docs/recipes/
        return f"[{text}](../{path.relative_to(ROOT / 'docs')}{anchor})"
    return f"{text} (`{path.relative_to(ROOT)}`)"


def on_files(files, config):
    from mkdocs.structure.files import File

    for src_uri, content in {**command_pages(), **recipe_pages()}.items():
        files.append(File.generated(config, src_uri, content=content))
    return files
