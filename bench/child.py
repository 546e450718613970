"""One measurement run inside Django: `python -m bench.child SPEC.json RESULT.json`.

Started by bench.common.run_child in a process of its own, with the environment of its mode:

- `embedded`: SQLite file, the in-process tasks backend (the product's default);
- `workers`: PostgreSQL as the application's role, TASKS_BACKEND=database, and real
  `manage.py db_worker` processes started here (`workers`, default two);
- `pg`: PostgreSQL as the application's role, in-process tasks backend (growth, API seeding).

Everything goes through the product's real paths: an organization and key from the
`create_api_key` command, the flow from flows.services (as `load_flow` does), runs and
corrections through the HTTP API (Django's test Client: the full middleware and view stack,
in process, so the request's SQL can be counted).
"""

from __future__ import annotations

import io
import json
import random
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SETTLED = {"completed", "failed"}


class QueryCounter:
    """Counts SQL statements on a connection, cheaply (no SQL text kept, unlike
    CaptureQueriesContext whose log stops at 9,000)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.count = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)

    def __enter__(self) -> QueryCounter:
        self.connection.execute_wrappers.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.execute_wrappers.remove(self)


class Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        from django.db import connection
        from django.test import Client

        from bench import dags
        from bench.common import BENCH_EXECUTOR, BENCH_IMPURE_EXECUTOR
        from bench.executors import TimedPython, TimedTransform
        from flowplatform import rls
        from flowplatform.tenancy.models import Organization
        from flows.definitions import spec_for
        from flows.services import create_flow

        self.spec = spec
        self.mode = spec["mode"]
        # Give up waiting a little before the parent kills this process, to report what it saw.
        timeout = float(spec.get("timeout", 3600))
        self.deadline = time.monotonic() + timeout - min(30.0, timeout / 5)
        self.connection = connection
        self.task_type = spec.get("task_type") or BENCH_EXECUTOR
        self.timer = TimedPython if self.task_type == BENCH_IMPURE_EXECUTOR else TimedTransform
        self.org_slug = f"bench-{uuid.uuid4().hex[:8]}"
        key = self._issue_key()
        self.org = Organization.objects.get(slug=self.org_slug)
        self.client = Client(headers={"authorization": f"Bearer {key}"})
        self.key = key
        self.rls = rls
        self.flows: dict[tuple[str, int], Any] = {}
        self._create_flow = create_flow
        self._spec_for = spec_for
        self._dags = dags

    def _issue_key(self) -> str:
        from django.core.management import call_command

        out = io.StringIO()
        call_command("create_api_key", org=self.org_slug, create_org=True, name="bench", stdout=out)
        return out.getvalue().strip().splitlines()[-1]

    def flow(self, shape: str, size: int) -> Any:
        if (shape, size) not in self.flows:
            definition = json.dumps(
                self._dags.definition(shape, size, self.task_type), separators=(",", ":")
            )
            with self.rls.tenant_scope(self.org):
                self.flows[shape, size] = self._create_flow(
                    self.org, name=f"{shape}-{size}", definition=definition, actor="bench"
                )
        return self.flows[shape, size]

    def target(self, shape: str, size: int) -> tuple[str, int]:
        """The task to correct and how many tasks its correction makes stale."""
        flow = self.flow(shape, size)
        with self.rls.tenant_scope(self.org, read_only=True):
            dag = self._spec_for(flow.current_version).dag
        name = self._dags.correction_target(shape, size, dag.descendants)
        return name, len(dag.descendants(name))

    # HTTP -----------------------------------------------------------------------------------

    def _json(self, response: Any, expected: int) -> Any:
        if response.status_code != expected:
            raise RuntimeError(
                f"{response.request['REQUEST_METHOD']} {response.request['PATH_INFO']}: "
                f"{response.status_code} {response.content[:2000]!r}"
            )
        return response.json()

    def start(self, flow: Any) -> dict[str, Any]:
        body = {"flow_id": str(flow.id), "input": {"v": 1}}
        return self._json(
            self.client.post("/flow-executions", body, content_type="application/json"), 201
        )

    def attempt(self, flow_execution_id: str, task_name: str) -> dict[str, Any]:
        page = self._json(
            self.client.get(
                "/task-executions",
                {"flow_execution_id": flow_execution_id, "task_name": task_name,
                 "ordering": "-task_execution_idx", "limit": 1},
            ),
            200,
        )  # fmt: skip
        return page["results"][0]

    def correct(self, attempt: dict[str, Any], value: int, *, execute_flow: bool) -> Any:
        body = {
            key: attempt[key]
            for key in ("id", "flow_execution_id", "organization_id", "task_name",
                        "task_execution_idx")
        }  # fmt: skip
        body.update(status="completed", output={"v": value})
        query = "true" if execute_flow else "false"
        return self.client.put(
            f"/task-executions/{attempt['id']}?execute_flow={query}",
            body,
            content_type="application/json",
        )

    # Waiting for workers ----------------------------------------------------------------------

    def wait_settled(self, flow_execution_id: str) -> str:
        """Poll until nothing of the flow execution is queued or running (workers mode; in
        process it has settled when the request answers)."""
        from executions.models import FlowExecution, TaskExecution

        poll = float(self.spec.get("poll_seconds", 0.02))
        while True:
            with self.rls.tenant_scope(self.org, read_only=True):
                status = (
                    FlowExecution.objects.filter(pk=flow_execution_id)
                    .values_list("status", flat=True)
                    .first()
                )
                busy = TaskExecution.objects.filter(
                    flow_execution_id=flow_execution_id, status__in=["queued", "running"]
                ).exists()
            if status in SETTLED and not busy:
                return status
            if time.monotonic() > self.deadline:
                return f"timed out ({status})"
            time.sleep(poll)

    # Measurements -----------------------------------------------------------------------------

    def job_rows(self) -> dict[str, int]:
        """django-tasks-db's job rows by job (the last part of its task path)."""
        from django.db.models import Count
        from django_tasks_db.models import DBTaskResult

        rows = DBTaskResult.objects.values_list("task_path").annotate(rows=Count("id"))
        return {path.rpartition(".")[2]: count for path, count in rows}

    def full_run(self, shape: str, size: int) -> dict[str, Any]:
        flow = self.flow(shape, size)
        executor_before = self.timer.seconds
        jobs_before = self.job_rows() if self.mode == "workers" else {}
        started = time.perf_counter()
        with QueryCounter(self.connection) as queries:
            flow_execution = self.start(flow)
        status = flow_execution["status"]
        if self.mode == "workers":
            status = self.wait_settled(flow_execution["id"])
        seconds = time.perf_counter() - started
        result = {
            "flow_execution_id": flow_execution["id"],
            "status": status,
            "seconds": seconds,
            "ms_per_task": seconds * 1000 / size,
            "queries_in_process": queries.count,
        }
        if self.mode == "workers":  # the jobs the run enqueued (its request's and its workers')
            jobs = self.job_rows()
            result["job_rows"] = {
                name: count - jobs_before.get(name, 0)
                for name, count in jobs.items()
                if count > jobs_before.get(name, 0)
            }
        else:
            executor = self.timer.seconds - executor_before
            result.update(
                executor_seconds=executor,
                overhead_ms_per_task=(seconds - executor) * 1000 / size,
                queries_per_task=queries.count / size,
            )
        return result

    def rerun(self, flow_execution_id: str, task: str, value: int) -> dict[str, Any]:
        """(c) A correction with execute_flow=true: until every stale task has run again."""
        from executions.models import TaskExecution

        attempt = self.attempt(flow_execution_id, task)
        executor_before = self.timer.seconds
        started = time.perf_counter()
        with QueryCounter(self.connection) as queries:
            answer = self._json(self.correct(attempt, value, execute_flow=True), 200)
        status = answer.get("status")
        if self.mode == "workers":
            status = self.wait_settled(flow_execution_id)
        seconds = time.perf_counter() - started
        with self.rls.tenant_scope(self.org, read_only=True):
            started_attempts = TaskExecution.objects.filter(
                started_by_correction_id=answer["correction_id"]
            )
            reused = started_attempts.filter(reused_from__isnull=False).count()
            total = started_attempts.count()
            fe_status = (
                TaskExecution.objects.filter(pk=attempt["id"])
                .values_list("flow_execution__status", flat=True)
                .first()
            )
        rerun = total - reused
        result = {
            "stale_tasks": len(answer["stale_tasks"]),
            "tasks_rerun": rerun,
            "tasks_reused": reused,
            "seconds": seconds,
            "ms_per_task": seconds * 1000 / rerun if rerun else None,
            "status": fe_status if self.mode != "workers" else status,
            "queries_in_process": queries.count,
        }
        if self.mode != "workers":
            executor = self.timer.seconds - executor_before
            result["overhead_ms_per_task"] = (seconds - executor) * 1000 / rerun if rerun else None
        return result

    def mark_stale(self, flow_execution_id: str, task: str, value: int) -> dict[str, Any]:
        """(b) A correction with execute_flow=false: one request, its wall time and SQL."""
        from django.test.utils import CaptureQueriesContext

        attempt = self.attempt(flow_execution_id, task)
        started = time.perf_counter()
        with CaptureQueriesContext(self.connection) as captured:
            response = self.correct(attempt, value, execute_flow=False)
        seconds = time.perf_counter() - started
        answer = self._json(response, 200)
        stale = len(answer["stale_tasks"])
        return {
            "stale_tasks": stale,
            "ms": seconds * 1000,
            "queries": len(captured.captured_queries),
            "us_per_stale_task": seconds * 1e6 / stale if stale else None,
        }


def start_workers(count: int, label: str) -> list[Any]:
    """`count` db_workers, each connecting as application_name bench-worker-N (libpq's
    PGAPPNAME), which wait_for_workers looks for."""
    import os

    from bench import procs
    from bench.common import PYTHON, WORK

    return [
        procs.spawn(
            [PYTHON, "manage.py", "db_worker", "--no-reload", "--no-startup-delay",
             "--interval", "0.05", "--worker-id", f"bench-{n}"],
            env={**os.environ, "PGAPPNAME": f"bench-worker-{n}"},
            log=WORK / "logs" / f"{label}.worker-{n}.log",
            own_group=False,
        )
        for n in range(1, count + 1)
    ]  # fmt: skip


def wait_for_workers(workers: list[Any], deadline: float) -> None:
    """Until every worker has connected to the database (a worker takes a second or two to
    start Django), so that a run with more workers does not pay for their start-up."""
    from django.db import connection

    names = {f"bench-worker-{n}" for n in range(1, len(workers) + 1)}
    while time.monotonic() < deadline:
        if any(worker.poll() is not None for worker in workers):
            raise RuntimeError("a db_worker exited at start; see its log in var/bench/logs")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity "
                "WHERE datname = current_database()"
            )
            if names <= {name for (name,) in cursor.fetchall()}:
                return
        time.sleep(0.1)
    raise RuntimeError("the db_workers did not connect before the deadline")


@contextmanager
def profiled(path: str | None) -> Any:
    if not path:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler()
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(profiler.output_html())


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Propagation and growth: full run, then (c) if asked, then (b) — so (b) finds every task
    fresh, as after a full run."""
    run = Run(spec)
    shape, size, steps = spec["shape"], spec["size"], spec["steps"]
    task, stale = run.target(shape, size)
    result: dict[str, Any] = {"corrected_task": task, "expected_stale": stale}
    workers = []
    if run.mode == "workers":
        workers = start_workers(int(spec.get("workers", 2)), spec["label"])
    try:
        if workers:  # every worker up and warm before the clock starts
            wait_for_workers(workers, run.deadline)
            warm = run.start(run.flow("fanout", 20))
            result["warm_up"] = run.wait_settled(warm["id"])
        with profiled(spec.get("profile")):
            full = run.full_run(shape, size)
            result["full"] = full
            if full["status"] != "completed":
                result["error"] = f"full run: {full['status']}"
                return result
            if "rerun" in steps:
                rerun = result["rerun"] = run.rerun(full["flow_execution_id"], task, 1_000_001)
                if rerun["status"] != "completed":
                    result["error"] = f"re-execution: {rerun['status']}"
                    return result
            if "stale" in steps:
                result["stale"] = run.mark_stale(full["flow_execution_id"], task, 2_000_002)
    finally:
        from bench import procs

        for worker in workers:
            procs.stop(worker)
    return result


def seed_api(spec: dict[str, Any]) -> dict[str, Any]:
    """The API benchmark's data: `executions` runs of a small layered flow; the attempts to
    read, and the middle-layer attempts (each with a few dependents) to correct."""
    from executions.models import TaskExecution

    run = Run(spec)
    size = int(spec.get("size", 30))
    flow = run.flow("layered", size)
    ids = [run.start(flow)["id"] for _ in range(int(spec["executions"]))]
    with run.rls.tenant_scope(run.org, read_only=True):
        attempts = list(
            TaskExecution.objects.filter(flow_execution_id__in=ids).values(
                "id", "flow_execution_id", "organization_id", "task_name", "task_execution_idx"
            )
        )
    middle = {f"t{i}" for i in range(size // 2 // 10 * 10, size // 2 // 10 * 10 + 10)}
    attempts = [{k: str(v) if k != "task_execution_idx" else v for k, v in a.items()}
                for a in attempts]  # fmt: skip
    random.Random(7).shuffle(attempts)
    return {
        "key": run.key,
        "organization_id": str(run.org.pk),
        "flow_execution_ids": ids,
        "task_execution_ids": [a["id"] for a in attempts],
        "corrections": [a for a in attempts if a["task_name"] in middle],
        "task_executions": len(attempts),
    }


def main(spec_path: str, result_path: str) -> None:
    import django

    django.setup()
    spec = json.loads(Path(spec_path).read_text())
    result = seed_api(spec) if spec.get("kind") == "api-seed" else measure(spec)
    Path(result_path).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    from bench import procs

    procs.install_handlers()
    main(*sys.argv[1:3])
