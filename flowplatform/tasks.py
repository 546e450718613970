"""The embedded tasks backend: jobs run in the process that enqueues them, one after another.

Django's ImmediateBackend runs a job inside `enqueue`, so a job that enqueues the next one
recurses: a 1,000-task chain would nest 1,000 calls deep. Here a job enqueued while another
runs waits in a per-thread queue that the outermost `enqueue` drains, so the depth stays one.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from django.tasks.backends.immediate import ImmediateBackend
from django.tasks.base import Task, TaskResult, TaskResultStatus
from django.utils.crypto import get_random_string


class InlineQueueBackend(ImmediateBackend):
    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._local = threading.local()

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        task_result = TaskResult(
            task=task,
            id=get_random_string(32),
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        pending: deque[TaskResult] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append(task_result)
            return task_result
        self._local.pending = pending = deque([task_result])
        try:
            while pending:
                self._execute_task(pending.popleft())
                self._local.executed = self.executed() + 1
        finally:
            self._local.pending = None
        return task_result

    def executed(self) -> int:
        """How many jobs this thread has run so far."""
        return getattr(self._local, "executed", 0)


def jobs_run_here() -> int:
    """Jobs the embedded backend has run in this thread (0 with any other backend)."""
    from django.tasks import task_backends

    backend = task_backends["default"]
    return backend.executed() if isinstance(backend, InlineQueueBackend) else 0
