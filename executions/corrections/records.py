"""Correction rows: who changed which task's result, when, why, before and after, and what it
made stale. Written in the same transaction as the change; the only code that creates them."""

from __future__ import annotations

import uuid
from typing import Any

from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform import logcontext
from flowplatform.webhooks import events
from outputs.models import TaskOutput


def attempt_state(attempt: TaskExecution, summary: dict | None = None) -> dict[str, Any]:
    """An attempt as a correction records it (before and after); with the flow execution's
    `task_outputs_summary`, also the task's entry in it."""
    state = {name: getattr(attempt, name) for name in ("status", "output", "error")}
    if summary is not None:
        state["summary"] = summary.get("tasks", {}).get(attempt.task_name)
    return state


def output_state(task_output: TaskOutput | None) -> dict[str, Any] | None:
    """A task output as a correction records it (before and after)."""
    if task_output is None:
        return None
    return {
        "task_output_id": str(task_output.pk),
        "status": task_output.status,
        "output": task_output.output,
        "summary": task_output.summary,
        "tags": task_output.tags,
    }


def history_reason(reason: str | None, source: str) -> str:
    """What the history row of a corrected record says (its "change reason", at most 100
    characters): the person's reason, else where the correction was made."""
    text = (reason or "").strip() or f"correction ({source})"
    return text if len(text) <= 100 else f"{text[:99]}…"


def open_correction(
    flow_execution: FlowExecution,
    *,
    task_name: str,
    task_execution_id: uuid.UUID | None,
    task_output: TaskOutput | None,
    operation: str,
    source: str,
    actor: str,
    reason: str | None,
    before: Any,
    execute_flow: bool = False,
    iteration: int | None = None,
) -> Correction:
    """The record of a correction being made: what it starts from. Its stale causes and
    started attempts point at it, so it exists before they are written. The rest of the
    request, command or job logs its id (flowplatform.logcontext)."""
    correction = Correction.objects.create(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=task_name,
        iteration=iteration,
        task_execution_id=task_execution_id,
        task_output=task_output,
        source=source,
        operation=operation,
        modified_by=actor,
        reason=reason or "",
        before=before,
        execute_flow=execute_flow,
    )
    logcontext.bind(correction_id=correction.pk)
    return correction


def close_correction(
    correction: Correction,
    *,
    after: Any,
    stale_tasks: list[str],
    task_output: TaskOutput | None,
    stale_iterations: dict[str, list[int]] | None = None,
) -> Correction:
    """What the correction ended with: the state after, the tasks it made stale (dependency
    order) and the task output it published, edited or deleted. Its webhook events go out
    once the transaction commits (flowplatform.webhooks.events)."""
    correction.after = after
    correction.stale_tasks = stale_tasks
    correction.stale_iterations = stale_iterations or {}
    correction.task_output = task_output
    correction.save(update_fields=["task_output", "after", "stale_tasks", "stale_iterations"])
    events.correction_recorded(correction)
    return correction


def discard_correction(correction: Correction) -> None:
    """A change that turned out not to be a correction (a task's first output that outdated
    nothing) leaves no record."""
    correction.delete()
