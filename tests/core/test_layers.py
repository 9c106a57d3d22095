"""The package's layers point one way and no modules import each other, checked on the source.

Layers, lowest first (a module imports its own package and layers below it, never a layer above nor a
sibling package of its own layer):

    core
    scoring, model_cache, privacy      reward scoring, the embedded model's cache, PII redaction
    data, models                       datasets and records; where models come from and how they load
    rollout, memory                    generation engines; the memory estimate of a run
    evaluation, rl, feedback           judging replies; the online-RL trainers; users' feedback after deployment
    stages, annotate                   the commands (one module each) and the annotation tools
    loop                               the feedback loop, composing stages and annotation
    cli                                the command line
    __main__                           `python -m align`

Edges are every `import` and `from ... import` in align/**/*.py, at module level or inside a function:
a function-level import runs as surely as a top-level one, it only runs later, so it can hide a circle
(models.py <-> model_cache.py was one) but not remove it. Two deliberate exceptions:
- imports under `if TYPE_CHECKING:` count for the layers but not for circles: they never run, so they
  cannot make an import-time circle, while a type from a layer above is still a dependency upwards;
- importing `align.x.y` also runs `align/x/__init__.py`; that implicit edge is not counted (every
  module would depend on its package), but an `__init__` that imports its own submodules is, so a
  package cannot re-export a submodule that imports the package back.

Heavy optional dependencies stay at the edges: vllm in one rollout module, argilla in annotate/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "align").rglob("*.py"))

LAYERS: list[set[str]] = [
    {"core", ""},  # "": align/__init__.py (the version string) and nothing else
    {"scoring", "model_cache", "privacy"},
    {"data", "models"},
    {"rollout", "memory"},
    {"evaluation", "rl", "feedback"},
    {"stages", "annotate"},
    {"loop"},
    {"cli"},
    {"__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def imports(path: Path, *, type_checking: bool = True) -> set[str]:
    """Every module `path` imports, absolute, wherever the import statement stands (with
    `type_checking=False`, leaving out those under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if type_checking else _type_checking_only(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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


NAMES = {module_name(p): p for p in MODULES}


def _resolve(name: str) -> str | None:
    """The align module an imported name lands in (`align.rollout.SamplingSettings` -> `align.rollout`)."""
    while name and name not in NAMES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(type_checking: bool) -> dict[str, set[str]]:
    """align module -> the align modules it imports (itself excluded)."""
    graph = {}
    for name, path in NAMES.items():
        targets = {
            _resolve(n) for n in imports(path, type_checking=type_checking) if n == "align" or n.startswith("align.")
        }
        graph[name] = {t for t in targets if t and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component of more than one module
    (Tarjan's algorithm; iterative, so a deep package cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_a_cycle_through(graph, c) for c in components]


def _a_cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, packages in enumerate(LAYERS):
        if top in packages:
            return rank
    raise KeyError(top)


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


# -- the checker, on made-up sources --------------------------------------------------------------


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from vllm import LLM\n    import argilla as rg\n")
    assert {"vllm", "vllm.LLM", "argilla"} <= imports(source)


def test_the_checker_can_leave_out_type_checking_imports(tmp_path):
    source = tmp_path / "x.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport json\nif TYPE_CHECKING:\n    from align.models import M\n"
    )
    assert "align.models" in imports(source)
    assert "align.models" not in imports(source, type_checking=False) and "json" in imports(source, type_checking=False)


def test_find_cycles_on_a_hand_made_graph():
    # a -> b -> c -> a is one circle; d -> e -> d another; f -> a leads into a circle but is not in one.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d", "a"}, "f": {"a"}, "g": set()}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_every_package_has_a_layer():
    missing = {_package(m) for m in NAMES} - set().union(*LAYERS)
    assert not missing, f"align packages with no layer in this test: {sorted(missing)}; add them to LAYERS"


# -- the package ----------------------------------------------------------------------------------


def test_no_module_imports_another_that_imports_it_back():
    cycles = find_cycles(import_graph(type_checking=False))
    assert not cycles, (
        "import circles: "
        + "; ".join(" -> ".join(c) for c in cycles)
        + " (move what both need into the lower module, or the shared piece into a module below both)"
    )


def test_every_import_points_down_the_layers():
    upward = []
    for module, targets in import_graph(type_checking=True).items():
        for target in targets:
            if _package(target) == _package(module):
                continue
            if layer_of(target) >= layer_of(module):
                upward.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})")
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize(
    "path", [p for p in MODULES if "core" in p.relative_to(ROOT).parts], ids=lambda p: module_name(p)
)
def test_core_imports_only_core(path):
    above = {n for n in imports(path) if (n == "align" or n.startswith("align.")) and not n.startswith("align.core")}
    assert not above, f"{module_name(path)} (core) imports {sorted(above)}: move what it needs into align.core"


@pytest.mark.parametrize("path", sorted((ROOT / "align" / "stages").glob("*.py")), ids=lambda p: module_name(p))
def test_a_stage_never_imports_another_stage(path):
    me = module_name(path)
    others = {
        n
        for n in imports(path)
        if n.startswith("align.stages.") and not n.startswith(me) and n.split(".")[2] != "__init__"
    }
    assert not others, (
        f"{me} imports stage(s) {sorted(others)}: share through align.rollout, align.data or align.scoring"
    )


def test_only_the_vllm_engine_imports_vllm_and_only_annotate_imports_argilla():
    for path in MODULES:
        top = {n.split(".")[0] for n in imports(path)}
        rel = path.relative_to(ROOT).as_posix()
        if "vllm" in top:
            assert rel == "align/rollout/vllm_engine.py", f"{rel} imports vllm"
        if "argilla" in top:
            assert rel.startswith("align/annotate/"), f"{rel} imports argilla"


# -- align/stages: one package, four kinds ---------------------------------------------------------


def test_every_stage_module_has_one_kind():
    from align.stages import KINDS

    modules = sorted(p.stem for p in (ROOT / "align" / "stages").glob("*.py") if p.stem != "__init__")
    named = [m for names in KINDS.values() for m in names]
    assert sorted(named) == sorted(set(named)), "a stage module is named under two kinds in align.stages.KINDS"
    assert sorted(named) == modules, (
        "align.stages.KINDS must name each stage module once: "
        f"missing {sorted(set(modules) - set(named))}, not a module {sorted(set(named) - set(modules))}"
    )


def test_help_lists_every_command_under_its_kind(capsys):
    from align.cli import COMMANDS, command_kind, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command_kind(c) != "other" for c in COMMANDS.values()) and "other:" not in out
    heading, listed = None, set()
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = line[:-1]
            continue
        name = max((n for n in COMMANDS if line.startswith(f"  {n} ")), key=len, default=None)
        if name is not None:
            assert command_kind(COMMANDS[name]) == heading, f"{name} is listed under {heading}"
            listed.add(name)
    assert listed == set(COMMANDS)
    assert [line for line in out.splitlines() if line.endswith(":")][:3] == ["training:", "evaluation:", "data tools:"]
