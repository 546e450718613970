"""The shape of the code: one-way layers (import-linter's contracts in pyproject.toml), no import
cycle anywhere (imports inside functions count), and modules small enough to read."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flowplatform", "flows", "executions", "outputs")
# The one import against the layers: a job body calls up into the engine, inside the function.
JOB_BODY = ("executions.jobs", "executions.engine.worker")
MAX_LINES = 400


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - import-linter, on our own code
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    """The contract is not vacuous: a model importing the engine is caught."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    models = tmp_path / "executions" / "models.py"
    models.write_text(models.read_text() + "\nfrom executions.engine import lifecycle  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "executions.models -> executions.engine.lifecycle" in result.stdout


def test_no_import_cycle_between_any_two_modules() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    graph.remove_import(importer=JOB_BODY[0], imported=JOB_BODY[1])
    cycles = [
        (importer, imported)
        for importer in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
        if graph.chain_exists(importer=imported, imported=importer)
    ]
    assert cycles == []


def test_the_job_bodies_are_the_only_imports_inside_the_engine_from_below() -> None:
    """The two jobs (an attempt; a wave of pure tasks) import the worker inside their body."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    details = graph.get_import_details(importer=JOB_BODY[0], imported=JOB_BODY[1])
    assert len(details) == 2
    lines = (ROOT / "executions" / "jobs.py").read_text().splitlines()
    for detail in details:
        line = lines[detail["line_number"] - 1]
        assert line.startswith("    "), "a job body imports the worker inside the function"


def test_no_product_module_is_longer_than_a_few_hundred_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
