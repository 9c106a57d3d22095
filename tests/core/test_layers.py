"""The package's layers point one way, checked on the source (every import, top level or inside a function).

core <- data, scoring, models <- rollout, evaluation <- stages <- cli, recipes. A stage never imports
another stage (they share through rollout/, data/, scoring); core imports nothing above itself; the
heavy optional dependencies stay at the edges (vllm in one rollout module, argilla in annotate/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "align").rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute, wherever the import statement stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
                parts = package.split(".")
                prefix = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{prefix}.{node.module}" if node.module else prefix
            else:
                module = node.module or ""
            names.add(module)
            # `from align.stages import generate` imports the module align.stages.generate.
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from vllm import LLM\n    import argilla as rg\n")
    assert {"vllm", "vllm.LLM", "argilla"} <= imports(source)


def _align_imports(path: Path) -> set[str]:
    return {name for name in imports(path) if name == "align" or name.startswith("align.")}


@pytest.mark.parametrize("path", [p for p in MODULES if "core" in p.relative_to(ROOT).parts],
                         ids=lambda p: module_name(p))
def test_core_imports_only_core(path):
    above = {n for n in _align_imports(path) if not n.startswith("align.core")}
    assert not above, f"{module_name(path)} (core) imports {sorted(above)}: move what it needs into align.core"


@pytest.mark.parametrize("path", sorted((ROOT / "align" / "stages").glob("*.py")), ids=lambda p: module_name(p))
def test_a_stage_never_imports_another_stage(path):
    me = module_name(path)
    others = {n for n in _align_imports(path)
              if n.startswith("align.stages.") and not n.startswith(me) and n.split(".")[2] != "__init__"}
    assert not others, f"{me} imports stage(s) {sorted(others)}: share through align.rollout, align.data or align.scoring"


def test_only_the_vllm_engine_imports_vllm_and_only_annotate_imports_argilla():
    for path in MODULES:
        top = {n.split(".")[0] for n in imports(path)}
        rel = path.relative_to(ROOT).as_posix()
        if "vllm" in top:
            assert rel == "align/rollout/vllm_engine.py", f"{rel} imports vllm"
        if "argilla" in top:
            assert rel.startswith("align/annotate/"), f"{rel} imports argilla"
