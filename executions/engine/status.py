"""A flow execution's status, derived from its attempts.

queued → running (an attempt exists) → in_progress (a task completed, or a person is awaited) →
completed (every task's latest attempt completed) | failed (nothing can run and a task failed
for good) | stale (nothing runs and stale tasks remain, which a re-execution would refresh).
Never backwards within a run; a re-execution starts a new run at `running`.
"""

from __future__ import annotations

from collections.abc import Mapping

from executions import selectors, transitions
from executions.executors import get_executor
from executions.models import FlowExecution, TaskExecution
from flowplatform.webhooks import events
from flows.definitions import FlowSpec

Status = TaskExecution.Status
FlowStatus = FlowExecution.Status


def outstanding(spec: FlowSpec, latest: Mapping[str, str]) -> list[str]:
    """The tasks still to get a result (`latest`: task → its latest attempt's status), in
    dependency order: never run, stale, deleted, queued or running, and not blocked by a task
    that failed for good. Pure."""
    failed = [name for name, status in latest.items() if status == Status.FAILED]
    blocked = spec.dag.descendants(*failed) if failed else set()
    waiting = transitions.NEEDS_ATTEMPT | transitions.LIVE
    return spec.dag.in_order(
        name
        for name in spec.tasks
        if latest.get(name, Status.STALE) in waiting and name not in blocked
    )


def settled_status(spec: FlowSpec, latest: Mapping[str, str], current: str) -> str:
    """Nothing runs: `completed` if every task's latest attempt (`latest`: task → status) is
    completed, else `stale` if a re-execution of the stale tasks could make progress, else
    `failed` (what remains is blocked by a failed task); `current` if none applies. Pure."""
    if len(latest) == len(spec.tasks) and all(s == Status.COMPLETED for s in latest.values()):
        return FlowStatus.COMPLETED
    if outstanding(spec, latest):  # nothing runs, so these all need a new attempt
        return FlowStatus.STALE
    failed = any(status == Status.FAILED for status in latest.values())
    return FlowStatus.FAILED if failed else current


def refresh_status(flow_execution: FlowExecution, spec: FlowSpec, *, live: bool = False) -> str:
    """Derive the flow execution's status from its attempts and save it if it changed.

    Called after every finished task, so its cost is per task: while anything is queued or
    running, one indexed EXISTS (none at all once in_progress); only when the flow execution
    comes to rest does it read every task's latest attempt. `live`: the caller has just queued
    an attempt (no need to ask).
    """
    current = flow_execution.status
    if current == FlowStatus.DELETED:
        return current  # a deleted flow execution stays deleted
    if live or selectors.live_attempts(flow_execution).exists():
        if current == FlowStatus.IN_PROGRESS:
            return current
        progressed = selectors.has_latest_completed(flow_execution) or _awaits_person(
            flow_execution, spec
        )
        status = FlowStatus.IN_PROGRESS if progressed else FlowStatus.RUNNING
    else:
        latest = selectors.latest_statuses(flow_execution, spec.tasks)
        status = settled_status(spec, latest, current)
    if status != current:
        transitions.derive_flow(flow_execution, status)
        if status in events.SETTLED:
            events.flow_execution_settled(flow_execution)
    return status


def refresh_status_from(
    flow_execution: FlowExecution, spec: FlowSpec, latest: Mapping[str, str]
) -> str:
    """refresh_status for a caller that knows every task's latest attempt's status (`latest`,
    under the flow execution's lock: engine.waves): no query unless the status changes."""
    current = flow_execution.status
    if current == FlowStatus.DELETED:
        return current
    if any(s in transitions.LIVE for s in latest.values()):
        if current == FlowStatus.IN_PROGRESS:
            return current
        human = {n for n, t in spec.tasks.items() if get_executor(t.type).waits_for_person}
        progressed = any(
            s == Status.COMPLETED or (s == Status.RUNNING and n in human) for n, s in latest.items()
        )
        status = FlowStatus.IN_PROGRESS if progressed else FlowStatus.RUNNING
    else:
        status = settled_status(spec, latest, current)
    if status != current:
        transitions.derive_flow(flow_execution, status)
        if status in events.SETTLED:
            events.flow_execution_settled(flow_execution)
    return status


def _awaits_person(flow_execution: FlowExecution, spec: FlowSpec) -> bool:
    human = [name for name, task in spec.tasks.items() if get_executor(task.type).waits_for_person]
    return bool(human) and (
        TaskExecution.objects.filter(
            flow_execution=flow_execution, task_name__in=human, status=Status.RUNNING
        ).exists()
    )
