"""The engine's entry points for use cases: start a flow execution, re-execute it, propagate a
new output of a task, outdate a task's dependents, settle. Each ends by settling the flow
execution's status (status.refresh_status), so no use case has to remember it. Call with the
flow execution's row locked (executions.locking); `start` and `reexecute` lock it themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from executions import locking, selectors, transitions
from executions.engine import (
    advancing,
    iterating,
    loop_steps,
    planning,
    publishing,
    staleness,
    status,
)
from executions.models import FlowExecution, TaskExecution
from flows import loops
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
    # Of looped tasks, the iterations that went stale: task → iterations.
    stale_iterations: dict[str, list[int]] = field(default_factory=dict)


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
    marked = staleness.mark_stale(
        flow_execution, spec, spec.dag.descendants(task_name), actor=actor, cause=cause
    )
    started = planning.schedule(
        flow_execution,
        spec,
        spec.dag.downstream[task_name],
        rerun_stale=execute_flow,
        correction_id=correction_id,
    )
    status.refresh_status(flow_execution, spec)
    return Propagation(marked.stale, started, marked.iterations)


def propagate_iteration(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    attempt: TaskExecution,
    *,
    was_live: bool,
    actor: str,
    execute_flow: bool,
    correction_id: uuid.UUID,
) -> Propagation:
    """A person gave iteration k of a looped task a new output (a correction, or completing
    a waiting human round). The loop takes its next step as after a worker's iteration
    (advancing.advance): a for_each's output is its list with slot k changed once no iteration
    is live; an until loop's rounds after k go stale (or retire, when its condition now holds
    on k) and, with `execute_flow`, the loop resumes from k + 1. The task's transitive
    dependents go stale for this correction of iteration k; with `execute_flow` they run
    again once the loop's output is known (early cutoff per task and per item)."""
    name, iteration = attempt.task_name, attempt.iteration
    task = spec.tasks[name]
    cause = staleness.correction_cause(correction_id, name, iteration)
    own: dict[str, list[int]] = {}
    created: list[TaskExecution] = []
    output: Any = None
    resumes = True
    if task.loop == "until" and not was_live:
        later = loop_steps.later_iterations(iterating.read_history(flow_execution, name), iteration)
        holds = loops.until_holds(task.until or "", attempt.output, iteration)
        if holds:
            loop_steps.retire([a.id for a in later], now=timezone.now())
        else:
            going = [a for a in later if a.status in transitions.CAN_GO_STALE]
            staleness.mark_iterations_stale(
                flow_execution, [a.id for a in going], actor=actor, cause=cause
            )
            if going:
                own[name] = sorted(a.iteration for a in going)
        # With no round after k, a condition that no longer holds carries the loop on to
        # round k + 1, as completing a review round does: nothing else would.
        resumes = holds or execute_flow or not later
    if resumes:
        created, output = advancing.advance(
            flow_execution,
            spec,
            attempt,
            failed=False,
            freed=was_live,
            correction_id=correction_id,
        )
    marked = staleness.mark_stale(
        flow_execution, spec, spec.dag.descendants(name), actor=actor, cause=cause
    )
    if resumes and not planning.pending(output):
        created += planning.schedule(
            flow_execution,
            spec,
            spec.dag.downstream[name],
            rerun_stale=execute_flow,
            correction_id=correction_id,
        )
    status.refresh_status(flow_execution, spec)
    stale = marked.stale if name not in own else spec.dag.in_order({name, *marked.stale})
    return Propagation(stale, created, {**own, **marked.iterations})


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
