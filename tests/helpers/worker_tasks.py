"""Callables for tests that run real worker processes (tests/test_workers.py names them by
dotted path; the db_worker subprocesses import this module): each appends the task's name to a
log file, so the test can count how often each task really executed, across processes."""

from __future__ import annotations

import os
from typing import Any


def record(input: dict[str, Any]) -> dict[str, Any]:
    line = f"{input['task']}\n".encode()
    fd = os.open(input["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write: lines from several processes never interleave
    finally:
        os.close(fd)
    return {"task": input["task"], "pid": os.getpid()}


def slow(input: dict[str, Any]) -> dict[str, Any]:
    """Log `start <task>`, sleep `seconds`, log `done <task>`: a task a worker can die in."""
    import time

    record({"task": f"start:{input['task']}", "log": input["log"]})
    time.sleep(float(input.get("seconds", 1)))
    record({"task": f"done:{input['task']}", "log": input["log"]})
    return {"task": input["task"], "pid": os.getpid()}
