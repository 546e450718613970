"""The test suite's own layout: no test module imports another test module or conftest.py;
what tests share lives in tests/helpers/.

Test modules (tests/**/test_*.py) and conftest.py files are parsed with `ast`. Every import,
at module level or inside a function, relative or absolute, must name a module outside the
`tests` package or one under `tests.helpers`. Strings are checked too: a flow definition or a
setting names a python callable or an executor by dotted path, and the product then imports
that module at run time, so such a path must lead into tests.helpers as well.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PACKAGE = TESTS.name  # "tests"
SHARED = f"{PACKAGE}.helpers"

# A dotted path into the tests package: "<package>.<module>…" in a string, e.g. a callable
# "<package>.<module>:<function>" or an allow-list entry.
DOTTED_PATH = re.compile(rf"(?<![\w.]){re.escape(PACKAGE)}(?:\.\w+)+")


def layout_modules() -> list[Path]:
    """Every test module and conftest.py under tests/ (tests/helpers/ holds neither)."""
    return sorted(
        path
        for pattern in ("test_*.py", "conftest.py")
        for path in TESTS.rglob(pattern)
        if "__pycache__" not in path.parts
    )


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def is_shared(name: str) -> bool:
    return name == SHARED or name.startswith(f"{SHARED}.")


def in_tests(name: str) -> bool:
    return name == PACKAGE or name.startswith(f"{PACKAGE}.")


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, module) for every import in `tree`; `from X import name` counts as X.name too,
    since `name` may be a module (`from tests import test_engine`)."""
    package = module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found.append((node.lineno, source))
            found.extend((node.lineno, f"{source}.{alias.name}") for alias in node.names)
    return found


def violations(source: str, module: str) -> list[str]:
    """What in `source` (the text of test module `module`) reaches into another test module,
    a conftest.py, or anything else under tests/ that is not tests.helpers."""
    tree = ast.parse(source)
    problems = []
    reported: set[tuple[int, str]] = set()
    for line, name in imported_modules(tree, module):
        if not in_tests(name) or name == PACKAGE or is_shared(name):
            continue
        if (line, name.rpartition(".")[0]) in reported:
            continue  # `from X import a, b` with X reported already: not each name again
        reported.add((line, name))
        problems.append(f"line {line}: imports {name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in DOTTED_PATH.finditer(node.value):
                if not is_shared(match.group(0)):
                    problems.append(f"line {node.lineno}: names {match.group(0)!r}")
    return problems


def test_the_layout_check_sees_every_test_module_and_conftest():
    names = {module_name(path) for path in layout_modules()}
    assert f"{PACKAGE}.conftest" in names
    assert module_name(Path(__file__)) in names
    assert f"{PACKAGE}.contract.test_seed_000_task_executions" in names
    assert not any(is_shared(name) for name in names), "a test module inside tests/helpers/"


@pytest.mark.parametrize("path", layout_modules(), ids=lambda path: str(path.relative_to(TESTS)))
def test_no_test_module_imports_another_test_module_or_conftest(path: Path):
    found = violations(path.read_text(encoding="utf-8"), module_name(path))
    assert not found, (
        f"{path.relative_to(ROOT)} reaches into another test module or conftest.py; move what "
        f"it shares into {SHARED.replace('.', '/')}/: " + "; ".join(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        f"from {PACKAGE}.test_engine import CALLS",
        f"import {PACKAGE}.test_engine",
        f"from {PACKAGE} import test_engine",
        f"from {PACKAGE}.conftest import Tenant",
        f"from {PACKAGE} import conftest",
        f"from {PACKAGE}.contract.helpers import assert_error",
        "from .test_engine import CALLS",
        "from . import conftest",
        f"def f():\n    from {PACKAGE}.test_leases import stranded\n",
        f"CALLABLE = {{'callable': '{PACKAGE}.test_engine:counted'}}",
        f"ALLOWED = ['examples', '{PACKAGE}.worker_tasks']",
    ],
)
def test_the_layout_check_catches_each_way_of_reaching_into_a_test_module(source: str):
    assert violations(source, f"{PACKAGE}.test_example")


@pytest.mark.parametrize(
    "source",
    [
        f"from {PACKAGE}.helpers.flows import latest",
        f"from {PACKAGE}.helpers import flows",
        f"import {PACKAGE}.helpers.callables",
        "from .helpers.tenants import Tenant",
        f"CALLABLE = {{'callable': '{PACKAGE}.helpers.callables:counted'}}",
        f"pytest_plugins = ['{PACKAGE}.helpers.fuzz_report']",
        f"ALLOWED = ['examples', '{PACKAGE}']",
        "from executions.models import TaskExecution",
        '"""See tests/test_workers.py."""',
    ],
)
def test_the_layout_check_allows_helpers_and_everything_outside_tests(source: str):
    assert violations(source, f"{PACKAGE}.test_example") == []


def test_no_test_hard_codes_where_the_database_listens():
    """Tests reach the configured database (tests/helpers/database.py database_address), so
    the suite passes against PostgreSQL on any host and port."""
    pattern = re.compile(r"""127\.0\.0\.1["']?\s*[,:]\s*5432""")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and path.name != "test_test_layout.py"
    ]
    assert found == []
