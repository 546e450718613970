"""Running an attempt's executor: what the worker (a job per attempt) and the waves (pure tasks
in the scheduling loop) share. No database access."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from typing import Any

from executions import leases
from executions.executors import ExecutorResult, TaskFailed, get_executor
from executions.models import TaskExecution
from flowplatform import metrics
from flows.definitions import FlowSpec

logger = logging.getLogger("flowplatform.engine")


def failure(error_type: str, message: str) -> dict[str, str]:
    """An attempt's `error`: the type, and a message the database can store."""
    return {"type": error_type, "message": message.replace("\x00", "\\0")[:10_000]}


def execute(
    spec: FlowSpec | Exception, attempt: TaskExecution, *, hold: Any = None
) -> tuple[ExecutorResult | None, dict | None]:
    """Run the attempt's executor on its input: (the result, None) or (None, the failure).
    `spec`: the flow's, or the error reading it raised (recorded as the failure). `hold`: a
    context to run the executor in (the lease's heartbeat)."""
    try:
        if isinstance(spec, Exception):
            raise spec
        task = spec.tasks[attempt.task_name]
        executor = get_executor(task.type)
        with hold or nullcontext(), metrics.timed_task(task.type):
            ran = executor.run(attempt.input, task.config)
        output = json.loads(json.dumps(ran.output))
        summary = ran.summary
        if summary is None:
            summary = executor.summarize(output, task.config)
        return ExecutorResult(output, summary), None
    except TaskFailed as exc:
        return None, failure(exc.error_type, str(exc))
    except leases.WorkerStopped as exc:  # the worker is stopping: another one retries it
        return None, failure("WorkerStopped", str(exc))
    except Exception as exc:
        if not isinstance(exc, TypeError | ValueError):
            logger.exception("task %s attempt %s raised", attempt.task_name, attempt.pk)
        return None, failure(type(exc).__name__, str(exc))
