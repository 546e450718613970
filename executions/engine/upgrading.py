"""Upgrading a flow execution to another version of its flow: its pinned version becomes the new
one; the tasks whose definition changed (flows.changes) and everything downstream of them go
stale for `definition_changed`; the removed tasks' attempts and outputs are retired; added tasks
start when their upstream tasks are complete; with `execute_flow` the stale set runs again on the
new version, with early cutoff (a changed task whose output did not change stops there).

Call with the flow execution's row locked and nothing of it live (the use case checks).
Statements: a constant number per changed task (its stale marking), whatever the flow's size.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field

from django.db.models import F
from django.utils import timezone

from executions import selectors, transitions
from executions.engine import planning, staleness, status
from executions.models import FlowExecution, StaleReason, TaskExecution
from flowplatform import history
from flows import changes
from flows.definitions import FlowSpec, cached_spec, spec_for
from flows.models import FlowVersion
from outputs import summary
from outputs.models import TaskOutput

Status = TaskExecution.Status


@dataclass(frozen=True)
class Upgraded:
    change: changes.DefinitionChange
    stale_tasks: list[str]  # in the new version's dependency order
    started: list[TaskExecution]  # attempts created now (their jobs run after commit)
    stale_iterations: dict[str, list[int]] = field(default_factory=dict)


def upgrade(
    flow_execution: FlowExecution,
    version: FlowVersion,
    *,
    actor: str,
    execute_flow: bool,
    correction_id: uuid.UUID,
) -> Upgraded:
    new = spec_for(version)
    change, causes = _compared(flow_execution.flow_version, version)
    now = timezone.now()
    FlowExecution.objects.filter(pk=flow_execution.pk).update(flow_version=version, updated_at=now)
    flow_execution.flow_version = version
    if change.removed:
        _retire_removed(flow_execution, change.removed, actor=actor, correction_id=correction_id)
    stale: set[str] = set()
    iterations: dict[str, list[int]] = {}
    groups: dict[str, list[str]] = {}
    for task, cause in causes.items():
        groups.setdefault(cause, []).append(task)
    for cause_task, tasks in groups.items():
        cause = staleness.definition_cause(correction_id, cause_task)
        marked = staleness.mark_stale(flow_execution, new, tasks, actor=actor, cause=cause)
        stale.update(marked.stale)
        iterations.update(marked.iterations)
    stale.update(_doubt_stale(flow_execution, list(change.changed), actor, correction_id, now))
    _doubt_retired(flow_execution, new, list(change.changed), actor, correction_id, now)
    started: list[TaskExecution] = []
    if execute_flow and stale:
        transitions.rerun_flow(flow_execution, actor=actor)
    candidates = [*change.added, *(change.changed if execute_flow else ())]
    if candidates:
        started = planning.schedule(
            flow_execution,
            new,
            candidates,
            rerun_stale=execute_flow,
            correction_id=correction_id,
        )
    status.refresh_status(flow_execution, new)
    return Upgraded(change, new.dag.in_order(stale), started, iterations)


@functools.lru_cache(maxsize=64)
def _compare_by_id(old_id: object, new_id: object) -> tuple[changes.DefinitionChange, dict]:
    old, new = cached_spec(old_id), cached_spec(new_id)
    change = changes.compare(old, new)
    return change, changes.nearest_changed(new, change)


def _compared(
    old: FlowVersion, new: FlowVersion
) -> tuple[changes.DefinitionChange, dict[str, str]]:
    """The two versions' change and each stale task's changed ancestor: computed once per pair
    (versions are immutable), not once per execution of an upgrade job."""
    spec_for(old), spec_for(new)  # read (and cached) by id
    return _compare_by_id(old.pk, new.pk)


def _retire_removed(
    flow_execution: FlowExecution, removed: list[str], *, actor: str, correction_id: uuid.UUID
) -> None:
    """The removed tasks' attempts that still held a result (or work on one) retire, and
    their outputs: kept as history, no task's current result. The summary is rebuilt."""
    now = timezone.now()
    reason = f"retired: task removed by upgrade (correction {correction_id})"
    ids = list(
        TaskExecution.objects.filter(
            flow_execution=flow_execution,
            task_name__any_of=removed,
            status__in=transitions.CAN_GO_STALE,
        ).values_list("pk", flat=True)
    )
    cause = staleness.StaleCause(StaleReason.TASK_REMOVED, correction_id)
    transitions.retire(
        ids, history=reason, **cause.fields(actor, now), modified_by=actor, updated_at=now
    )
    outputs = TaskOutput.objects.filter(flow_execution=flow_execution, task_name__any_of=removed)
    if transitions.retire_outputs(outputs, actor=actor, now=now, history=reason):
        summary.recompute_task_outputs_summary(flow_execution.pk)


def _doubt_stale(
    flow_execution: FlowExecution,
    changed: list[str],
    actor: str,
    correction_id: uuid.UUID,
    now: object,
) -> list[str]:
    """Changed tasks whose current attempts were stale already (an earlier correction upstream)
    take `definition_changed` of themselves as their cause, so early cutoff never brings back a
    result of the old definition. Returns those tasks."""
    if not changed:
        return []
    latest = selectors.latest_attempts(flow_execution, changed)
    moving = {
        m.id: name
        for name, attempt in latest.items()
        for m in (attempt.members or (attempt,))
        if m.status == Status.STALE
        and not (m.stale_reason == StaleReason.DEFINITION_CHANGED and m.stale_upstream_task == name)
    }
    if moving:
        rows = TaskExecution.objects.filter(pk__any_of=list(moving))
        values = {
            "stale_reason": StaleReason.DEFINITION_CHANGED,
            "stale_correction_id": correction_id,
            "stale_upstream_task": F("task_name"),
            "stale_upstream_iteration": None,
            "modified_by": actor,
            "updated_at": now,
        }
        history.update_with_history(rows, values, reason="stale: definition_changed (upgrade)")
    return sorted(set(moving.values()))


def _doubt_retired(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    changed: list[str],
    actor: str,
    correction_id: uuid.UUID,
    now: object,
) -> None:
    """A changed looped task's retired iterations (an item that left the list, a round after
    the one that ended the loop) keep their results, so that one coming back on the same input
    is reused; those results are of the old definition. Each becomes doubted of itself (its
    task is its `stale_upstream_task`; still retired): early cutoff never brings one back. One
    query, and one update if any."""
    looped = [name for name in changed if spec.tasks[name].loop]
    if not looped:
        return
    rows = (
        TaskExecution.objects.filter(
            flow_execution=flow_execution, task_name__any_of=looped, iteration__isnull=False
        )
        .order_by("task_name", "iteration", "task_execution_idx")
        .values_list(
            "id", "task_name", "iteration", "status", "stale_reason", "stale_upstream_task"
        )
    )
    latest = {(row[1], row[2]): row for row in rows}  # each iteration's latest attempt
    ids = [
        pk
        for pk, name, _, state, reason, upstream in latest.values()
        if state == Status.STALE and reason == StaleReason.ITERATION_REMOVED and upstream != name
    ]
    if ids:
        values = {
            "stale_correction_id": correction_id,
            "stale_upstream_task": F("task_name"),
            "stale_upstream_iteration": None,
            "modified_by": actor,
            "updated_at": now,
        }
        history.update_with_history(
            TaskExecution.objects.filter(pk__any_of=ids),
            values,
            reason="retired iteration doubted: definition_changed (upgrade)",
        )
