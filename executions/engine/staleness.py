"""What goes stale, and why: a correction upstream, an upstream task that ran again, a
re-execution, a deleted flow execution. Every attempt that goes stale records its StaleCause;
a queued or running one is thereby cancelled (its job and worker find it no longer theirs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from executions import selectors, transitions
from executions.models import FlowExecution, StaleReason, TaskExecution
from executions.selectors import Attempt
from flowplatform import history
from flows.definitions import FlowSpec
from outputs import summary
from outputs.models import TaskOutput


@dataclass(frozen=True)
class StaleCause:
    """Why attempts go stale: what the task execution representation shows as `stale_cause`."""

    reason: str
    correction_id: uuid.UUID | None = None
    upstream_task: str | None = None  # the corrected task (nearest corrected ancestor)
    upstream_iteration: int | None = None  # its corrected iteration, for a looped task

    def fields(self, actor: str, now: Any) -> dict[str, Any]:
        """The TaskExecution columns that record this cause (with who and when)."""
        return {
            "stale_reason": self.reason,
            "stale_correction_id": self.correction_id,
            "stale_upstream_task": self.upstream_task or "",
            "stale_upstream_iteration": self.upstream_iteration,
            "stale_at": now,
            "stale_by": actor,
        }

    def history_reason(self) -> str:
        where = self.upstream_task or ""
        if where and self.upstream_iteration is not None:
            where += f" (iteration {self.upstream_iteration})"
        return f"stale: {self.reason}" + (f" of {where}" if where else "")


REEXECUTION = StaleCause(StaleReason.REEXECUTION)
FLOW_EXECUTION_DELETED = StaleCause(StaleReason.FLOW_EXECUTION_DELETED)


def correction_cause(
    correction_id: uuid.UUID, corrected_task: str, iteration: int | None = None
) -> StaleCause:
    """A correction of `corrected_task` (the task itself, when a person marked it stale), of
    its `iteration` for a looped task."""
    return StaleCause(StaleReason.CORRECTION, correction_id, corrected_task, iteration)


def definition_cause(correction_id: uuid.UUID, changed_task: str) -> StaleCause:
    """An upgrade changed `changed_task`'s definition (the task itself, or its nearest changed
    ancestor): what it computed under the old definition is outdated."""
    return StaleCause(StaleReason.DEFINITION_CHANGED, correction_id, changed_task)


def upstream_rerun_cause(correction_id: uuid.UUID | None, task: str) -> StaleCause:
    """`task` ran again outside a correction (say a person had marked it stale): what its
    dependents computed from its previous output is outdated."""
    return StaleCause(StaleReason.UPSTREAM_RERUN, correction_id, task)


# Pure decisions ------------------------------------------------------------------------------


def stale_candidates(spec: FlowSpec, latest: Mapping[str, Attempt]) -> list[str]:
    """Of these tasks' latest attempts, the ones a change upstream makes stale (a result, or
    live work on one, which is cancelled), in dependency order. Tasks that never ran, and
    attempts already stale or deleted, are not."""
    return spec.dag.in_order(
        name for name, attempt in latest.items() if attempt.status in transitions.CAN_GO_STALE
    )


def nearer_cause(spec: FlowSpec, attempts: Iterable[Attempt], cause: StaleCause) -> list[Attempt]:
    """Already-stale attempts (of tasks downstream of `cause`'s corrected task) whose cause
    becomes `cause`: every one a correction made stale, unless the task that correction
    corrected lies downstream of this one's — then it is the nearer corrected ancestor. Between
    unrelated corrected tasks (or the same task corrected again) the newer correction wins.
    One walk of the DAG, whatever the number of earlier corrections.
    """
    if cause.reason != StaleReason.CORRECTION or cause.upstream_task not in spec.tasks:
        return []
    previous = [
        a
        for a in attempts
        if a.status == TaskExecution.Status.STALE
        and a.stale_reason == StaleReason.CORRECTION
        and a.stale_upstream_task != a.task_name  # marked stale itself: nothing is nearer
    ]
    if not previous:
        return []
    downstream = spec.dag.descendants(cause.upstream_task)
    return [a for a in previous if a.stale_upstream_task not in downstream]


# Writes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marked:
    stale: list[str]  # tasks whose latest attempt became stale now, in dependency order
    moved: list[str]  # already-stale tasks whose cause is now this one (a nearer correction)
    # Of the looped tasks in `stale`, the iterations that became stale: task → iterations.
    iterations: dict[str, list[int]] = field(default_factory=dict)


def mark_stale(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    tasks: Iterable[str],
    *,
    actor: str,
    cause: StaleCause,
) -> Marked:
    """Make the latest attempt of each of `tasks` stale for `cause` (stale_candidates).

    Their current outputs are marked stale too. An attempt a correction already made stale
    takes this correction as its cause when this one's task is its nearest corrected ancestor
    (nearer_cause). Set-based: the same statements for 10 tasks or 10,000 — on PostgreSQL six
    (seven with a nearer cause): the latest attempts, each UPDATE with its history rows in one
    statement, the outputs, the summary's counts. Call with the flow execution's row locked.
    """
    tasks = list(tasks)
    if not tasks:
        return Marked([], [])
    latest = selectors.latest_attempts(flow_execution, tasks)
    stale = stale_candidates(spec, latest)
    # A looped task goes stale as its current iterations do, each for this cause.
    attempts = [m for a in latest.values() for m in (a.members or (a,))]
    nearer = nearer_cause(spec, attempts, cause)
    if not stale and not nearer:
        return Marked([], [])
    now = timezone.now()
    cause_fields = {**cause.fields(actor, now), "modified_by": actor, "updated_at": now}
    reason = cause.history_reason()
    if nearer:
        nearer_rows = TaskExecution.objects.filter(pk__any_of=[a.id for a in nearer])
        history.update_with_history(nearer_rows, cause_fields, reason=reason)
    moved = spec.dag.in_order({a.task_name for a in nearer})
    if not stale:
        return Marked([], moved)
    ids, looped = [], {}
    for name in stale:
        members = latest[name].members
        if not members:
            ids.append(latest[name].id)
            continue
        going = [m for m in members if m.status in transitions.CAN_GO_STALE]
        ids += [m.id for m in going]
        looped[name] = [m.iteration for m in going if m.iteration is not None]
    transitions.go_stale(ids, history=reason, **cause_fields)
    _mark_outputs_stale(flow_execution, stale, actor=actor, now=now, reason=reason)
    return Marked(stale, moved, looped)


def mark_iterations_stale(
    flow_execution: FlowExecution,
    attempt_ids: list[uuid.UUID],
    *,
    actor: str,
    cause: StaleCause,
) -> None:
    """Make these iterations of one looped task stale for `cause` (an until loop's rounds
    after a corrected one). Set-based."""
    if attempt_ids:
        now = timezone.now()
        cause_fields = {**cause.fields(actor, now), "modified_by": actor, "updated_at": now}
        transitions.go_stale(attempt_ids, history=cause.history_reason(), **cause_fields)


def _mark_outputs_stale(
    flow_execution: FlowExecution, tasks: list[str], *, actor: str, now: Any, reason: str
) -> None:
    """The completed outputs of `tasks` become stale, and the flow execution's summary counts
    follow: the tasks whose current output was completed move from `completed` to `stale`
    (their entries are unchanged). Four queries on PostgreSQL (five on SQLite), whatever the
    number of tasks; the summary is patched, not rebuilt from every output."""
    rows = (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name__any_of=tasks)
        .oldest_to_current()
        .values_list("pk", "task_name", "status")
    )
    current: dict[str, str] = {}
    outputs = []
    for pk, task_name, status in rows:
        current[task_name] = status
        if status == TaskOutput.Status.COMPLETED:
            outputs.append(pk)
    if not outputs:
        return
    transitions.outputs_go_stale(outputs, actor=actor, now=now, history=reason)
    moved = sum(1 for status in current.values() if status == TaskOutput.Status.COMPLETED)
    summary.move_status_counts(
        flow_execution.pk, TaskOutput.Status.COMPLETED, TaskOutput.Status.STALE, moved
    )


def cancel_live(flow_execution: FlowExecution, *, actor: str) -> None:
    """Its flow execution is deleted: its queued and running attempts are cancelled (made stale
    for that cause), so nothing keeps working on it."""
    live = list(selectors.live_attempts(flow_execution).values_list("pk", flat=True))
    now = timezone.now()
    transitions.cancel(
        live, modified_by=actor, updated_at=now, **FLOW_EXECUTION_DELETED.fields(actor, now)
    )
    history.record_history(TaskExecution, live, reason="stale: flow execution deleted")


def record_own_cause(
    attempt: TaskExecution, correction_id: uuid.UUID, *, actor: str, now: datetime
) -> None:
    """A person says this attempt's own result is wrong (a correction to `stale`): it is its
    own stale cause. Sets the columns on the (locked, unsaved) attempt."""
    for name, value in (
        correction_cause(correction_id, attempt.task_name).fields(actor, now).items()
    ):
        setattr(attempt, name, value)
