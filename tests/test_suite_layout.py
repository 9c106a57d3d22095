"""The test tree's own rules: pytest imports test modules by their file name (tests/ has no packages, the
default `prepend` import mode), so two files with one name in different folders stop the whole suite at
collection. This names the clash instead."""

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).parent


def test_test_file_names_are_unique():
    by_name = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"test files share a name (pytest cannot import both; rename one): {clashes}"
