"""Real `manage.py db_worker` processes for tests (PostgreSQL): start, stop, wait for a flow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from executions.models import FlowExecution
from tests.helpers.database import app_database_url

ROOT = Path(__file__).resolve().parent.parent.parent


def start_worker(worker_id: str, log_dir: Path, *extra: str, **env_extra: str) -> subprocess.Popen:
    """A db_worker logged in as the application's role; its output in LOG_DIR/WORKER_ID.log."""
    env = {
        **os.environ,
        "DATABASE_URL": app_database_url(),  # row-level security binds the workers
        "TASKS_BACKEND": "database",
        "FLOWPLATFORM_PYTHON_CALLABLES": "examples,tests.helpers.worker_tasks",
        "LOG_LEVEL": "warning",
        **env_extra,
    }
    command = [
        sys.executable, "manage.py", "db_worker", "--no-reload", "--no-startup-delay",
        "--interval", "0.05", "--worker-id", worker_id, *extra,
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


def wait_for(predicate: Any, timeout: float = 60) -> Any:
    """Poll `predicate` until it gives something truthy (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")
