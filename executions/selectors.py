"""Reads that are more than a filter: each task's latest attempt, current outputs, resolved
inputs, and the freshness invariant. No writes, no locks."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from executions.models import FlowExecution, TaskExecution
from executions.transitions import LIVE
from flowplatform.canonical import same_json
from flows.definitions import FlowSpec, spec_for
from flows.expressions import ExpressionError, resolve
from outputs.models import TaskOutput

Status = TaskExecution.Status


@dataclass(frozen=True)
class Attempt:
    """The latest attempt of a task, as the engine needs it."""

    id: uuid.UUID
    task_name: str
    idx: int
    status: str
    stale_reason: str | None = None
    stale_upstream_task: str | None = None
    updated_at: datetime | None = None


_ATTEMPT_COLUMNS = (
    "id",
    "task_name",
    "task_execution_idx",
    "status",
    "stale_reason",
    "stale_upstream_task",
    "updated_at",
)


def latest_attempts(
    flow_execution: FlowExecution | uuid.UUID, names: Iterable[str] | None = None
) -> dict[str, Attempt]:
    """Each task's latest attempt: its attempt with the highest idx (whatever its status; a
    task without attempts is absent). One query. The one definition of "a task's latest
    attempt" (`_by_idx`); `has_latest_completed` is the same rule in SQL."""
    last = {row[1]: row for row in _by_idx(flow_execution, names, _ATTEMPT_COLUMNS)}
    return {name: Attempt(*row) for name, row in last.items()}


def latest_statuses(flow_execution: FlowExecution, names: Iterable[str]) -> dict[str, str]:
    """Each named task's latest attempt's status (what the pure status decisions take): its
    callers name every task of the spec, so the names are kept here rather than sent as a
    10,000-element parameter. One query of two columns."""
    wanted = set(names)
    rows = _by_idx(flow_execution, None, ("task_name", "status"))
    return {name: status for name, status in rows if name in wanted}


def _by_idx(
    flow_execution: FlowExecution | uuid.UUID, names: Iterable[str] | None, columns: Iterable[str]
) -> QuerySet:
    """`columns` of the attempts of `names` (every task: None), each task's in idx order: the
    last row of a task is its latest attempt."""
    rows = TaskExecution.objects.filter(flow_execution=flow_execution)
    if names is not None:
        rows = rows.filter(task_name__any_of=list(names))
    return rows.order_by("task_name", "task_execution_idx").values_list(*columns)


def latest_attempt(flow_execution: FlowExecution | uuid.UUID, task_name: str) -> Attempt | None:
    return latest_attempts(flow_execution, [task_name]).get(task_name)


def live_attempts(flow_execution: FlowExecution) -> QuerySet[TaskExecution]:
    """Its queued and running attempts (each is its task's latest; indexed)."""
    return TaskExecution.objects.filter(flow_execution=flow_execution, status__in=LIVE)


def has_latest_completed(flow_execution: FlowExecution) -> bool:
    """Is some task's latest attempt completed? One indexed query."""
    newer = TaskExecution.objects.filter(
        flow_execution=OuterRef("flow_execution"),
        task_name=OuterRef("task_name"),
        task_execution_idx__gt=OuterRef("task_execution_idx"),
    )
    return (
        TaskExecution.objects.filter(flow_execution=flow_execution, status=Status.COMPLETED)
        .exclude(Exists(newer))
        .exists()
    )


def is_settled(flow_execution: FlowExecution) -> bool:
    """Nothing is queued or running (a human task waiting for a person counts as running)."""
    return not live_attempts(flow_execution).exists()


def current_outputs(flow_execution: FlowExecution, names: Iterable[str]) -> dict[str, Any]:
    """Each named task's current output: its newest non-deleted TaskOutput. One query.

    Inputs are resolved from these, so an output published by a correction (PUT of an attempt
    or POST /task-outputs) is what re-executed tasks read.
    """
    rows = (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name__any_of=list(names))
        .oldest_to_current()
        .values_list("task_name", "output")
    )
    return dict(rows)


def current_task_output(flow_execution: FlowExecution, task_name: str) -> TaskOutput | None:
    """The task's current TaskOutput row. One query."""
    return (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name=task_name)
        .oldest_to_current()
        .only("id", "output", "summary", "status", "tags")
        .last()
    )


def resolve_task_input(spec: FlowSpec, task: str, flow_input: Any, outputs: dict[str, Any]) -> Any:
    """What `task`'s input expressions give over the flow input and the current outputs."""
    context = {
        "flow": {"input": flow_input},
        "tasks": {name: {"output": outputs.get(name)} for name in spec.tasks[task].upstream},
    }
    return resolve(spec.tasks[task].input, context)


@dataclass(frozen=True)
class FreshnessViolation:
    task_name: str
    attempt_id: uuid.UUID
    stored_input: Any
    expected_input: Any

    def __str__(self) -> str:
        return (
            f"task '{self.task_name}' attempt {self.attempt_id}: input {self.stored_input!r} "
            f"but its upstream outputs now give {self.expected_input!r}"
        )


def freshness_violations(flow_execution: FlowExecution) -> list[FreshnessViolation]:
    """Current completed attempts whose input differs from what their expressions resolve to
    from the current outputs of their upstream tasks. Empty means the invariant holds.

    The invariant is promised once a flow execution settles; call is_settled first.
    """
    spec = spec_for(flow_execution.flow_version)
    completed = {
        name: attempt.id
        for name, attempt in latest_attempts(flow_execution).items()
        if attempt.status == Status.COMPLETED and name in spec.tasks
    }
    inputs = dict(
        TaskExecution.objects.filter(pk__any_of=list(completed.values())).values_list("id", "input")
    )
    outputs = current_outputs(flow_execution, spec.tasks)
    violations = []
    for name in spec.dag.in_order(completed):
        stored = inputs[completed[name]]
        try:
            expected = resolve_task_input(spec, name, flow_execution.input, outputs)
        except ExpressionError as exc:
            expected = f"<{exc}>"
        if not same_json(expected, stored):
            violations.append(FreshnessViolation(name, completed[name], stored, expected))
    return violations
