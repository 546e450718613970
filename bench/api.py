"""API under load (`python -m bench api`): gunicorn with the production settings on PostgreSQL,
locust headless on loopback, one endpoint at a time, compared with a floor endpoint.

Production settings as README "Configuration" gives them: DEBUG=false, SECRET_KEY,
ALLOWED_HOSTS, DATABASE_URL on PostgreSQL as the application's role (row-level security on,
migrated by the owner), TASKS_BACKEND=database, `gunicorn flowplatform.wsgi` with sync workers.
README names no worker count, so gunicorn's own advice is used: 2 x cores + 1. The settings
module is bench.settings — the product's, plus the floor's route (bench/urls.py).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import common, procs

NAME = "api"
DATABASE = "flowplatform_bench_api"
# Issue 16: reads at least 0.5 x the floor's throughput, a correction PUT at least 0.2 x.
TARGET_RATIO = 0.5
PUT_TARGET_RATIO = 0.2


def _target(scenario: str) -> float:
    return PUT_TARGET_RATIO if scenario.startswith("Correct") or "Put" in scenario else TARGET_RATIO


# (locust user class, label); the floor runs last (bench/urls.py says why).
SCENARIOS = (
    ("ListTaskExecutions", "GET /task-executions (filtered, paginated)"),
    ("GetTaskExecution", "GET /task-executions/{id}"),
    ("CorrectTaskExecution", "PUT /task-executions/{id} (execute_flow=false)"),
    ("Floor", "floor: one indexed SELECT, bare Django"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> int:
    request = urllib.request.Request(url, headers=headers or {}, **kwargs)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def run(options: Any) -> dict[str, Any]:
    info = common.machine()
    workers = options.gunicorn_workers or 2 * (os.cpu_count() or 1) + 1
    duration = options.duration or (10 if options.quick else 20)
    users = options.users
    common.prepare_pg_template(options.timeout)
    database_url = common.fresh_pg_database(DATABASE)
    seed_path = common.WORK / "api-seed.json"
    try:
        seed = common.run_child(
            {"kind": "api-seed", "mode": "pg", "executions": options.seed_executions, "size": 30},
            common.django_env(database_url),
            f"{NAME}-seed",
            timeout=options.timeout,
        )
        if "error" in seed:
            raise RuntimeError(f"seeding failed: {seed['error']} ({seed.get('log')})")
        seed_path.write_text(json.dumps(seed))
        rows = _under_load(database_url, seed, seed_path, workers, users, duration, options)
    finally:
        if not options.keep_databases:
            common.drop_pg_databases(DATABASE, common.PG_TEMPLATE)
    floor = next((r for r in rows if r["scenario"] == "Floor" and r.get("rps")), None)
    for row in rows:
        row["ratio_to_floor"] = row["rps"] / floor["rps"] if floor and row.get("rps") else None
    ratios = [
        (r["ratio_to_floor"], _target(r["scenario"])) for r in rows if r["scenario"] != "Floor"
    ]
    setup = {
        "gunicorn_workers": workers,
        "gunicorn_worker_class": "sync",
        "locust_users": users,
        "duration_seconds": duration,
        "seeded_task_executions": seed.get("task_executions"),
        "seeded_flow_executions": len(seed.get("flow_execution_ids", [])),
    }
    target = {
        "ratio_to_floor": TARGET_RATIO,
        "put_ratio_to_floor": PUT_TARGET_RATIO,
        "met": None
        if not ratios or any(r is None for r, _ in ratios)
        else all(r >= t for r, t in ratios),
    }
    return common.publish(NAME, info, target, rows, markdown, plot, options, setup=setup)


def _under_load(
    database_url: str,
    seed: dict[str, Any],
    seed_path: Path,
    workers: int,
    users: int,
    duration: int,
    options: Any,
) -> list[dict[str, Any]]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = common.django_env(
        database_url, "database", DJANGO_SETTINGS_MODULE="bench.settings",
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )  # fmt: skip
    gunicorn = procs.spawn(
        [common.PYTHON, "-m", "gunicorn", "flowplatform.wsgi", "--workers", str(workers),
         "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--timeout", "60"],
        env=env,
        log=common.WORK / "logs" / f"{NAME}-gunicorn.log",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _get(f"{base}/readyz") != 200:
            if gunicorn.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not become ready; see var/bench/logs/api-*.log")
            time.sleep(0.2)
        rows = []
        for scenario, label in SCENARIOS:
            _warm_up(base, scenario, seed, workers)
            rows.append(
                {"scenario": scenario, "endpoint": label, **_locust(base, scenario, seed_path,
                                                                      users, duration, options)}
            )  # fmt: skip
        return rows
    finally:
        procs.stop(gunicorn)


def _warm_up(base: str, scenario: str, seed: dict[str, Any], workers: int) -> None:
    """Every gunicorn worker has served the endpoint before the clock starts (imports, caches,
    database connections)."""
    auth = {"Authorization": f"Bearer {seed['key']}"}
    for i in range(workers * 10):
        pk = seed["task_execution_ids"][i % len(seed["task_execution_ids"])]
        if scenario == "ListTaskExecutions":
            fe = seed["flow_execution_ids"][i % len(seed["flow_execution_ids"])]
            _get(f"{base}/task-executions?flow_execution_id={fe}&limit=20", auth)
        elif scenario == "GetTaskExecution":
            _get(f"{base}/task-executions/{pk}", auth)
        elif scenario == "CorrectTaskExecution":
            attempt = seed["corrections"][i % len(seed["corrections"])]
            body = json.dumps({**attempt, "status": "completed", "output": {"v": -i}}).encode()
            _get(f"{base}/task-executions/{attempt['id']}",
                 {**auth, "Content-Type": "application/json"}, data=body, method="PUT")  # fmt: skip
        else:
            _get(f"{base}/bench/floor/{seed['organization_id']}/{pk}")


def _locust(
    base: str, scenario: str, seed_path: Path, users: int, duration: int, options: Any
) -> dict[str, Any]:
    prefix = common.WORK / "locust" / scenario
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for old in prefix.parent.glob(f"{scenario}_*.csv"):
        old.unlink()
    env = {**os.environ, "BENCH_SEED": str(seed_path)}
    command = [
        common.PYTHON, "-m", "locust", "-f", "bench/locustfile.py", "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{duration}s", "--host", base,
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", scenario,
    ]  # fmt: skip
    print(f"[bench] {NAME}: {scenario}, {users} users, {duration} s …", file=sys.stderr)
    status, _ = procs.run(
        command, env=env, log=common.WORK / "logs" / f"{NAME}-locust-{scenario}.log",
        timeout=duration + 60,
    )  # fmt: skip
    stats = Path(f"{prefix}_stats.csv")
    if status is None or not stats.exists():
        return {"error": f"locust {'timed out' if status is None else f'exit status {status}'}"}
    with stats.open() as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    return {
        "requests": requests,
        "failures": failures,
        "rps": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p99_ms": float(total["99%"]),
        "mean_ms": float(total["Average Response Time"]),
        "locust_exit_status": status,
    }


def markdown(payload: dict[str, Any]) -> str:
    setup, rows = payload["setup"], payload["results"]
    table = []
    for row in rows:
        ratio = row.get("ratio_to_floor")
        verdict = "—" if row["scenario"] == "Floor" or ratio is None else (
            "met" if ratio >= _target(row["scenario"]) else "missed"
        )  # fmt: skip
        table.append(
            [
                row["endpoint"],
                common.fmt(row.get("rps"), 0),
                common.fmt(row.get("p50_ms"), 0),
                common.fmt(row.get("p99_ms"), 0),
                f"{row['requests']:,}" if "requests" in row else "—",
                row.get("failures", row.get("error", "—")),
                common.fmt(ratio, 2),
                verdict,
            ]
        )
    met = payload["target"]["met"]
    verdict = "not measured" if met is None else ("met" if met else "missed")
    return "\n".join(
        [
            common.header("API under load", payload["machine"]),
            f"**Target**: the reads at least {TARGET_RATIO:g} x the floor's throughput, the "
            f"correction PUT at least {PUT_TARGET_RATIO:g} x — "
            f"{verdict}.\n",
            common.markdown_table(
                [
                    "endpoint",
                    "requests/s",
                    "p50 ms",
                    "p99 ms",
                    "requests",
                    "failures",
                    "x floor",
                    "target",
                ],
                table,
            ),
            "",
            f"gunicorn `flowplatform.wsgi`, {setup['gunicorn_workers']} sync workers "
            "(2 x cores + 1), DEBUG=false, PostgreSQL as the application's role (row-level "
            f"security on), TASKS_BACKEND=database; locust headless, {setup['locust_users']} "
            f"users without think time, {setup['duration_seconds']} s per endpoint, on the same "
            f"machine (loopback). Data: {setup['seeded_flow_executions']} runs of a 30-task "
            f"layered flow ({setup['seeded_task_executions']:,} task executions); the list is "
            "filtered by flow execution and status, 20 per page; PUT corrects a middle-layer "
            "task (a few dependents become stale). The floor is a plain Django view reading "
            "one task execution by primary key (bench/urls.py).",
        ]
    )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = common.pyplot()
    rows = [r for r in rows if r.get("rps")]
    labels = [r["scenario"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars = left.bar(labels, [r["rps"] for r in rows], color="tab:blue")
    for bar, row in zip(bars, rows, strict=True):
        ratio = row.get("ratio_to_floor")
        if ratio is not None:
            left.annotate(f"{ratio:.2f}x floor", (bar.get_x() + bar.get_width() / 2,
                          bar.get_height()), ha="center", va="bottom", fontsize=8)  # fmt: skip
    floor = next((r["rps"] for r in rows if r["scenario"] == "Floor"), None)
    if floor:
        left.axhline(floor * TARGET_RATIO, color="red", linewidth=0.8, label="0.5 x floor")
        left.legend(fontsize=8)
    left.set(title="throughput", ylabel="requests / s")
    positions = range(len(rows))
    right.bar([p - 0.2 for p in positions], [r["p50_ms"] for r in rows], 0.4, label="p50")
    right.bar([p + 0.2 for p in positions], [r["p99_ms"] for r in rows], 0.4, label="p99")
    right.set_xticks(list(positions), labels)
    right.set(title="latency", ylabel="ms")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=15, labelsize=8)
        axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
