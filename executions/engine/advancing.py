"""A looped task's next step once one of its iterations finished (a worker's, a wave's or a
person's): planning.Planner plans its iterations; this decides what follows one."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from executions import jobs
from executions.engine import iterating, loop_steps, planning, publishing
from executions.models import FlowExecution, TaskExecution
from flows.definitions import FlowSpec


def advance(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    attempt: TaskExecution,
    *,
    failed: bool,
    freed: bool = True,
    correction_id: uuid.UUID | None = None,
) -> tuple[list[TaskExecution], Any]:
    """An iteration of a looped task finished: completed, or failed with no retry left. A
    for_each starts its next iteration (max_parallel) and, once none is live, publishes its
    output; an until loop's next round is planned, or its output published when its condition
    holds. Returns the attempts created and the task's output, or planning.PENDING while it is not
    done (the caller then moves the flow on from the task as from any completed task).
    `freed`: the iteration was live until now (its max_parallel slot is free);
    `correction_id`: the correction the loop's new rounds run for (else the attempt's)."""
    name = attempt.task_name
    task = spec.tasks[name]
    if task.loop == "for_each":
        started = loop_steps.top_up(flow_execution, spec, name) if freed else []
        if started:
            jobs.enqueue_after_commit(flow_execution.organization_id, started)
        if loop_steps.any_live(flow_execution, name):
            return [], planning.PENDING
        finished = loop_steps.settle_for_each(task, iterating.read_history(flow_execution, name))
        if finished is None:
            return [], planning.PENDING
        publishing.publish_output(flow_execution, name, *finished)
        return [], finished[0]
    if failed:
        return [], planning.PENDING
    planner = planning.Planner(
        flow_execution, spec, True, correction_id or attempt.started_by_correction_id
    )
    planner.load([name])
    created: list[TaskExecution] = []
    output = planner.loop(name, created, timezone.now())
    planner.save(created, [])
    return created, output
