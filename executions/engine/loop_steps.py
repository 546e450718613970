"""What follows an iteration of a looped task (engine.iterating): a for_each's output once no
iteration is live, the next iteration of one with max_parallel, an until loop's rounds after a
corrected one, and retiring iterations (their item left the list, or their loop ended)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from executions import iterations, transitions
from executions.engine.iterating import Past, current_by_iteration, loop_output
from executions.models import FlowExecution, StaleReason, TaskExecution
from flows.definitions import FlowSpec, TaskSpec

Status = TaskExecution.Status


# A for_each settles once no iteration is live ---------------------------------------------------


def settle_for_each(task: TaskSpec, history: list[Past]) -> tuple[Any, dict] | None:
    """The for_each's output and summary once every current iteration has a result (a failure
    counts only when the task tolerates failures); None while one must still run or one
    failed for good."""
    members = iterations.current(history)
    if not members or any(m.iteration is None for m in members):
        return None
    for member in members:
        if member.status == Status.FAILED and task.tolerate_failures:
            continue
        if member.status != Status.COMPLETED:
            return None
    return loop_output(task, members)


def any_live(flow_execution: FlowExecution, task: str) -> bool:
    return TaskExecution.objects.filter(
        flow_execution=flow_execution, task_name=task, status__in=transitions.LIVE
    ).exists()


# max_parallel ---------------------------------------------------------------------------------


def window(spec: FlowSpec, queued: list[TaskExecution]) -> list[TaskExecution]:
    """Of a planning pass's queued attempts, those whose jobs are enqueued now: all, except
    that a for_each with max_parallel has its lowest-numbered `max_parallel` iterations
    started; `top_up` starts the next as each one finishes."""
    started, held = [], {}
    for attempt in queued:
        limit = spec.tasks[attempt.task_name].max_parallel
        if limit is None or attempt.iteration is None:
            started.append(attempt)
        else:
            held.setdefault(attempt.task_name, []).append(attempt)
    for name, attempts in held.items():
        attempts.sort(key=lambda a: a.iteration)
        started += attempts[: spec.tasks[name].max_parallel]
    return started


def top_up(flow_execution: FlowExecution, spec: FlowSpec, task: str) -> list[uuid.UUID]:
    """An iteration of a for_each with max_parallel finished (and got no retry): the queued
    iteration whose job starts now, if any. Jobs start in iteration order, so the queued
    iterations already started are the lowest-numbered ones: as many as the window holds
    beyond the running iterations. Two queries."""
    limit = spec.tasks[task].max_parallel
    if limit is None:
        return []
    rows = TaskExecution.objects.filter(flow_execution=flow_execution, task_name=task)
    running = rows.filter(status=Status.RUNNING).count()
    position = limit - 1 - running
    if position < 0:
        return []
    queued = rows.filter(status=Status.QUEUED).order_by("iteration", "task_execution_idx")
    return list(queued.values_list("id", flat=True)[position : position + 1])


# Correcting one iteration -----------------------------------------------------------------------


def later_iterations(history: list[Past], iteration: int) -> list[Past]:
    """An until loop's current iterations after `iteration` (a correction outdates them)."""
    return [
        a
        for i, a in current_by_iteration(history).items()
        if i > iteration and not iterations.retired(a)
    ]


def retire(attempt_ids: list[uuid.UUID], *, now: datetime) -> int:
    """Retire iterations (their item left the list, or their loop ended before them): stale
    for `iteration_removed`, counted for nothing. Set-based."""
    return transitions.retire(
        attempt_ids,
        stale_reason=StaleReason.ITERATION_REMOVED,
        stale_correction_id=None,
        stale_upstream_task="",
        stale_upstream_iteration=None,
        stale_at=now,
        stale_by="system",
        modified_by="system",
        updated_at=now,
    )
