"""The engine's entry points for use cases: start a flow execution, re-execute it, propagate a
new output of a task, outdate a task's dependents, settle. Each ends by settling the flow
execution's status (status.refresh_status), so no use case has to remember it. Call with the
flow execution's row locked (executions.locking); `start` and `reexecute` lock it themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from executions import locking, selectors, transitions
from executions.engine import planning, publishing, staleness, status
from executions.models import FlowExecution, TaskExecution
from flows.definitions import FlowSpec, spec_for


@transaction.atomic
def start(flow_execution: FlowExecution) -> FlowExecution:
    """Give the flow execution's root tasks their first attempts."""
    flow_execution = locking.lock_flow_execution(flow_execution.pk)
    spec = spec_for(flow_execution.flow_version)
    planning.schedule(
        flow_execution, spec, [t for t, task in spec.tasks.items() if not task.upstream]
    )
    status.refresh_status(flow_execution, spec)
    return flow_execution


@transaction.atomic
def reexecute(
    flow_execution: FlowExecution,
    *,
    actor: str,
    only_stale: bool = False,
    task: str | None = None,
) -> list[TaskExecution]:
    """Run the whole flow again, only its stale tasks, or one task and its dependents; history
    is kept.

    Whole flow: every task's latest attempt goes stale (a live one is cancelled) and each task
    gets a new attempt, in dependency order. `only_stale`: the stale tasks get new attempts as
    their upstream tasks complete; nothing else runs again. `task`: that task and every task
    downstream of it, as for the whole flow. Returns the attempts started now.
    """
    flow_execution = locking.lock_flow_execution(flow_execution.pk)
    spec = spec_for(flow_execution.flow_version)
    latest = selectors.latest_attempts(flow_execution)
    cause = staleness.REEXECUTION
    if task is not None:
        subset = {task} | spec.dag.descendants(task)
        staleness.mark_stale(flow_execution, spec, subset, actor=actor, cause=cause)
        candidates = [task]
    elif only_stale:
        candidates = [name for name, a in latest.items() if a.status in transitions.NEEDS_ATTEMPT]
    else:
        # Everything runs again: no result from before now is reused (see cutoff.doubted).
        now = timezone.now()
        FlowExecution.objects.filter(pk=flow_execution.pk).update(reexecuted_at=now)
        flow_execution.reexecuted_at = now
        staleness.mark_stale(flow_execution, spec, latest, actor=actor, cause=cause)
        candidates = list(spec.tasks)
    if candidates:
        transitions.rerun_flow(flow_execution, actor=actor)
    started = planning.schedule(flow_execution, spec, [c for c in candidates if c in spec.tasks])
    status.refresh_status(flow_execution, spec)
    return started


@dataclass(frozen=True)
class Propagation:
    stale_tasks: list[str]  # in dependency order
    started: list[TaskExecution]  # attempts created now (their jobs run after commit)


NOTHING_PROPAGATED = Propagation(stale_tasks=[], started=[])


def propagate_new_output(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    task_name: str,
    output: Any,
    *,
    actor: str,
    execute_flow: bool,
    correction_id: uuid.UUID | None = None,
    summary: dict | None = None,
) -> Propagation:
    """A person gave `task_name` a new output (a correction, or completing a human or failed
    task). Publish it; every transitive dependent's latest attempt goes stale; with
    `execute_flow` the stale tasks run again in dependency order with inputs resolved from the
    current outputs (early cutoff reuses what did not change). Tasks downstream that never ran
    start when their inputs are complete (a completed human task releases its dependents
    either way). `summary`: the new output's (else the generic one).
    """
    publishing.publish_output(flow_execution, task_name, output, summary, actor)
    cause = staleness.correction_cause(correction_id, task_name)
    stale = staleness.mark_stale(
        flow_execution, spec, spec.dag.descendants(task_name), actor=actor, cause=cause
    ).stale
    started = planning.schedule(
        flow_execution,
        spec,
        spec.dag.downstream[task_name],
        rerun_stale=execute_flow,
        correction_id=correction_id,
    )
    status.refresh_status(flow_execution, spec)
    return Propagation(stale_tasks=stale, started=started)


def outdate_dependents(
    flow_execution: FlowExecution, task_name: str, *, actor: str, correction_id: uuid.UUID
) -> staleness.Marked:
    """A task's current output changed outside its attempts (a task output was created, edited
    or deleted): every transitive dependent's latest attempt goes stale for that correction.
    Nothing runs again. A task the pinned version does not know has no dependents."""
    spec = spec_for(flow_execution.flow_version)
    if task_name not in spec.tasks:
        return staleness.Marked([], [])
    cause = staleness.correction_cause(correction_id, task_name)
    marked = staleness.mark_stale(
        flow_execution, spec, spec.dag.descendants(task_name), actor=actor, cause=cause
    )
    if marked.stale:
        status.refresh_status(flow_execution, spec)
    return marked


def settle(flow_execution: FlowExecution, spec: FlowSpec | None = None) -> str:
    """A use case changed an attempt directly (recorded, corrected without anything to
    propagate, or deleted): derive the flow execution's status again."""
    return status.refresh_status(flow_execution, spec or spec_for(flow_execution.flow_version))
