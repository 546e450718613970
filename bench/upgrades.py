"""Upgrades: moving many executions to a new version of their flow (`python -m bench upgrades`).

The issue's workload: "upgrading 1,000 executions of a 100-task flow where one middle task
changed: time per execution and statements per execution". The flow is bench.dags' layered DAG
of 100 `bench_transform` tasks; N executions of it are run, then version 2 changes the config
of the first task of the middle layer (t50) so that its output changes and its two direct
dependents, run again, produce the same output as before (early cutoff reuses the rest below).
For each mode and size, in a process of its own on a fresh database (bench/upgrades_child.py):
(a) `POST /flows/{id}/upgrade-executions?execute_flow=true` — the job created and processed in
the request (jobs in process), every execution re-run — and (b) the same upgrade with
`execute_flow=false` (marking only) to a version 3 that changes t50 again. Each is checked (the
run fails otherwise): every execution on the new version, completed (a) or stale (b), exactly
one upgrade Correction each, and exactly the expected tasks re-run and reused. Modes: embedded
(SQLite) and pg (PostgreSQL as the application's role, database `bench_upgrades` only).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from bench import common

NAME = "upgrades"
MODES = ("embedded", "pg")
SIZES = (100, 1_000)  # executions
QUICK_SIZES = (100,)
TASKS = 100  # tasks of the flow
# Targets (bench/README.md, "Targets"): statements per execution do not depend on how many
# executions the job upgrades (within ±2 between the smallest and the largest size), and an
# execute_flow upgrade of one execution of the 100-task flow costs at most 50 ms embedded.
STATEMENTS_TOLERANCE = 2.0
MS_TARGET = 50.0
# Only this database on the PostgreSQL server (other work uses the others, the shared
# flowplatform_bench_template included): migrated afresh for each run, dropped at the end.
DATABASE = "bench_upgrades"
SQLITE_TEMPLATE = common.WORK / "upgrades-template.sqlite3"


def run(options: Any) -> dict[str, Any]:
    info = common.machine()
    sizes = options.sizes or (QUICK_SIZES if options.quick else SIZES)
    modes = [mode for mode in (options.modes or MODES) if mode in MODES]
    if options.modes and len(modes) < len(options.modes):
        print(f"[bench] {NAME}: only the modes {', '.join(MODES)} (jobs in process); "
              "the others are skipped", file=sys.stderr)  # fmt: skip
    if not modes:
        raise ValueError(f"{NAME}: no mode to run; choose from {', '.join(MODES)}")
    if "embedded" in modes:
        prepare_sqlite_template(options.timeout)
    rows, loads = [], []
    try:
        for mode in modes:
            for size in sizes:
                rows.append(measure(mode, size, options))
                loads.append([round(x, 2) for x in os.getloadavg()])
    finally:
        if "pg" in modes and not options.keep_databases:
            common.drop_pg_databases(DATABASE)
    payload = common.publish(
        NAME, info, targets(rows), rows, markdown, plot, options, load_average_after_each=loads
    )
    failed = [row for row in rows if "error" in row]
    for row in failed:
        print(f"[bench] {NAME} {row['mode']} {row['size']}: FAILED: {row['error']}",
              file=sys.stderr)  # fmt: skip
    if any(row.get("check_failed") for row in failed):
        raise RuntimeError(
            "upgrades: an upgrade did not move every execution or re-ran other tasks than "
            f"expected; see {common.RESULTS / (NAME + '.md')}"
        )
    return payload


# Databases: its own only ------------------------------------------------------------------------


def prepare_sqlite_template(timeout: float) -> None:
    """A migrated SQLite file of this benchmark's own (not the shared template.sqlite3)."""
    SQLITE_TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    SQLITE_TEMPLATE.unlink(missing_ok=True)
    common.migrate(
        common.django_env(f"sqlite:///{SQLITE_TEMPLATE}"), f"{NAME}-migrate-sqlite", timeout=timeout
    )


def fresh_sqlite_database(label: str) -> str:
    path = common.WORK / f"{label}.sqlite3"
    for stale in common.WORK.glob(f"{label}.sqlite3*"):
        stale.unlink()
    path.write_bytes(SQLITE_TEMPLATE.read_bytes())
    return f"sqlite:///{path}"


def fresh_pg_database(timeout: float) -> str:
    """`bench_upgrades` dropped, created and migrated by the superuser of BENCH_PG_URL (the
    tables' owner, granting the application's role its privileges, as README "Two roles"
    prescribes; the role is created if missing, as common.prepare_pg_template does); its URL as
    the application's role. No template: the shared one belongs to the other benchmarks."""
    common.create_app_role()
    common.drop_pg_databases(DATABASE)
    common.create_pg_database(DATABASE)
    env = common.django_env(common.pg_url(DATABASE), DATABASE_APP_ROLE=common.APP_ROLE)
    common.migrate(env, f"{NAME}-migrate-pg", timeout=timeout)
    return common.pg_url(DATABASE, common.APP_ROLE)


def measure(mode: str, size: int, options: Any) -> dict[str, Any]:
    label = f"{NAME}-{mode}-{size}"
    pg = mode == "pg"
    url = fresh_pg_database(options.timeout) if pg else fresh_sqlite_database(label)
    env = common.django_env(url, "immediate")
    spec = {
        "mode": mode,
        "size": size,
        "tasks": TASKS,
        "profile": str(common.WORK / "profiles" / f"{label}.html") if options.profile else None,
    }
    return common.run_child(
        spec, env, label, timeout=options.timeout, module="bench.upgrades_child"
    )


# Verdicts ------------------------------------------------------------------------------------


def _ms_ok(row: dict[str, Any]) -> bool | None:
    phase = row.get("execute_flow", {})
    if row["mode"] != "embedded" or "ms_per_execution" not in phase:
        return None
    return phase["ms_per_execution"] <= MS_TARGET


def _constant(rows: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    """Per mode: statements per execution at the smallest and the largest size, and whether
    they are within the tolerance (None with fewer than two sizes)."""
    verdicts = {}
    for mode in dict.fromkeys(row["mode"] for row in rows):
        points = sorted(
            (row["size"], row[phase]["statements_per_execution"])
            for row in rows
            if row["mode"] == mode and "statements_per_execution" in row.get(phase, {})
        )
        if len(points) < 2:
            verdicts[mode] = {"points": points, "met": None}
            continue
        spread = max(v for _, v in points) - min(v for _, v in points)
        verdicts[mode] = {
            "points": points,
            "spread": spread,
            "met": spread <= STATEMENTS_TOLERANCE,
        }
    return verdicts


def _all(values: list[bool | None]) -> bool | None:
    known = [v for v in values if v is not None]
    return all(known) if known else None


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    constant = {phase: _constant(rows, phase) for phase in ("execute_flow", "marking")}
    return {
        "statements_per_execution_tolerance": STATEMENTS_TOLERANCE,
        "statements_constant": constant,
        "statements_constant_met": _all(
            [v["met"] for phase in constant.values() for v in phase.values()]
        ),
        "embedded_ms_per_execution": MS_TARGET,
        "embedded_ms_met": _all([_ms_ok(row) for row in rows]),
        "checked_everywhere": _all(
            [
                row.get(phase, {}).get("checked")
                for row in rows
                for phase in ("execute_flow", "marking")
            ]
        ),
    }


def _word(value: bool | None) -> str:
    return "not measured" if value is None else ("met" if value else "missed")


# Output --------------------------------------------------------------------------------------


def _top(phase: dict[str, Any], count: int = 3) -> str:
    shapes, spent = phase.get("statement_shapes"), phase.get("statement_shapes_ms") or {}
    if not shapes:
        return "—"
    ranked = sorted(shapes, key=lambda kind: (-spent.get(kind, 0.0), -shapes[kind]))[:count]
    return "; ".join(
        f"{kind} ×{shapes[kind]:,} ({spent.get(kind, 0.0):,.0f} ms)"  # noqa: RUF001
        for kind in ranked
    )


def _jobs(jobs: dict[str, int] | None) -> str:
    if not jobs:
        return "0"
    return ", ".join(f"{n:,} {name}" for name, n in sorted(jobs.items()))


def _per(phase: dict[str, Any], job: str, size: int) -> float | None:
    """ms per execution spent in the jobs named `job`."""
    total = phase.get("total_job_ms") or {}
    return total[job] / size if job in total else None


def _without_cpu_if_unmeasured(
    headers: list[str], table: list[list[Any]]
) -> tuple[list[str], list[list[Any]]]:
    """Results from before the CPU time was recorded: no column of dashes."""
    i = headers.index("CPU ms/execution")
    if any(row[i] != "—" for row in table):
        return headers, table
    return headers[:i] + headers[i + 1 :], [row[:i] + row[i + 1 :] for row in table]


def markdown(payload: dict[str, Any]) -> str:
    rows, target = payload["results"], payload["target"]
    table, shapes = [], []
    for row in rows:
        for key, label in (("execute_flow", "(a) execute_flow=true"), ("marking", "(b) marking")):
            phase = row.get(key, {})
            if not phase and key == "marking" and "execute_flow" not in row:
                continue
            verdict = _ms_ok(row) if key == "execute_flow" else None
            table.append(
                [
                    row["mode"],
                    f"{row['size']:,}",
                    label,
                    common.fmt(phase.get("seconds"), 2),
                    common.fmt(phase.get("ms_per_execution"), 2),
                    common.fmt(phase.get("cpu_ms_per_execution"), 2),
                    f"{phase['statements']:,}" if "statements" in phase else "—",
                    common.fmt(phase.get("statements_per_execution"), 2),
                    phase.get("stale_per_execution", "—"),
                    phase.get("ran_per_execution", "—"),
                    phase.get("reused_per_execution", "—"),
                    common.fmt(row.get("setup", {}).get("ms_per_execution"), 1)
                    if key == "execute_flow"
                    else "",
                    _jobs(phase.get("jobs")) if phase else "—",
                    _word(verdict) if verdict is not None else "—",
                    row.get("error")
                    or ("checked" if phase.get("checked") else phase.get("job", {}).get("status"))
                    or "—",
                ]
            )
            shapes.append(
                [
                    row["mode"],
                    f"{row['size']:,}",
                    label,
                    common.fmt(phase.get("statements_ms"), 0),
                    common.fmt(
                        phase["statements_ms"] / row["size"] if "statements_ms" in phase else None,
                        2,
                    ),
                    common.fmt(_per(phase, "run_upgrade_job", row["size"]), 1),
                    common.fmt(_per(phase, "run_pure_wave", row["size"]), 1),
                    common.fmt(phase.get("executor_ms"), 0),
                    _top(phase),
                ]
            )
    headers = [
        "mode", "executions", "upgrade", "s", "ms/execution", "CPU ms/execution", "statements",
        "statements/execution", "stale/execution", "re-ran/execution", "reused/execution",
        "full run ms/execution (set-up)", "jobs", "≤ 50 ms", "status",
    ]  # fmt: skip
    constant = target["statements_constant"]

    def spread(phase: str) -> str:
        parts = []
        for mode, verdict in constant[phase].items():
            points = ", ".join(f"{v:.2f} at {n:,}" for n, v in verdict["points"])
            parts.append(f"{mode} {points}")
        return "; ".join(parts) or "—"

    first = next((row for row in rows if "descendants" in row), {})
    summary = (
        f"**Targets**: statements per execution constant across sizes (within "
        f"±{STATEMENTS_TOLERANCE:g} between the smallest and the largest) — "
        f"{_word(target['statements_constant_met'])} ((a) {spread('execute_flow')}; "
        f"(b) {spread('marking')}); an `execute_flow=true` upgrade at most {MS_TARGET:g} ms per "
        f"execution of the {TASKS}-task flow, embedded — {_word(target['embedded_ms_met'])}; "
        f"every execution moved with exactly the expected re-runs — "
        f"{_word(target['checked_everywhere'])}."
    )
    workload = (
        f"Flow: the layered DAG of {TASKS} `bench_transform` tasks (10 per layer, each the "
        "larger of two tasks of the layer before), N executions with inputs v = 1 … N, run "
        "before the clock starts (their time per execution is the set-up column). Version 2 "
        f"changes the config of {first.get('changed_task', 't50')} (the middle layer's first "
        "task) to `{v: min([a, `0`])}`: its output becomes {v: 0}; its "
        f"{len(first.get('expected_ran', [None, None, None])) - 1} direct dependents "
        f"({', '.join(first.get('expected_ran', [])[1:]) or '—'}) run again and still output "
        f"v, so early cutoff reuses the {first.get('expected_reused', '—')} tasks below them; "
        f"{first.get('untouched', '—')} tasks are not touched. Per execution: "
        f"{first.get('descendants', 0) + 1 if first else '—'} stale, "
        f"{len(first.get('expected_ran', [])) or '—'} re-ran, "
        f"{first.get('expected_reused', '—')} reused. (a) `POST /flows/{{id}}/upgrade-executions"
        "?execute_flow=true` with `from_version: 1`: one request, in which the job is created "
        "and (jobs in process) processed in batches of FLOWPLATFORM_UPGRADE_BATCH = 50, each "
        "batch enqueuing a wave job per execution for its re-runs, run after the upgrade job; "
        "s, ms and statements are the "
        "request's (every SQL statement on the connection); CPU ms: the measuring process's CPU "
        "time during the request (SQLite's work included, PostgreSQL's not), less sensitive "
        "than the wall time to other work on the machine. (b) the same with "
        "`execute_flow=false`, from version 2 to a version 3 that changes the same task again "
        "(`min([a, `-1`])`): marking only, the executions are left stale. Checked after each "
        "(the run fails otherwise): every execution on the new version and completed (a) or "
        "stale (b), exactly one upgrade Correction of the job per execution, every job item "
        "upgraded with the stale count above, and the attempts each correction started: "
        "exactly the changed task and its direct dependents ran, exactly the others below were "
        "reused, and (a) the changed task outputs {v: 0} and its dependents v. A 20-task flow's "
        "3 executions are upgraded both ways first to warm the process up (not timed). "
        "embedded: SQLite; pg: PostgreSQL as the application's role (row-level security on), "
        f"database `{DATABASE}`."
    )
    loads = payload.get("load_average_after_each") or []
    busiest = max((load[0] for load in loads), default=None)
    start = payload["machine"]["load_average_at_start"][0]
    note = (
        f" Load average (1 min) at the start {start:g}, after the runs up to {busiest:g}"
        + (
            ": other work was running on the machine, so the times are noisy."
            if max(start, busiest) > 1
            else "."
        )
        if busiest is not None
        else ""
    )
    return "\n".join(
        [
            common.header("Upgrades", payload["machine"]),
            summary + "\n",
            common.markdown_table(*_without_cpu_if_unmeasured(headers, table)),
            "",
            workload + note,
            "",
            "**Where the statements go** (by verb and first table: the three that took the most "
            "time, with their count and ms):",
            "",
            common.markdown_table(
                [
                    "mode",
                    "executions",
                    "upgrade",
                    "ms in statements",
                    "ms in statements/execution",
                    "batches ms/execution",
                    "re-run waves ms/execution",
                    "ms in executors",
                    "costliest statements",
                ],
                shapes,
            ),
            "",
            "ms in statements: time inside the statements' execute() calls (on PostgreSQL with "
            "receiving their rows; on SQLite Django fetches rows later, so a lower bound). "
            "Batches: the `run_upgrade_job` job (every batch: moving and marking each "
            "execution, its Correction and job item); re-run waves: the `run_pure_wave` jobs "
            "that re-ran the stale tasks (each batch enqueues one per execution when it "
            "commits; the embedded backend runs a job enqueued during another after it, so "
            "they run once the upgrade job has finished, still inside the request); the rest "
            "of the request is matching the executions (`create_job`), the view and its "
            "transaction. Executors: time inside `bench_transform` itself.",
        ]
    )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = common.pyplot()
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for mode in dict.fromkeys(row["mode"] for row in rows):
        for key, label, style in (
            ("execute_flow", "execute_flow=true", "-o"),
            ("marking", "marking", "--s"),
        ):
            points = sorted(
                (row["size"], row[key]) for row in rows
                if row["mode"] == mode and "ms_per_execution" in row.get(key, {})
            )  # fmt: skip
            if not points:
                continue
            sizes = [n for n, _ in points]
            axes[0].plot(sizes, [p["ms_per_execution"] for _, p in points], style,
                         label=f"{mode} {label}")  # fmt: skip
            axes[1].plot(sizes, [p["statements_per_execution"] for _, p in points], style,
                         label=f"{mode} {label}")  # fmt: skip
    axes[0].axhline(MS_TARGET, color="red", linewidth=0.8, label="50 ms target (embedded)")
    titles = [
        (f"upgrading N executions of a {TASKS}-task flow: ms per execution", "ms / execution"),
        ("SQL statements per execution", "statements / execution"),
    ]
    for axis, (title, ylabel) in zip(axes, titles, strict=True):
        axis.set(title=title, xlabel="executions", ylabel=ylabel, xscale="log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axis.set_ylim(bottom=0)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
