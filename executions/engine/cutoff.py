"""Early cutoff: a task that is stale only because something upstream changed, and whose freshly
resolved input equals its previous completed attempt's input, is not run again; it gets a
completed attempt that reuses that attempt's result (`reused_from`), and its dependents are
considered in turn. `rerun: always` in the task's definition opts out.

The decisions are pure functions of plain data (unit-tested without a database); one read,
`reusable_attempts`, gathers what they decide on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from executions.executors import default_summary
from executions.models import FlowExecution, StaleReason, TaskExecution
from executions.selectors import Attempt
from flowplatform.canonical import same_json
from flows.definitions import FlowSpec
from outputs.models import TaskOutput

Status = TaskExecution.Status

# Stale causes that say only something upstream changed (the task's own result was not doubted).
# An upgrade's `definition_changed` is one for the tasks downstream of the changed one; for the
# changed task itself it names the task, so its result is doubted (own_doubt).
UPSTREAM_CAUSES = frozenset(
    {StaleReason.CORRECTION, StaleReason.UPSTREAM_RERUN, StaleReason.DEFINITION_CHANGED}
)
# Stale causes that threw the task's own result away.
DISCARDING_CAUSES = frozenset(
    {StaleReason.REEXECUTION, StaleReason.FLOW_EXECUTION_DELETED, StaleReason.TASK_REMOVED}
)


@dataclass(frozen=True)
class PastAttempt:
    """An earlier attempt of a task, as early cutoff looks back at it."""

    id: uuid.UUID
    task_name: str
    status: str
    input: Any
    output: Any
    completed_at: datetime | None
    stale_reason: str
    stale_upstream_task: str
    # An attempt of a looped task (engine.iterating): its iteration, idx, and the corrected
    # iteration its stale cause names.
    iteration: int | None = None
    idx: int = 0
    stale_upstream_iteration: int | None = None


# The columns of a task's PastAttempt, in its fields' order.
PAST_COLUMNS = (
    "id",
    "task_name",
    "status",
    "input",
    "output",
    "completed_at",
    "stale_reason",
    "stale_upstream_task",
)


@dataclass(frozen=True)
class Reusable:
    """A stale task's previous completed attempt, and the result its reuse would keep."""

    attempt_id: uuid.UUID
    input: Any
    output: Any
    summary: Any
    tags: Any = None
    modified_by: str = "system"


# Pure decisions ------------------------------------------------------------------------------


def may_cut_off(latest: Attempt, rerun: str) -> bool:
    """Is early cutoff allowed for a task whose latest attempt is `latest`? Only when it went
    stale because something upstream changed, not because its own result was doubted, and its
    definition does not say `rerun: always`."""
    return (
        latest.status == Status.STALE
        and latest.stale_reason in UPSTREAM_CAUSES
        and latest.stale_upstream_task != latest.task_name
        and rerun == "on_input_change"
    )


def own_doubt(attempt: PastAttempt) -> bool:
    """Does its stale cause name the attempt itself (a person marked it stale)? For an
    iteration of a looped task: itself, not another iteration of its task (an until loop's
    rounds after a corrected one are outdated, not doubted)."""
    return attempt.stale_upstream_task == attempt.task_name and (
        attempt.stale_upstream_iteration is None
        or attempt.stale_upstream_iteration == attempt.iteration
    )


def doubted(attempt: PastAttempt, reexecuted_at: datetime | None) -> bool:
    """Was this attempt's own result thrown away (not merely outdated by a change upstream)?

    A person marked it stale, or deleted it, or the whole flow was re-executed after it
    completed: early cutoff never brings such a result back, nor one from before it.
    """
    if attempt.status == Status.DELETED:
        return True
    if attempt.status == Status.STALE and (
        attempt.stale_reason in DISCARDING_CAUSES or own_doubt(attempt)
    ):
        return True
    return (
        reexecuted_at is not None
        and attempt.completed_at is not None
        and attempt.completed_at < reexecuted_at
    )


def previous_completed(
    history: Sequence[PastAttempt], reexecuted_at: datetime | None
) -> PastAttempt | None:
    """The newest attempt with a result in `history` (newest first), looking back no further
    than one whose own result was thrown away."""
    for attempt in history:
        if doubted(attempt, reexecuted_at):
            return None
        if attempt.completed_at is not None:
            return attempt
    return None


def kept_result(attempt: PastAttempt, published: tuple | None) -> Reusable:
    """The result reuse keeps: the task's current output (`published`: output, summary, tags,
    modified_by, created_at) when it was published after `attempt` completed (its own, or a
    person's replacement of it), else the attempt's output."""
    if published is not None and published[4] >= attempt.completed_at:
        output, summary, tags, modified_by, _ = published
        return Reusable(attempt.id, attempt.input, output, summary, tags, modified_by)
    return Reusable(attempt.id, attempt.input, attempt.output, default_summary(attempt.output))


def reuses(earlier: Reusable | None, fresh_input: Any) -> bool:
    """Does a new attempt on `fresh_input` reuse `earlier` instead of running?"""
    return earlier is not None and same_json(earlier.input, fresh_input)


# The read ------------------------------------------------------------------------------------


def reusable_attempts(
    flow_execution: FlowExecution, spec: FlowSpec, latest: Iterable[Attempt]
) -> dict[str, Reusable]:
    """For each stale task early cutoff may apply to, its previous completed attempt and the
    result reuse would keep. Two queries."""
    eligible = [
        a.task_name
        for a in latest
        if a.task_name in spec.tasks  # not a task an upgrade removed
        and not spec.tasks[a.task_name].loop  # iterations: engine.iterating
        and may_cut_off(a, spec.tasks[a.task_name].rerun)
    ]
    if not eligible:
        return {}
    history: dict[str, list[PastAttempt]] = {}
    for row in (
        TaskExecution.objects.filter(flow_execution=flow_execution, task_name__any_of=eligible)
        .order_by("task_name", "-task_execution_idx")
        .values_list(*PAST_COLUMNS)
    ):
        history.setdefault(row[1], []).append(PastAttempt(*row))
    previous = {
        name: attempt
        for name, attempts in history.items()
        if (attempt := previous_completed(attempts, flow_execution.reexecuted_at)) is not None
    }
    if not previous:
        return {}
    current: dict[str, tuple] = {}
    for row in (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name__any_of=list(previous))
        .oldest_to_current()
        .values_list("task_name", "output", "summary", "tags", "modified_by", "created_at")
    ):
        current[row[0]] = row[1:]
    return {name: kept_result(attempt, current.get(name)) for name, attempt in previous.items()}
