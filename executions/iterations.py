"""A looped task's state, from its attempts: which attempt is current for each iteration, which
iterations are retired, and what they add up to for the rest of the engine. Pure functions of
plain rows; no ORM.

A task without a loop has one current attempt: its latest (highest task_execution_idx). A
looped task (flows.loops) has one per iteration: the latest attempt with that `iteration`. An
iteration whose item left the for_each list, or that an until loop ended before, is *retired*:
its current attempt is stale for `iteration_removed`, and it counts for nothing. An attempt of a
looped task without an iteration (an empty for_each list, or a for_each that did not resolve)
stands for the whole task while it is the task's newest attempt.

What they add up to (`aggregate`), as the engine reads a task's state:
- live (queued/running) if any iteration is live;
- else stale if any iteration is stale or deleted (it needs a new attempt);
- else failed if an iteration failed (for good) and the task does not tolerate failures;
- else completed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from executions.models import StaleReason, TaskExecution

Status = TaskExecution.Status
LIVE = frozenset({Status.QUEUED, Status.RUNNING})


class Row(Protocol):
    idx: int
    status: str
    stale_reason: str | None
    iteration: int | None


def retired(row: Row) -> bool:
    return row.status == Status.STALE and row.stale_reason == StaleReason.ITERATION_REMOVED


def current(rows: Iterable[Row]) -> list[Any]:
    """The current attempts of a looped task, from all its attempts: one per iteration (not
    retired) in iteration order — or the task's newest attempt alone, when it has no iteration
    (the whole task's outcome: an empty list, a list that did not resolve)."""
    rows = list(rows)
    if not rows:
        return []
    newest = max(rows, key=lambda r: r.idx)
    if newest.iteration is None:
        return [] if retired(newest) else [newest]
    by_iteration: dict[int, Any] = {}
    for row in rows:
        if row.iteration is None:
            continue
        kept = by_iteration.get(row.iteration)
        if kept is None or row.idx > kept.idx:
            by_iteration[row.iteration] = row
    return [by_iteration[i] for i in sorted(by_iteration) if not retired(by_iteration[i])]


def aggregate(members: Sequence[Row], *, tolerate_failures: bool = False) -> str | None:
    """The status a looped task's current attempts add up to (module docstring); None when it
    has none (it never ran, or every iteration is retired)."""
    if not members:
        return None
    statuses = {m.status for m in members}
    if Status.RUNNING in statuses:
        return Status.RUNNING
    if Status.QUEUED in statuses:
        return Status.QUEUED
    if statuses & {Status.STALE, Status.DELETED}:
        return Status.STALE
    if Status.FAILED in statuses and not tolerate_failures:
        return Status.FAILED
    return Status.COMPLETED


def counts(members: Sequence[Row]) -> dict[str, int]:
    """How many current iterations are in each status (the loop's summary)."""
    found: dict[str, int] = {}
    for member in members:
        if member.iteration is not None:
            found[member.status] = found.get(member.status, 0) + 1
    return found
