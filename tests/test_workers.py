"""Scale-out: real `manage.py db_worker` processes (django-tasks-db) sharing PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from executions.models import FlowExecution, TaskExecution
from executions.services import start_flow_execution
from flows.services import create_flow
from tests.conftest import app_database_url

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
LEAVES = 200


def start_worker(worker_id: str, log_dir: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": app_database_url(),  # row-level security binds the workers
        "TASKS_BACKEND": "database",
        "FLOWPLATFORM_PYTHON_CALLABLES": "examples,tests.worker_tasks",
        "LOG_LEVEL": "warning",
    }
    command = [
        sys.executable, "manage.py", "db_worker", "--no-reload", "--no-startup-delay",
        "--interval", "0.05", "--worker-id", worker_id,
    ]  # fmt: skip
    output = (log_dir / f"{worker_id}.log").open("w")
    return subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
        command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
    )


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def wait_until_settled(flow_execution_id: Any, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = FlowExecution.objects.get(pk=flow_execution_id).status
        if status in {"completed", "failed"}:
            return status
        time.sleep(0.2)
    return "timed out"


def test_two_db_workers_run_a_200_task_fan_out_exactly_once(tenant, settings, tmp_path):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.worker_tasks"]
    record = {"callable": "tests.worker_tasks:record"}
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
