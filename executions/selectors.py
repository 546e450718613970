"""Reads that are more than a filter: the freshness invariant of a flow execution."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from executions.engine import LIVE, current_outputs, resolve_task_input
from executions.models import FlowExecution, TaskExecution
from flowplatform.canonical import same_json
from flows.definitions import spec_for
from flows.expressions import ExpressionError


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


def is_settled(flow_execution: FlowExecution) -> bool:
    """Nothing is queued or running (a human task waiting for a person counts as running)."""
    return not TaskExecution.objects.filter(flow_execution=flow_execution, status__in=LIVE).exists()


def freshness_violations(flow_execution: FlowExecution) -> list[FreshnessViolation]:
    """Current completed attempts whose input differs from what their expressions resolve to
    from the current outputs of their upstream tasks. Empty means the invariant holds.

    The invariant is promised once a flow execution settles; call is_settled first.
    """
    spec = spec_for(flow_execution.flow_version)
    latest: dict[str, TaskExecution] = {}
    for attempt in TaskExecution.objects.filter(flow_execution=flow_execution).order_by(
        "task_name", "task_execution_idx"
    ):
        latest[attempt.task_name] = attempt
    completed = {
        name: attempt
        for name, attempt in latest.items()
        if attempt.status == TaskExecution.Status.COMPLETED and name in spec.tasks
    }
    outputs = current_outputs(flow_execution, spec.tasks)
    violations = []
    for name in spec.dag.in_order(completed):
        attempt = completed[name]
        try:
            expected = resolve_task_input(spec, name, flow_execution.input, outputs)
        except ExpressionError as exc:
            expected = f"<{exc}>"
        if not same_json(expected, attempt.input):
            violations.append(FreshnessViolation(name, attempt.id, attempt.input, expected))
    return violations
