"""Scale-out: real `manage.py db_worker` processes (django-tasks-db) sharing PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from executions.models import FlowExecution, TaskExecution
from executions.services import start_flow_execution
from flows.services import create_flow
from tests.helpers.database import app_database_url, database_address
from tests.helpers.proxy import DatabaseProxy, through_proxy
from tests.helpers.workers import start_worker, stop, wait_for, wait_until_settled

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

LEAVES = 200


def test_two_db_workers_run_a_200_task_fan_out_exactly_once(tenant, settings, tmp_path):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.worker_tasks"]
    record = {"callable": "tests.helpers.worker_tasks:record"}
    leaves = [f"leaf{i}" for i in range(LEAVES)]
    definition = {
        "tasks": [
            {"name": "root", "type": "python", "config": record,
             "input": {"task": "root", "log": "${{ flow.input.log }}"}},
            *[{"name": leaf, "type": "python", "config": record, "depends_on": ["root"],
               "input": {"task": leaf, "log": "${{ flow.input.log }}"}} for leaf in leaves],
            {"name": "join", "type": "python", "config": record, "depends_on": leaves,
             "input": {"task": "join", "log": "${{ flow.input.log }}"}},
        ]
    }  # fmt: skip
    flow = create_flow(tenant.org, name="fan-out", definition=json.dumps(definition), actor="t")
    log = tmp_path / "executions.log"
    workers = [start_worker(f"worker-{n}", tmp_path) for n in (1, 2)]
    try:
        flow_execution = start_flow_execution(
            tenant.org, flow_id=flow.id, input={"log": str(log)}, actor="t"
        )
        status = wait_until_settled(flow_execution.pk)
    finally:
        stop(workers)
    worker_logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("worker-*.log")}
    assert status == "completed", worker_logs

    executed = Counter(log.read_text().split())
    assert executed == Counter({"root": 1, "join": 1, **dict.fromkeys(leaves, 1)})
    attempts = TaskExecution.objects.filter(flow_execution=flow_execution)
    assert attempts.count() == LEAVES + 2
    assert set(attempts.values_list("task_execution_idx", "status")) == {(0, "completed")}
    pids = {attempt.output["pid"] for attempt in attempts}
    assert len(pids) == 2, "both worker processes took part"
    assert all(worker.returncode is not None for worker in workers)


# Worker faults. A short lease so a lost worker is noticed in seconds; workers reap twice a
# second. Tasks sleep in `tests.helpers.worker_tasks:slow`, logging when they start and finish.
FAST_LEASES = {"FLOWPLATFORM_LEASE_SECONDS": "2", "FLOWPLATFORM_REAP_INTERVAL_SECONDS": "0.5"}


@pytest.fixture
def queue(settings: Any) -> None:
    """This process enqueues jobs for the worker processes; they may run tests' callables."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.worker_tasks"]


def slow_task(name: str, log: Path, seconds: float, **fields: Any) -> dict[str, Any]:
    slow = {"callable": "tests.helpers.worker_tasks:slow"}
    return {"name": name, "type": "python", "config": slow,
            "input": {"task": name, "log": str(log), "seconds": seconds}, **fields}  # fmt: skip


def start_flow(tenant: Any, tasks: list[dict[str, Any]], name: str = "faults") -> Any:
    flow = create_flow(tenant.org, name=name, definition=json.dumps({"tasks": tasks}), actor="t")
    return start_flow_execution(tenant.org, flow_id=flow.id, actor="t")


def running_on(worker: subprocess.Popen, prefix: str = "") -> TaskExecution | None:
    return TaskExecution.objects.filter(
        status="running", lease_owner__endswith=f":{worker.pid}", task_name__startswith=prefix
    ).first()


def test_a_worker_killed_mid_task_is_reaped_and_its_task_retried_elsewhere(tenant, queue, tmp_path):
    from django_tasks_db.models import DBTaskResult

    from executions.selectors import freshness_violations

    log = tmp_path / "executions.log"
    leaves = [f"leaf{i}" for i in range(6)]
    tasks = [
        slow_task("root", log, 0),
        # leaf0 outlives a whole lease: its worker's heartbeat must keep it from the reaper.
        *[slow_task(leaf, log, 3 if leaf == "leaf0" else 1, depends_on=["root"], retries=1)
          for leaf in leaves],
        slow_task("join", log, 0, depends_on=leaves),
    ]  # fmt: skip
    doomed = start_worker("doomed", tmp_path, **FAST_LEASES)
    survivor = start_worker("survivor", tmp_path, **FAST_LEASES)
    try:
        flow_execution = start_flow(tenant, tasks)
        # A leaf (a second or more): killed well inside its executor, not as it records.
        victim = wait_for(lambda: running_on(doomed, "leaf"))
        doomed.kill()  # SIGKILL: no chance to clean up
        doomed.wait()
        status = wait_until_settled(flow_execution.pk, timeout=90)
    finally:
        stop([doomed, survivor])
    worker_logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    assert status == "completed", worker_logs

    lost = TaskExecution.objects.get(pk=victim.pk)
    assert lost.status == "failed"
    assert lost.error["type"] == "WorkerLost"
    assert f":{doomed.pid}" in lost.error["message"]
    attempts = TaskExecution.objects.filter(flow_execution=flow_execution)
    assert set(attempts.filter(task_name=victim.task_name).values_list(
        "task_execution_idx", "status")) == {(0, "failed"), (1, "completed")}  # fmt: skip
    others = attempts.exclude(task_name=victim.task_name)
    assert set(others.values_list("task_execution_idx", "status")) == {(0, "completed")}
    # Every task's work is counted: each finished exactly once; only the victim started twice.
    runs = Counter(log.read_text().split())
    everything = ["root", *leaves, "join"]
    assert {task: runs[f"done:{task}"] for task in everything} == dict.fromkeys(everything, 1)
    assert runs[f"start:{victim.task_name}"] == 2
    assert freshness_violations(FlowExecution.objects.get(pk=flow_execution.pk)) == []
    # The dead worker's job is failed in the queue too, not left RUNNING forever.
    assert not DBTaskResult.objects.filter(status="RUNNING").exists()
    assert (
        DBTaskResult.objects.filter(
            status="FAILED", exception_class_path="executions.leases.WorkerLost"
        ).count()
        == 1
    )


def test_sigterm_lets_the_current_task_finish_then_the_worker_exits_cleanly(
    tenant, queue, tmp_path
):
    log = tmp_path / "executions.log"
    worker = start_worker("graceful", tmp_path, **FAST_LEASES)
    try:
        flow_execution = start_flow(
            tenant, [slow_task("a", log, 1.5), slow_task("b", log, 0, depends_on=["a"])]
        )
        wait_for(lambda: running_on(worker))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        a = TaskExecution.objects.get(flow_execution=flow_execution, task_name="a")
        assert (a.task_execution_idx, a.status, a.output["pid"]) == (0, "completed", worker.pid)
        # It took no new task after the signal: b waits, queued, for another worker.
        assert TaskExecution.objects.get(flow_execution=flow_execution, task_name="b").status \
            == "queued"  # fmt: skip
        successor = start_worker("successor", tmp_path, **FAST_LEASES)
        status = wait_until_settled(flow_execution.pk)
    finally:
        stop([worker, *([successor] if "successor" in locals() else [])])
    assert status == "completed"
    assert Counter(log.read_text().split()) == Counter({"start:a": 1, "done:a": 1,
                                                        "start:b": 1, "done:b": 1})  # fmt: skip


def test_sigterm_stops_a_task_that_outlasts_the_shutdown_timeout_and_queues_its_retry(
    tenant, queue, tmp_path
):
    log = tmp_path / "executions.log"
    worker = start_worker("impatient", tmp_path, "--shutdown-timeout", "0.5", **FAST_LEASES)
    try:
        flow_execution = start_flow(tenant, [slow_task("a", log, 60, retries=1)])
        wait_for(lambda: running_on(worker))
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert time.monotonic() - started < 20  # it did not sit out the 60 s task
    finally:
        stop([worker])
    stopped, retry = TaskExecution.objects.filter(flow_execution=flow_execution).order_by(
        "task_execution_idx"
    )
    assert stopped.status == "failed"
    assert stopped.error["type"] == "WorkerStopped"
    assert "did not finish within 0.5s" in stopped.error["message"]
    assert (retry.task_execution_idx, retry.status) == (1, "queued")  # for the next worker
    assert FlowExecution.objects.get(pk=flow_execution.pk).status == "running"  # not stuck


def test_a_worker_outlives_a_database_outage_and_carries_on(tenant, queue, tmp_path):
    log = tmp_path / "executions.log"
    proxy = DatabaseProxy(database_address())  # wherever the configured database listens
    worker = start_worker(
        "steadfast", tmp_path, DATABASE_URL=through_proxy(app_database_url(), proxy.port)
    )
    try:
        first = start_flow(tenant, [slow_task("a", log, 0)])
        assert wait_until_settled(first.pk, timeout=60) == "completed"
        proxy.cut()  # PostgreSQL goes away under the idle worker ...
        time.sleep(1.5)  # ... long enough for it to notice (it polls every 0.05 s)
        assert worker.poll() is None, "the worker exited during the outage"
        second = start_flow(tenant, [slow_task("b", log, 0)], name="after the outage")
        proxy.restore()  # ... and comes back: the same process picks up the new work
        assert wait_until_settled(second.pk, timeout=60) == "completed"
        assert worker.poll() is None
    finally:
        stop([worker])
        proxy.stop()
    assert "database unavailable" in (tmp_path / "steadfast.log").read_text()
    assert Counter(log.read_text().split()) == Counter(
        {"start:a": 1, "done:a": 1, "start:b": 1, "done:b": 1}
    )


def test_two_db_workers_share_a_for_each_within_its_max_parallel(tenant, settings, tmp_path):
    """A python for_each of 8 items, max_parallel 1, on two db_workers: every iteration runs
    exactly once and never two at a time; its output is the list in item order."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.worker_tasks"]
    log = tmp_path / "executions.log"
    slow = {"callable": "tests.helpers.worker_tasks:slow"}
    item = {"task": "item${{ loop.item }}", "seconds": 0.2, "log": "${{ flow.input.log }}"}
    definition = {
        "tasks": [
            {"name": "each", "type": "python", "config": slow, "for_each": list(range(8)),
             "max_parallel": 1, "input": item},
        ]
    }  # fmt: skip
    flow = create_flow(tenant.org, name="loop", definition=json.dumps(definition), actor="t")
    workers = [start_worker(f"worker-{n}", tmp_path) for n in (1, 2)]
    try:
        flow_execution = start_flow_execution(
            tenant.org, flow_id=flow.id, input={"log": str(log)}, actor="t"
        )
        status = wait_until_settled(flow_execution.pk)
    finally:
        stop(workers)
    assert status == "completed", {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    events = log.read_text().split()
    assert Counter(e for e in events if e.startswith("start:")) == {
        f"start:item{i}": 1 for i in range(8)
    }
    running = peak = 0
    for event in events:
        running += 1 if event.startswith("start:") else -1
        peak = max(peak, running)
    assert peak == 1
    output = flow_execution.task_outputs.get(task_name="each").output
    assert [o["task"] for o in output] == [f"item{i}" for i in range(8)]
