"""Builders for the operator console's tests: a run with many attempts, corrections and history
rows, made in bulk (a few queries, whatever the count) rather than by running the flow again."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from executions.models import Correction, FlowExecution, StaleReason, TaskExecution

# a → b → c: b keeps only a's `x`, so correcting a's `y` re-runs b with the same result and c
# reuses its earlier one (early cutoff).
LOSSY_CHAIN = [
    {"name": "a", "type": "transform", "input": {"x": 1, "y": 1}},
    {
        "name": "b",
        "type": "transform",
        "input": "${{ tasks.a.output }}",
        "config": {"expression": "{x: x}"},
    },
    {"name": "c", "type": "transform", "input": {"b": "${{ tasks.b.output }}"}},
]


def pile_attempts(flow_execution: FlowExecution, task_name: str, count: int) -> TaskExecution:
    """Give `task_name` `count` attempts in all: after its existing ones, stale re-executions
    and a last, completed one with the current output (one INSERT); that last one."""
    existing = TaskExecution.objects.filter(flow_execution=flow_execution, task_name=task_name)
    current = existing.order_by("-task_execution_idx").first()
    assert current is not None, f"{task_name} has no attempt to pile on"
    first = current.task_execution_idx + 1
    last = first + count - existing.count() - 1
    assert last >= first, f"{task_name} already has {existing.count()} attempts"
    now = timezone.now()
    TaskExecution.objects.bulk_create(
        TaskExecution(
            organization_id=flow_execution.organization_id,
            flow_execution=flow_execution,
            task_name=task_name,
            task_execution_idx=idx,
            status=TaskExecution.Status.COMPLETED if idx == last else TaskExecution.Status.STALE,
            stale_reason="" if idx == last else StaleReason.REEXECUTION,
            input=current.input,
            output=current.output,
            completed_at=now,
        )
        for idx in range(first, last + 1)
    )
    return existing.get(task_execution_idx=last)


def pile_corrections(
    flow_execution: FlowExecution, count: int, modified_by: str = "ops@example.com"
) -> None:
    """`count` corrections of task a's output, {"y": i} → {"y": i + 1} (one INSERT)."""
    Correction.objects.bulk_create(
        Correction(
            organization_id=flow_execution.organization_id,
            flow_execution=flow_execution,
            task_name="a",
            operation=Correction.Operation.TASK_EXECUTION_UPDATE,
            source=Correction.Source.API,
            modified_by=modified_by,
            reason=f"fix number {i}",
            before={"output": {"x": 1, "y": i}},
            after={"output": {"x": 1, "y": i + 1}},
            stale_tasks=["b", "c"],
        )
        for i in range(count)
    )


def pile_history(attempt: TaskExecution, count: int) -> None:
    """`count` history rows of `attempt`, a minute apart, each changing its output's `y` and
    giving a reason (one INSERT)."""
    historical = TaskExecution.history.model  # type: ignore[attr-defined]
    fields = [f.attname for f in TaskExecution._meta.concrete_fields]
    start = timezone.now() - timedelta(minutes=count)
    historical.objects.bulk_create(
        historical(
            **{name: getattr(attempt, name) for name in fields if name != "output"},
            output={**(attempt.output or {}), "y": i},
            history_id=uuid.uuid4() if _uuid_history_ids(historical) else None,
            history_date=start + timedelta(minutes=i),
            history_type="~",
            history_change_reason=f"reason {i}",
        )
        for i in range(count)
    )


def _uuid_history_ids(historical: Any) -> bool:
    return historical._meta.pk.get_internal_type() == "UUIDField"
