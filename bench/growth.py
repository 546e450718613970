"""Growth: the cost of marking stale as the stale set grows (`python -m bench growth`).

Layered flows (10 tasks per layer, two edges per task) of 100 to 10,000 tasks, each run in full,
then one correction with `execute_flow=false` of the task whose dependents are about half the
flow. The product claims a constant number of queries and time linear in the stale set; the
target is marking 5,000 stale tasks of a 10,000-task flow on PostgreSQL in under 250 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import common

NAME = "growth"
SIZES = (100, 300, 1_000, 3_000, 10_000)
QUICK_SIZES = (100, 300, 1_000)
MODES = ("pg",)
TARGET_MS = 250.0
TARGET_TASKS = 10_000


def run(options: Any) -> dict[str, Any]:
    info = common.machine()
    sizes = options.sizes or (QUICK_SIZES if options.quick else SIZES)
    modes = [("pg" if m == "workers" else m) for m in (options.modes or MODES)]
    shape = (options.shapes or ["layered"])[0]
    if "embedded" in modes:
        common.prepare_sqlite_template(options.timeout)
    if "pg" in modes:
        common.prepare_pg_template(options.timeout)
    rows = []
    try:
        for mode in modes:
            for size in sizes:
                label = f"{NAME}-{mode}-{shape}-{size}"
                if mode == "pg":
                    env = common.django_env(common.fresh_pg_database(f"flowplatform_bench_{NAME}"))
                else:
                    env = common.django_env(common.fresh_sqlite_database(label))
                spec = {
                    "mode": mode,
                    "shape": shape,
                    "size": size,
                    "steps": ["full", "stale"],
                    "profile": (
                        str(common.WORK / "profiles" / f"{label}.html") if options.profile else None
                    ),
                }
                rows.append(common.run_child(spec, env, label, timeout=options.timeout))
    finally:
        if "pg" in modes and not options.keep_databases:
            common.drop_pg_databases(f"flowplatform_bench_{NAME}", common.PG_TEMPLATE)
    return common.publish(NAME, info, verdicts(rows), rows, markdown, plot, options)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Constant queries per mode (every size the same count); the 10,000-task figure on PG."""
    result: dict[str, Any] = {"ms": TARGET_MS, "tasks": TARGET_TASKS}
    for mode in {row["mode"] for row in rows}:
        counts = {row["stale"]["queries"] for row in rows if row["mode"] == mode and "stale" in row}
        result[f"constant_queries_{mode}"] = (len(counts) == 1) if counts else None
    big = [r for r in rows if r["mode"] == "pg" and r["size"] == TARGET_TASKS and "stale" in r]
    result["under_250ms_pg_10000"] = big[0]["stale"]["ms"] < TARGET_MS if big else None
    return result


def _word(value: bool | None) -> str:
    return "not measured" if value is None else ("met" if value else "missed")


def markdown(payload: dict[str, Any]) -> str:
    rows, target = payload["results"], payload["target"]
    table = []
    for row in rows:
        stale = row.get("stale", {})
        verdict = "—"
        if row["mode"] == "pg" and row["size"] == TARGET_TASKS and stale:
            verdict = "met" if stale["ms"] < TARGET_MS else "missed"
        table.append(
            [
                row["mode"],
                f"{row['size']:,}",
                f"{stale['stale_tasks']:,}" if stale else "—",
                common.fmt(stale.get("ms"), 1),
                stale.get("queries", "—"),
                common.fmt(stale.get("us_per_stale_task"), 1),
                verdict,
                common.fmt(row.get("full", {}).get("seconds"), 1),
                row.get("error") or row.get("full", {}).get("status", "—"),
            ]
        )
    constant = [
        f"{mode}: {_word(value)}"
        for key, value in sorted(target.items())
        if key.startswith("constant_queries_") and (mode := key.rpartition("_")[2])
    ]
    lines = [
        common.header("Growth of stale marking", payload["machine"]),
        f"**Targets**: marking about 5,000 stale tasks in a 10,000-task flow on PostgreSQL "
        f"< {TARGET_MS:g} ms — {_word(target['under_250ms_pg_10000'])}; a constant query count "
        f"from 100 to 10,000 tasks — {', '.join(constant) or 'not measured'} (over the sizes "
        "measured).\n",
        common.markdown_table(
            [
                "mode",
                "tasks",
                "stale tasks",
                "ms",
                "queries",
                "µs / stale task",
                "< 250 ms",
                "setup: full run s",
                "status",
            ],
            table,
        ),
        "",
        "Each row: a fresh layered flow run in full (in process), then one "
        "`PUT /task-executions/{id}?execute_flow=false` of the task whose dependents are about "
        "half the flow, timed around the request; queries counted with "
        "`CaptureQueriesContext`. `pg`: PostgreSQL as the application's role (row-level "
        "security on); `embedded`: SQLite.",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = common.pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for mode in sorted({row["mode"] for row in rows}):
        points = [(r["stale"]["stale_tasks"], r["stale"]) for r in rows
                  if r["mode"] == mode and "stale" in r]  # fmt: skip
        if not points:
            continue
        xs = [x for x, _ in points]
        left.plot(xs, [s["ms"] for _, s in points], "-o", label=mode)
        right.plot(xs, [s["queries"] for _, s in points], "-o", label=mode)
    left.axhline(TARGET_MS, color="red", linewidth=0.8, label="250 ms target")
    left.set(title="marking stale: wall time", xlabel="stale tasks", ylabel="ms",
             xscale="log", yscale="log")  # fmt: skip
    right.set(title="marking stale: SQL queries", xlabel="stale tasks", ylabel="queries",
              xscale="log", ylim=(0, None))  # fmt: skip
    common.plain_log_axes(left)
    common.plain_log_axes(right, y=False)
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
