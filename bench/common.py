"""What every benchmark shares: where its files go, the environment its processes run in, its
own databases (never the tests' nor var/flowplatform.sqlite3), the machine it ran on, and
writing its results (JSON, a markdown table, a PNG plot, bench/README.md)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import procs

ROOT = procs.ROOT
PYTHON = sys.executable
RESULTS = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
# Databases, logs, seeds and profiles of the benchmarks; var/ is not committed.
WORK = ROOT / "var" / "bench"

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# The application's role, as in production (README, "Two roles"): row-level security binds it.
APP_ROLE = "flowplatform_bench_app"
PG_TEMPLATE = "flowplatform_bench_template"
SQLITE_TEMPLATE = WORK / "template.sqlite3"

# Flow definitions of 10,000 tasks are larger than the default 1 MiB limit.
MAX_DEFINITION_BYTES = 16 * 1024 * 1024
BENCH_EXECUTOR = "bench_transform"  # pure: run in waves (executions/engine/waves.py)
BENCH_IMPURE_EXECUTOR = "bench_python"  # not pure: a job per attempt

_FOREIGN_SETTINGS = ("DATABASE_", "TASKS_", "FLOWPLATFORM_", "DJANGO_SETTINGS_MODULE", "DEBUG")


def django_env(database_url: str, tasks_backend: str = "immediate", **extra: str) -> dict[str, str]:
    """The environment of a process running the product for a benchmark: production-like
    (DEBUG off), its own database, and the timed executors (bench.executors) registered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_SETTINGS)}
    env.update(
        DJANGO_SETTINGS_MODULE="flowplatform.settings",
        DATABASE_URL=database_url,
        TASKS_BACKEND=tasks_backend,
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key-" + "0123456789abcdef" * 3,
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        LOG_LEVEL="warning",
        FLOWPLATFORM_VAR_DIR=str(WORK),
        FLOWPLATFORM_EXECUTORS=(
            f"{BENCH_EXECUTOR}=bench.executors.TimedTransform,"
            f"{BENCH_IMPURE_EXECUTOR}=bench.executors.TimedPython"
        ),
        FLOWPLATFORM_MAX_DEFINITION_BYTES=str(MAX_DEFINITION_BYTES),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# PostgreSQL ----------------------------------------------------------------------------------


def pg_url(database: str, user: str | None = None) -> str:
    parts = urlsplit(PG_ADMIN_URL)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", "", ""))


def _pg(*statements: str) -> list[Any]:
    import psycopg

    rows = []
    with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://", 1)) as conn:
        conn.autocommit = True
        for statement in statements:
            cursor = conn.execute(statement)
            rows.append(cursor.fetchall() if cursor.description else None)
    return rows


def pg_version() -> str:
    try:
        return str(_pg("SHOW server_version")[0][0][0])
    except Exception as exc:  # reported, not fatal: SQLite benchmarks run without it
        return f"unreachable ({type(exc).__name__})"


def prepare_pg_template(timeout: float) -> None:
    """A migrated database to copy for each run, made afresh by every benchmark invocation:
    migrated by the superuser of BENCH_PG_URL (the tables' owner) granting the application's
    role its data privileges, as README "Two roles" prescribes."""
    _pg(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN "
        f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; "
        "END IF; END $$",
        f"DROP DATABASE IF EXISTS {PG_TEMPLATE} WITH (FORCE)",
        f"CREATE DATABASE {PG_TEMPLATE}",
    )
    migrate(
        django_env(pg_url(PG_TEMPLATE), DATABASE_APP_ROLE=APP_ROLE), "migrate-pg", timeout=timeout
    )


def create_app_role() -> None:
    """The application's role (cluster-wide), created if missing; never dropped."""
    _pg(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN "
        f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; "
        "END IF; END $$"
    )


def create_pg_database(name: str) -> None:
    """An empty database `name` (for a benchmark that migrates its own, without the template)."""
    _pg(f"CREATE DATABASE {name}")


def fresh_pg_database(name: str) -> str:
    """Drop and recreate `name` from the migrated template; its URL as the application role."""
    _pg(
        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}",
    )
    return pg_url(name, APP_ROLE)


def drop_pg_databases(*names: str) -> None:
    _pg(*(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in names))


# SQLite --------------------------------------------------------------------------------------


def prepare_sqlite_template(timeout: float) -> None:
    SQLITE_TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    SQLITE_TEMPLATE.unlink(missing_ok=True)
    migrate(django_env(f"sqlite:///{SQLITE_TEMPLATE}"), "migrate-sqlite", timeout=timeout)


def fresh_sqlite_database(name: str) -> str:
    path = WORK / f"{name}.sqlite3"
    for stale in WORK.glob(f"{name}.sqlite3*"):
        stale.unlink()
    shutil.copyfile(SQLITE_TEMPLATE, path)
    return f"sqlite:///{path}"


def migrate(env: dict[str, str], label: str, *, timeout: float) -> None:
    log = WORK / "logs" / f"{label}.log"
    command = [PYTHON, "manage.py", "migrate", "--no-input"]
    status, _ = procs.run(command, env=env, log=log, timeout=timeout)
    if status != 0:
        raise RuntimeError(f"{label} failed (status {status}); see {log}")


# Running one measurement in its own process --------------------------------------------------


def run_child(
    spec: dict[str, Any],
    env: dict[str, str],
    label: str,
    *,
    timeout: float,
    python: str = PYTHON,
    module: str = "bench.child",
) -> dict[str, Any]:
    """Run bench.child (or another `module` taking SPEC.json RESULT.json, under another
    `python`) with `spec` in a process of its own (settings are per process): its result, or a
    record saying it timed out or failed (with the log to read)."""
    directory = WORK / "runs"
    directory.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = directory / f"{label}.spec.json", directory / f"{label}.result.json"
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**spec, "label": label, "timeout": timeout}))
    log = WORK / "logs" / f"{label}.log"
    print(f"[bench] {label} …", file=sys.stderr, flush=True)
    status, seconds = procs.run(
        [python, "-m", module, str(spec_path), str(result_path)],
        env=env,
        log=log,
        timeout=timeout,
    )
    if status is None:
        outcome = {"error": f"timed out after {timeout:.0f} s", "log": str(log)}
    elif status != 0 or not result_path.exists():
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        outcome = {"error": f"exit status {status}", "log": str(log), "log_tail": tail}
    else:
        outcome = json.loads(result_path.read_text())
    print(f"[bench] {label}: {outcome.get('error', 'ok')} "
          f"({seconds:.1f} s)", file=sys.stderr, flush=True)  # fmt: skip
    return {**spec, **outcome}


# The machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    memory_gib = None
    try:
        kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory_gib = round(kib / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "django": version("django"),
        "postgresql": pg_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "code": code_version(),
    }


def code_version() -> str:
    """The commit measured, and the product files changed in the working tree since."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(  # noqa: S603 - read-only git commands, git from PATH
                ["git", *args],  # noqa: S607
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return os.environ.get("BENCH_CODE_VERSION", "unknown")
    changed = git("status", "--porcelain", "--", "executions", "flows", "outputs", "flowplatform")
    count = len(changed.splitlines())
    return f"{commit}" + (f" + {count} changed product files" if count else "")


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; Python "
        f"{info['python']}, Django {info['django']}, PostgreSQL {info['postgresql']}; load "
        f"average at start {', '.join(map(str, info['load_average_at_start']))}; code "
        f"{info.get('code', 'unknown')}"
    )


# Results -------------------------------------------------------------------------------------


def command_line() -> str:
    return "python -m bench " + shlex.join(sys.argv[1:])


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Numbers right-aligned, words left."""

    def numeric(cell: Any) -> bool:
        return re.fullmatch(r"[-+]?[\d,.]+ ?[a-z%x]*|—", str(cell)) is not None

    align = [
        "---:" if rows and all(numeric(row[i]) for row in rows) else "---"
        for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def publish(
    name: str,
    info: dict[str, Any],
    target: dict[str, Any],
    rows: list[dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    plot: Callable[[list[dict[str, Any]], Path], None],
    options: Any,
    **extra: Any,
) -> dict[str, Any]:
    """A benchmark's payload (what ran, when, where, the target, the rows), written out as
    write_results does; returned."""
    payload = {
        "benchmark": name,
        "command": command_line(),
        "date": now(),
        "machine": info,
        **extra,
        "target": target,
        "results": rows,
    }
    write_results(
        name, payload, render(payload), lambda path: plot(rows, path),
        update_readme=not options.no_readme,
    )  # fmt: skip
    return payload


def write_results(
    name: str,
    payload: dict[str, Any],
    markdown: str,
    plot: Callable[[Path], None],
    *,
    update_readme: bool,
) -> None:
    """bench/results/NAME.{json,md,png}, the JSON on stdout, and (unless told not to) the
    figures between NAME's markers in bench/README.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    try:
        plot(RESULTS / f"{name}.png")
    except Exception as exc:  # a figure must not cost the numbers
        print(f"[bench] {name}: the plot failed: {exc!r}", file=sys.stderr)
    if update_readme:
        update_readme_section(name, markdown)
    print(json.dumps(payload, indent=2))


def update_readme_section(name: str, markdown: str) -> None:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    if not README.exists():
        return
    text = README.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        return
    body = markdown.strip()
    body = re.sub(r"\A# .*\n+", "", body)  # the README has its own heading
    text = pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)
    README.write_text(text)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_log_axes(axis: Any, *, y: bool = True) -> None:
    """Log scales labelled 100, 1,000 rather than 10², no minor-tick clutter."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    targets = [axis.xaxis, axis.yaxis] if y else [axis.xaxis]
    for target in targets:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.4g}"))
        target.set_minor_formatter(NullFormatter())


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def header(title: str, info: dict[str, Any]) -> str:
    return f"# {title}\n\n`{command_line()}` — {now()}\n\nMachine: {machine_line(info)}.\n"
