"""Scaling: a full run's throughput with 1, 2 and 4 db_workers (`python -m bench scaling`).

For a fan-out and a layered DAG of 1,000 tasks of each kind — `bench_transform`, pure, which
the engine runs in waves (many tasks per job and transaction: executions/engine/waves.py), and
`bench_python`, impure, a job per attempt — a full run in propagation's workers mode
(PostgreSQL as the application's role, TASKS_BACKEND=database, real `manage.py db_worker`s):
seconds, tasks/s, ms/task and the job rows it made. Also, for the estimate in bench/README.md
("Scale-out on paper"): the SQL statements per job of each kind, counted in process around
the product's own worker loop (`count_statements`), and what this machine's PostgreSQL does
on its own (`postgres_figures`: pgbench, and django-tasks-db's claim cycle on its real table).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench import common, propagation

NAME = "scaling"
KINDS = (common.BENCH_EXECUTOR, common.BENCH_IMPURE_EXECUTOR)
KIND_NOTES = {
    common.BENCH_EXECUTOR: "pure, in waves",
    common.BENCH_IMPURE_EXECUTOR: "impure, a job per attempt",
}
WORKERS = (1, 2, 4)
SHAPES = ("fanout", "layered")
SIZES = (1_000,)
QUICK = {"sizes": (200,), "workers": (1, 2), "pgbench_seconds": 3}
DATABASE = f"flowplatform_bench_{NAME}"
COUNT_SIZE = 50  # the flows whose statements are counted

PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")
PGBENCH_SECONDS = 10
PGBENCH_CLIENTS = 4  # 2 x cores: enough to saturate this machine, not so many they thrash
PGBENCH_SCALE = 10  # 1,000,000 pgbench_accounts rows
OLD_JOB_ROWS = 1_000_000  # finished job rows left in the table for the second claim test


def run(options: Any) -> dict[str, Any]:
    info = common.machine()
    workers = options.workers or (QUICK["workers"] if options.quick else WORKERS)
    shapes = options.shapes or SHAPES
    sizes = options.sizes or (QUICK["sizes"] if options.quick else SIZES)
    rounds = options.repeat or 1
    common.prepare_pg_template(options.timeout)
    rows: list[dict[str, Any]] = []
    try:
        # Waves also at full size: a group's statements hardly grow with its tasks, its lock
        # hold does. A job per attempt costs the same at any size.
        statements = [
            count(kind, shape, size, options)
            for kind in KINDS
            for shape in shapes
            for size in sorted({COUNT_SIZE, max(sizes)} if kind == common.BENCH_EXECUTOR
                               else {COUNT_SIZE})
        ]  # fmt: skip
        for round_ in range(1, rounds + 1):
            for kind in KINDS:
                for shape in shapes:
                    for size in sizes:
                        for count_ in workers:
                            rows.append(measure(kind, shape, size, count_, round_, rounds, options))
        postgres = postgres_figures(options)
    finally:
        if not options.keep_databases:
            common.drop_pg_databases(DATABASE, common.PG_TEMPLATE)
    return common.publish(
        NAME, info, {}, rows, markdown, plot, options, statements=statements, postgres=postgres
    )


def measure(
    kind: str, shape: str, size: int, workers: int, round_: int, rounds: int, options: Any
) -> dict[str, Any]:
    """One full run with `workers` db_workers, through propagation's workers mode."""
    label = f"{NAME}-{kind}-{shape}-{size}-w{workers}" + (f"-r{round_}" if rounds > 1 else "")
    row = propagation.measure(
        "workers", shape, size, options, steps=["full"], label=label, workers=workers,
        task_type=kind, database=DATABASE,
    )  # fmt: skip
    row.update(kind=kind, round=round_)
    full = row.get("full", {})
    if full.get("seconds"):
        full["tasks_per_second"] = size / full["seconds"]
    return row


# Statements per job -------------------------------------------------------------------------


def count(kind: str, shape: str, size: int, options: Any) -> dict[str, Any]:
    """count_statements in a process of its own, on a fresh PostgreSQL database."""
    env = common.django_env(common.fresh_pg_database(DATABASE), "database")
    spec = {"mode": "workers", "task_type": kind, "shape": shape, "size": size}
    label = f"{NAME}-statements-{kind}-{shape}-{size}"
    result = common.run_child(spec, env, label, timeout=options.timeout, module="bench.scaling")
    return {**result, "kind": kind}


JOB_TABLE_NAME = "django_tasks_database_dbtaskresult"  # DBTaskResult's (count_statements checks)
JOB_TABLE = f'"{JOB_TABLE_NAME}"'
FLOW_LOCK = re.compile(
    r'^(SELECT .* FROM "executions_flowexecution" .* FOR UPDATE|UPDATE "executions_flowexecution")',
    re.DOTALL,
)


def category(sql: str) -> str:
    """What a statement is for: django-tasks-db's job table (the claim's SELECT … FOR UPDATE
    SKIP LOCKED and UPDATE, the outcome's UPDATE, an enqueue's INSERT) or the engine's."""
    if JOB_TABLE not in sql:
        return "engine"
    if "SKIP LOCKED" in sql:
        return "claim_select"
    if sql.startswith("UPDATE") and '"worker_ids"' in sql:
        return "claim_update"
    if sql.startswith("UPDATE") and '"return_value"' in sql:
        return "finish_update"
    if sql.startswith("INSERT"):
        return "enqueue_insert"
    return "queue_other"


class Recorder:
    """Every statement on a connection with its start and end and its transaction; each
    COMMIT and ROLLBACK; Django's connection health checks (CONN_HEALTH_CHECKS: a `SELECT 1`
    sent past the cursor wrapper). CaptureQueriesContext gives neither the times (for the
    flow execution's lock hold) nor the health checks."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.events: list[dict[str, Any]] = []
        self.transaction = 0  # the current transaction's number
        self.in_transaction = 0  # its statements so far
        self.job: int | None = None  # the index of the job running, in self.jobs
        self.jobs: list[dict[str, Any]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            atomic = self.connection.in_atomic_block
            self._event(category(sql), started, sql=sql, atomic=atomic)
            if atomic:
                self.in_transaction += 1
            else:  # autocommit: a transaction of its own
                self.transaction += 1

    def _event(self, kind: str, started: float, **fields: Any) -> None:
        fields.update(
            kind=kind, job=self.job, transaction=self.transaction, start=started,
            end=time.perf_counter(),
        )  # fmt: skip
        self.events.append(fields)

    def _wrapped(self, name: str) -> Any:
        original = getattr(self.connection, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if name == "is_usable":
                    self._event("health_check", started)
                elif self.in_transaction:  # psycopg sends nothing for an empty transaction
                    self._event(name, started)
                    self.transaction += 1
                    self.in_transaction = 0

        return wrapper

    def started(self, sender: Any, task_result: Any, **kwargs: Any) -> None:
        self.job = len(self.jobs)
        self.jobs.append({"name": task_result.task.name, "start": time.perf_counter()})

    def finished(self, sender: Any, task_result: Any, **kwargs: Any) -> None:
        self.jobs[self.job].update(status=str(task_result.status), end=time.perf_counter())
        self.job = None

    def __enter__(self) -> Recorder:
        from django.tasks.signals import task_finished, task_started

        self.connection.execute_wrappers.append(self)
        for name in ("commit", "rollback", "is_usable"):
            setattr(self.connection, name, self._wrapped(name))
        task_started.connect(self.started, weak=False, dispatch_uid="bench-scaling")
        task_finished.connect(self.finished, weak=False, dispatch_uid="bench-scaling")
        return self

    def __exit__(self, *exc: object) -> None:
        from django.tasks.signals import task_finished, task_started

        task_started.disconnect(dispatch_uid="bench-scaling")
        task_finished.disconnect(dispatch_uid="bench-scaling")
        for name in ("commit", "rollback", "is_usable"):
            delattr(self.connection, name)  # the class's method again
        self.connection.execute_wrappers.remove(self)


def count_statements(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one flow (`spec`'s kind, shape and size) with ONE worker, the product's db_worker
    loop (`executions.management.commands.db_worker.Worker`, django-tasks-db's loop with the
    product's additions) in this process, in batch mode (it stops when no job is ready), and
    record every statement: the request's (POST /flow-executions, which enqueues the first
    jobs), then each job's — its claim, its body (worker.run_attempt or worker.run_wave), its
    outcome, the jobs it enqueues — and the worker loop's between jobs."""
    from django.db import connections
    from django_tasks_db.models import DBTaskResult

    from bench.child import Run
    from executions.management.commands.db_worker import Worker

    if DBTaskResult._meta.db_table != JOB_TABLE_NAME:
        raise RuntimeError(f"django-tasks-db's table is {DBTaskResult._meta.db_table} now")
    run = Run(spec)
    flow = run.flow(spec["shape"], int(spec["size"]))
    worker = Worker(
        queue_names=["default"], interval=0, batch=True, backend_name="default",
        startup_delay=False, max_tasks=None, worker_id="bench-statements",
        excluded_queue_names=[], shutdown_timeout=10.0, reap_interval=0,
    )  # fmt: skip
    with Recorder(connections["default"]) as recorder:
        flow_execution = run.start(flow)
        request = len(recorder.events)
        started = time.perf_counter()
        worker.run()
        seconds = time.perf_counter() - started
    status = run.wait_settled(flow_execution["id"])
    summary = summarize(recorder, request, int(spec["size"]))
    return {"status": status, "worker_seconds": seconds, **summary}


def _per(total: float, count: int) -> float | None:
    return total / count if count else None


def _round_trips(events: list[dict[str, Any]]) -> int:
    """Statements and health checks, plus BEGIN and COMMIT (or ROLLBACK) of each transaction
    of several statements (psycopg sends BEGIN before the first)."""
    ends = sum(1 for e in events if e["kind"] in ("commit", "rollback"))
    return sum(1 for e in events if e["kind"] not in ("commit", "rollback")) + 2 * ends


def _lock_holds(events: list[dict[str, Any]]) -> list[float]:
    """Seconds from each transaction's first lock of the flow execution's row to its end."""
    holds = []
    taken: dict[int, float] = {}
    for event in events:
        if event["kind"] == "engine" and FLOW_LOCK.match(event["sql"]):
            taken.setdefault(event["transaction"], event["start"])
        elif event["kind"] in ("commit", "rollback") and event["transaction"] in taken:
            holds.append(event["end"] - taken.pop(event["transaction"]))
    return holds


def summarize(recorder: Recorder, request: int, tasks: int) -> dict[str, Any]:
    """Counts over the worker's statements and the request's job INSERTs (so that every job
    run counts its own enqueue), in all, per job and per task; and per job name."""
    events = recorder.events
    request_events = events[:request]
    worker_events = [e for e in request_events if e["kind"] == "enqueue_insert"] + events[request:]
    kinds = Counter(e["kind"] for e in worker_events)
    jobs = recorder.jobs
    statements = sum(n for kind, n in kinds.items() if kind not in ("commit", "rollback"))
    transactions = (
        kinds["commit"]
        + kinds["rollback"]
        + sum(1 for e in worker_events if e.get("atomic") is False)
    )
    by_job: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for event in worker_events:
        by_job[event["job"]].append(event)
    per_name: dict[str, dict[str, Any]] = {}
    for name in sorted({job["name"] for job in jobs}):
        indexes = [i for i, job in enumerate(jobs) if job["name"] == name]
        bodies = [
            [e for e in by_job[i] if e["kind"] in ("engine", "commit", "rollback")] for i in indexes
        ]
        engine = [sum(1 for e in body if e["kind"] == "engine") for body in bodies]
        # Wall time of each job's body and outcome (task_started to task_finished), and the
        # part of it spent in statements and commits: waiting for PostgreSQL.
        walls = [jobs[i]["end"] - jobs[i]["start"] for i in indexes]
        waits = [sum(e["end"] - e["start"] for e in by_job[i]) for i in indexes]
        holds = [hold for body in bodies for hold in _lock_holds(body)]
        middle = bodies[len(bodies) // 2]
        per_name[name] = {
            "jobs": len(indexes),
            "engine_statements_per_job": statistics.mean(engine),
            "engine_statements_min_max": [min(engine), max(engine)],
            "engine_round_trips_per_job": statistics.mean(_round_trips(b) for b in bodies),
            "engine_transactions_per_job": statistics.mean(
                sum(1 for e in b if e["kind"] in ("commit", "rollback")) for b in bodies
            ),
            "job_ms_median": statistics.median(walls) * 1000,
            "job_ms_in_postgresql_median": statistics.median(waits) * 1000,
            "share_in_postgresql": sum(waits) / sum(walls),
            "flow_lock_holds_per_job": len(holds) / len(indexes),
            "flow_lock_hold_ms_median": statistics.median(holds) * 1000 if holds else None,
            "flow_lock_hold_ms_max": max(holds) * 1000 if holds else None,
            "flow_lock_hold_ms_total": sum(holds) * 1000,
            # One job's statements in order, abridged: to check the counts by eye.
            "example_job": [(e["sql"][:100] if "sql" in e else e["kind"].upper()) for e in middle],
        }
    queue = {kind: kinds[kind] for kind in
             ("claim_select", "claim_update", "finish_update", "enqueue_insert", "queue_other",
              "health_check")}  # fmt: skip
    return {
        "tasks": tasks,
        "jobs": len(jobs),
        "jobs_by_name": dict(Counter(job["name"] for job in jobs)),
        "tasks_per_job": _per(tasks, len(jobs)),
        "statements": statements,
        "statements_per_job": _per(statements, len(jobs)),
        "statements_per_task": _per(statements, tasks),
        "round_trips": _round_trips(worker_events),
        "round_trips_per_job": _per(_round_trips(worker_events), len(jobs)),
        "round_trips_per_task": _per(_round_trips(worker_events), tasks),
        "transactions": transactions,
        "transactions_per_task": _per(transactions, tasks),
        "queue_statements": queue,
        "queue_statements_per_job": _per(sum(queue.values()), len(jobs)),
        "engine_statements": kinds["engine"],
        "engine_statements_per_task": _per(kinds["engine"], tasks),
        "by_job": per_name,
        "request_statements": sum(
            1 for e in request_events if e["kind"] not in ("commit", "rollback")
        ),
        "request_enqueue_inserts": sum(1 for e in request_events if e["kind"] == "enqueue_insert"),
    }


# PostgreSQL on its own ----------------------------------------------------------------------

HOT_ROW = "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1;\n"
# django-tasks-db's cycle for one job, as its worker and backend send it (SQL written out,
# same table, same indexes): enqueue (INSERT); claim (BEGIN, the SELECT … FOR UPDATE SKIP
# LOCKED of the oldest ready job, its UPDATE to RUNNING, COMMIT); outcome (UPDATE).
FAR_FUTURE = "'9999-01-01 00:00:00+00'"
# Constant SQL (no input reaches it), for pgbench and psycopg.
JOB_CYCLE = f"""\
INSERT INTO {JOB_TABLE_NAME} (id, status, enqueued_at, args_kwargs, priority, \
task_path, worker_ids, queue_name, backend_name, run_after, exception_class_path, traceback) \
VALUES (gen_random_uuid(), 'READY', now(), '{{"args": ["x", "y"], "kwargs": {{}}}}', 0, \
'executions.jobs.run_task_attempt', '[]', 'default', 'default', {FAR_FUTURE}, '', '');
BEGIN;
SELECT id AS job FROM {JOB_TABLE_NAME} WHERE status = 'READY' \
AND (run_after = {FAR_FUTURE} OR run_after <= now()) AND backend_name = 'default' \
AND queue_name IN ('default') ORDER BY priority DESC, run_after ASC, enqueued_at ASC \
LIMIT 1 FOR UPDATE SKIP LOCKED
\\gset
UPDATE {JOB_TABLE_NAME} SET status = 'RUNNING', started_at = now(), \
worker_ids = '["bench"]' WHERE id = ':job';
COMMIT;
UPDATE {JOB_TABLE_NAME} SET status = 'SUCCESSFUL', return_value = 'null', \
finished_at = now(), exception_class_path = '', traceback = '' WHERE id = ':job';
"""  # noqa: S608
OLD_ROWS = f"""\
INSERT INTO {JOB_TABLE_NAME} (id, status, enqueued_at, started_at, finished_at, \
args_kwargs, priority, task_path, worker_ids, queue_name, backend_name, run_after, \
return_value, exception_class_path, traceback) \
SELECT gen_random_uuid(), %s, now(), now(), now(), '{{"args": ["x", "y"], "kwargs": {{}}}}', \
0, 'executions.jobs.run_task_attempt', '["old"]', 'default', 'default', {FAR_FUTURE}, \
'null', '', '' FROM generate_series(1, %s)"""  # noqa: S608


# The job cycle is three transactions: the enqueue and the outcome are autocommit statements.
COMMITS_PER_RUN = {"job-cycle": 3, "job-cycle-old-rows": 3}


def _admin_sql(*statements: tuple[str, tuple[Any, ...]]) -> list[Any]:
    """Run statements as the superuser on the benchmark's database; the last row of each."""
    import psycopg

    url = common.pg_url(DATABASE).replace("postgres://", "postgresql://", 1)
    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        for sql, params in statements:
            cursor = conn.execute(sql, params)
            rows.append(cursor.fetchone() if cursor.description else None)
    return rows


def _pgbench(binary: str, label: str, *args: str, seconds: int) -> dict[str, Any]:
    """One pgbench run of `seconds` with PGBENCH_CLIENTS clients: transactions/s, latency."""
    command = [binary, "-n", "-c", str(PGBENCH_CLIENTS), "-j", "2", "-T", str(seconds), *args,
               common.pg_url(DATABASE)]  # fmt: skip
    print(f"[bench] {NAME} pgbench {label} …", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)  # noqa: S603
    log = common.WORK / "logs" / f"{NAME}-pgbench-{label}.log"
    log.write_text(done.stdout + done.stderr)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if done.returncode != 0 or tps is None:
        return {"test": label, "error": f"pgbench exit status {done.returncode}", "log": str(log)}
    return {
        "test": label,
        "clients": PGBENCH_CLIENTS,
        "seconds": seconds,
        "tps": float(tps.group(1)),
        "latency_ms": float(latency.group(1)) if latency else None,
        "failed": int(failed.group(1)) if failed else 0,
    }


def postgres_figures(options: Any) -> dict[str, Any]:
    """What this machine's PostgreSQL does without the product, on a fresh copy of the
    template (so django-tasks-db's real table and indexes): pgbench's select-only and
    simple-update, one hot row updated by every client (a flow execution's row lock, with no
    work while it is held), and django-tasks-db's job cycle, also with OLD_JOB_ROWS finished
    job rows left behind (no pruning)."""
    binary = str(PGBENCH) if PGBENCH.exists() else shutil.which("pgbench")
    common.fresh_pg_database(DATABASE)
    names = ("max_connections", "shared_buffers", "synchronous_commit", "fsync")
    settings = {
        name: row[0] for name, row in zip(names, _admin_sql(*((f"SHOW {n}", ()) for n in names)),
                                          strict=True)
    }  # fmt: skip
    if binary is None:
        return {"error": "pgbench not found", "settings": settings}
    seconds = options.duration or (QUICK["pgbench_seconds"] if options.quick else PGBENCH_SECONDS)
    scripts = common.WORK / "pgbench"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "hot-row.sql").write_text(HOT_ROW)
    (scripts / "job-cycle.sql").write_text(JOB_CYCLE)
    init = subprocess.run(  # noqa: S603
        [binary, "-i", "-q", "-s", str(PGBENCH_SCALE), common.pg_url(DATABASE)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if init.returncode != 0:
        return {"error": f"pgbench -i: {init.stderr[-500:]}", "settings": settings}
    # Ready jobs to claim from the start (each client enqueues one per claim after that), and
    # statistics, as autovacuum would have them: without, the planner may not use the
    # partial index of ready jobs.
    _admin_sql((OLD_ROWS, ("READY", 1000)), (f"VACUUM ANALYZE {JOB_TABLE_NAME}", ()))
    tests = [
        _pgbench(binary, "select-only", "-S", seconds=seconds),
        _pgbench(binary, "simple-update", "-N", seconds=seconds),
        _pgbench(binary, "hot-row", "-f", str(scripts / "hot-row.sql"), seconds=seconds),
        _pgbench(binary, "job-cycle", "-f", str(scripts / "job-cycle.sql"), seconds=seconds),
    ]
    started = time.perf_counter()
    _admin_sql(
        (OLD_ROWS, ("SUCCESSFUL", OLD_JOB_ROWS)),
        (f"VACUUM ANALYZE {JOB_TABLE_NAME}", ()),
    )
    filled = time.perf_counter() - started
    tests.append(
        _pgbench(binary, "job-cycle-old-rows", "-f", str(scripts / "job-cycle.sql"),
                 seconds=seconds)
    )  # fmt: skip
    (size,) = _admin_sql((f"SELECT pg_total_relation_size('{JOB_TABLE_NAME}')", ()))
    (statuses,) = _admin_sql(
        (f"SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n "  # noqa: S608
         f"FROM {JOB_TABLE_NAME} GROUP BY status) AS counts", ()),
    )  # fmt: skip
    return {
        "pgbench": binary,
        "settings": settings,
        "scale": PGBENCH_SCALE,
        "tests": tests,
        "old_job_rows": OLD_JOB_ROWS,
        "old_job_rows_insert_seconds": filled,
        "job_table_bytes_after": size[0],
        "job_table_rows_after": statuses[0],  # by status: none left RUNNING, none READY lost
    }


# Results ------------------------------------------------------------------------------------


def _medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (kind, shape, size, workers): the median over rounds, min and max."""
    groups: dict[tuple[str, str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["kind"], row["shape"], row["size"], row["workers"]].append(row)
    lines = []
    for (kind, shape, size, workers), group in groups.items():
        done = [r["full"] for r in group if r.get("full", {}).get("status") == "completed"]
        seconds = [f["seconds"] for f in done]
        jobs: Counter[str] = Counter()
        for full in done:
            jobs.update(full.get("job_rows", {}))
        lines.append({
            "kind": kind, "shape": shape, "size": size, "workers": workers,
            "rounds": len(group), "completed": len(done),
            "seconds": statistics.median(seconds) if seconds else None,
            "seconds_min_max": [min(seconds), max(seconds)] if seconds else None,
            "job_rows": {name: n / len(done) for name, n in jobs.items()} if done else {},
            "errors": sorted({r["error"] for r in group if r.get("error")}),
            "statuses": sorted({r.get("full", {}).get("status", "—") for r in group}),
        })  # fmt: skip
    for line in lines:
        line["tasks_per_second"] = line["size"] / line["seconds"] if line["seconds"] else None
        line["ms_per_task"] = line["seconds"] * 1000 / line["size"] if line["seconds"] else None
        base = next(
            (o for o in lines if (o["kind"], o["shape"], o["size"], o["workers"])
             == (line["kind"], line["shape"], line["size"], 1)),
            None,
        )  # fmt: skip
        line["speed_up"] = (
            base["seconds"] / line["seconds"] if base and base["seconds"] and line["seconds"]
            else None
        )  # fmt: skip
    return lines


def _jobs_text(jobs: dict[str, float]) -> str:
    short = {"run_task_attempt": "attempt", "run_pure_wave": "wave"}
    return ", ".join(f"{n:,.0f} {short.get(name, name)}" for name, n in sorted(jobs.items())) or "—"


def markdown(payload: dict[str, Any]) -> str:
    lines = _medians(payload["results"])
    rounds = max((line["rounds"] for line in lines), default=1)
    table = [
        [
            f"`{line['kind']}` ({KIND_NOTES.get(line['kind'], '')})", line["shape"],
            f"{line['size']:,}", line["workers"],
            common.fmt(line["seconds"], 2)
            + (f" ({line['seconds_min_max'][0]:.2f} to {line['seconds_min_max'][1]:.2f})"
               if rounds > 1 and line["seconds_min_max"] else ""),
            common.fmt(line["tasks_per_second"], 0), common.fmt(line["ms_per_task"], 2),
            common.fmt(line["speed_up"], 2) + ("x" if line["speed_up"] else ""),
            _jobs_text(line["job_rows"]),
            "; ".join(line["errors"]) or ", ".join(line["statuses"]),
        ]
        for line in lines
    ]  # fmt: skip
    headers = ["kind", "shape", "tasks", "db_workers", "s", "tasks/s", "ms/task",
               "vs 1 worker", "job rows", "status"]  # fmt: skip
    parts = [
        common.header("Scaling", payload["machine"]),
        common.markdown_table(headers, table),
        "",
        "A full run (`POST /flow-executions` until the flow execution settles, polling every "
        "20 ms) with N `db_worker` processes (`--interval 0.05`), all connected and warmed up "
        "with a 20-task fan-out of the same kind before the clock starts; PostgreSQL as the "
        "application's role, TASKS_BACKEND=database. Job rows: django-tasks-db rows the run "
        "made (its request's and its jobs'), by job: `run_task_attempt` (attempt), "
        "`run_pure_wave` (wave)."
        + (f" Median of {rounds} rounds (min to max)." if rounds > 1 else " One round."),
        "",
        _statements_markdown(payload.get("statements", [])),
        "",
        _postgres_markdown(payload.get("postgres", {})),
    ]
    return "\n".join(parts)


def _statements_markdown(counts: list[dict[str, Any]]) -> str:
    table = []
    for c in counts:
        if "error" in c:
            table.append([f"`{c['kind']}`", c.get("shape", "—"), c["error"]] + ["—"] * 11)
            continue
        queue = c["queue_statements"]
        for name, job in c["by_job"].items():
            table.append([
                f"`{c['kind']}`", c["shape"], f"{c['tasks']} tasks, {job['jobs']} `{name}`",
                common.fmt(c["tasks_per_job"], 1),
                common.fmt(job["engine_statements_per_job"], 1),
                common.fmt(job["engine_transactions_per_job"], 1),
                common.fmt(c["queue_statements_per_job"], 1),
                common.fmt(c["statements_per_job"], 1),
                common.fmt(c["round_trips_per_job"], 1),
                common.fmt(c["statements_per_task"], 2),
                common.fmt(c["round_trips_per_task"], 2),
                common.fmt(job["flow_lock_hold_ms_median"], 2)
                + f" / {common.fmt(job['flow_lock_hold_ms_max'], 2)}",
                common.fmt(job["job_ms_median"], 2),
                f"{job['share_in_postgresql']:.0%}",
            ])  # fmt: skip
        table[-1][2] += (
            f" (queue: {queue['claim_select']} claim SELECT, {queue['claim_update']} claim "
            f"UPDATE, {queue['finish_update']} outcome UPDATE, {queue['enqueue_insert']} "
            f"INSERT, {queue['health_check']} health check)"
        )
    headers = ["kind", "shape", "flow, jobs (queue statements)", "tasks/job",
               "engine statements/job", "engine transactions/job", "queue statements/job",
               "all statements/job", "round trips/job", "statements/task", "round trips/task",
               "flow lock held ms (median / max)", "job ms (median)",
               "of it in PostgreSQL"]  # fmt: skip
    return "\n".join(
        [
            "**SQL per job**, one flow of each kind run with ONE worker in process (the product's "
            "`db_worker` loop in batch mode, `bench/scaling.py: count_statements`), every "
            "statement on its connection recorded. Engine: the job's body (`worker.run_attempt` / "
            "`worker.run_wave`: scoping for row-level security, the claim of the attempt, the "
            "outcome under the flow execution's lock, publishing, planning). Queue: "
            "django-tasks-db's claim (SELECT … FOR UPDATE SKIP LOCKED, UPDATE to RUNNING), its "
            "outcome UPDATE, the INSERT of each job enqueued, Django's connection health check "
            "(a `SELECT 1` per poll, CONN_HEALTH_CHECKS), and the last, empty poll. Round trips "
            "add BEGIN and COMMIT to each transaction of several statements. The request that "
            "starts the flow (POST /flow-executions) is not counted, except the INSERTs of the "
            "jobs it enqueues. Lock held: from the first "
            "statement that locks the flow execution's row to its transaction's COMMIT. Job ms: "
            "from django-tasks-db's task_started to task_finished (the body and the outcome "
            "UPDATE, not the claim), and the share of it spent in statements and commits.",
            "",
            common.markdown_table(headers, table),
        ]
    )


def _postgres_markdown(postgres: dict[str, Any]) -> str:
    if not postgres:
        return ""
    settings = postgres.get("settings", {})
    intro = (
        "**PostgreSQL alone** (this machine, "
        + ", ".join(f"{k} {v}" for k, v in settings.items())
        + "): pgbench, "
        f"{PGBENCH_CLIENTS} clients, 2 threads, on loopback, sharing the 2 cores with "
        "pgbench itself. "
    )
    if "error" in postgres:
        return intro + postgres["error"]
    names = {
        "select-only": "`pgbench -S` (one indexed SELECT)",
        "simple-update": "`pgbench -N` (UPDATE, SELECT, INSERT in a transaction)",
        "hot-row": "one row updated by every client (a flow execution's lock, nothing held)",
        "job-cycle": "django-tasks-db's job cycle: INSERT; BEGIN, claim SELECT … SKIP LOCKED, "
        "UPDATE, COMMIT; outcome UPDATE",
        "job-cycle-old-rows": f"the same with {postgres['old_job_rows']:,} finished job rows "
        "left in the table",
    }
    table = [
        [names.get(t["test"], t["test"]), common.fmt(t.get("tps"), 0),
         COMMITS_PER_RUN.get(t["test"], 1),
         common.fmt(t["tps"] * COMMITS_PER_RUN.get(t["test"], 1), 0) if "tps" in t else "—",
         common.fmt(t.get("latency_ms"), 2), t.get("error", t.get("failed", ""))]
        for t in postgres["tests"]
    ]  # fmt: skip
    return "\n".join(
        [
            intro + f"{postgres['tests'][0]['seconds']} s each.",
            "",
            common.markdown_table(
                [
                    "test",
                    "runs/s (pgbench tps)",
                    "commits/run",
                    "commits/s",
                    "latency ms/run",
                    "failed",
                ],
                table,
            ),
            "",
            "Job table after the last test: "
            + ", ".join(f"{n:,} {status}" for status, n in postgres["job_table_rows_after"].items())
            + " rows, "
            f"{postgres['job_table_bytes_after'] / 2**20:,.0f} MiB with its indexes "
            f"(inserting the old rows took {postgres['old_job_rows_insert_seconds']:.0f} s).",
        ]
    )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = common.pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    lines = _medians(rows)
    sizes = {line["size"] for line in lines}
    series: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        if line["tasks_per_second"]:
            series[line["kind"], line["shape"], line["size"]].append(line)
    for (kind, shape, size), points in sorted(series.items()):
        points.sort(key=lambda p: p["workers"])
        label = f"{kind} ({KIND_NOTES.get(kind, '')}), {shape}"
        if len(sizes) > 1:
            label += f", {size:,} tasks"
        style = "-o" if kind == common.BENCH_EXECUTOR else "--s"
        axis.plot([p["workers"] for p in points], [p["tasks_per_second"] for p in points],
                  style, label=label)  # fmt: skip
    workers = sorted({line["workers"] for line in lines})
    axis.set(title="Full run: tasks per second against db_workers (2 cores)",
             xlabel="db_worker processes", ylabel="tasks / s", yscale="log")  # fmt: skip
    common.plain_log_axes(axis)
    axis.set_xticks(workers)  # after plain_log_axes: worker counts, not a log locator
    axis.grid(True, which="both", alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(spec_path: str, result_path: str) -> None:
    import django

    django.setup()
    spec = json.loads(Path(spec_path).read_text())
    result = count_statements(spec)
    Path(result_path).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    from bench import procs

    procs.install_handlers()
    main(*sys.argv[1:3])
