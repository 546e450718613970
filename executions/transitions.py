"""Every status move of a task execution, a flow execution and a task output: the one table, for
people and for the engine, and the only code that writes a status.

A move names who makes it, the statuses it leaves (`NEW`: the row is created in its target
status) and the status it reaches. The engine's write functions are compare-and-sets: they
change only rows still in one of the move's sources, so a cancelled attempt that finishes late,
a reaper racing a heartbeat or a duplicated job changes nothing (they return what changed).
People's moves (API, admin, commands) are checked against PERSON_MOVES (else
InvalidTransition). `tests/test_transitions.py` checks every pair and every write function.
Callers hold the flow execution's row lock (executions.locking) for every write here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Expression
from django.db.models.functions import Now
from django.utils import timezone

from executions.models import FlowExecution, TaskExecution
from flowplatform import bulksql
from flowplatform.exceptions import InvalidInput, InvalidTransition
from flowplatform.history import update_with_history
from outputs.models import TaskOutput

Status = TaskExecution.Status
FlowStatus = FlowExecution.Status
OutputStatus = TaskOutput.Status

NEW = None  # "no row yet": a move from NEW creates the row in the move's target status

# Named groups of task execution statuses.
# Someone works on it or is awaited: queued (set when the engine creates it), running (a worker's
# claim, or a human task waiting for a person). A live attempt is always its task's latest.
LIVE = frozenset({Status.QUEUED, Status.RUNNING})
# The task's latest attempt holds no usable result, so the task needs a new attempt: stale (a
# change upstream, a re-execution, a person) or deleted (a person).
NEEDS_ATTEMPT = frozenset({Status.STALE, Status.DELETED})
# What a change upstream outdates: a result, or work on one (which is thereby cancelled).
CAN_GO_STALE = frozenset({*LIVE, Status.COMPLETED, Status.FAILED})
# The flow execution's statuses that its attempts decide (status.refresh_status).
DERIVED_FLOW_STATUSES = frozenset(set(FlowStatus) - {FlowStatus.QUEUED, FlowStatus.DELETED})


@dataclass(frozen=True)
class Move:
    name: str
    sources: frozenset[str | None]
    target: str
    by: str  # who makes it, in the product's words


def _move(name: str, sources: Iterable[str | None], target: str, by: str) -> Move:
    return Move(name, frozenset(sources), target, by)


# The engine's moves of a task execution.
QUEUE = _move("queue", [NEW], Status.QUEUED, "engine: its upstream tasks completed, or a retry")
AWAIT_PERSON = _move("await_person", [NEW], Status.RUNNING, "engine: a human task's attempt")
REUSE = _move("reuse", [NEW], Status.COMPLETED, "engine: early cutoff keeps the earlier result")
UNRESOLVABLE = _move("unresolvable", [NEW], Status.FAILED, "engine: its input does not resolve")
CLAIM = _move("claim", [Status.QUEUED], Status.RUNNING, "worker: takes the attempt, with a lease")
COMPLETE = _move("complete", [Status.RUNNING], Status.COMPLETED, "worker: the executor returned")
FAIL = _move("fail", [Status.RUNNING], Status.FAILED, "worker: the executor failed")
REAP = _move("reap", [Status.RUNNING], Status.FAILED, "reaper: the worker's lease expired")
GO_STALE = _move(
    "go_stale", CAN_GO_STALE, Status.STALE, "engine: a correction upstream or a re-execution"
)
CANCEL = _move("cancel", LIVE, Status.STALE, "engine: its flow execution was deleted")
RUN_PURE = _move(
    "run_pure", [NEW], Status.COMPLETED, "engine: a pure task run in the scheduling loop"
)
FAIL_PURE = _move(
    "fail_pure", [NEW], Status.FAILED, "engine: a pure task failed in the scheduling loop"
)
# Loops: a for_each over no items; an iteration whose item left (or loop ended); upgrades too.
EMPTY_LOOP = _move("empty_loop", [NEW], Status.COMPLETED, "engine: a for_each over no items")
RETIRE = _move(
    "retire", {*CAN_GO_STALE, Status.STALE}, Status.STALE, "engine: its item or task is gone"
)
HAND_BACK = _move(
    "hand_back",
    [Status.RUNNING],
    Status.QUEUED,
    "worker: it could not record the outcome it holds, or is unsure its claim landed",
)
# The engine's moves of a task execution: every Move defined above, in that order.
ENGINE_MOVES = tuple(value for value in dict(globals()).values() if isinstance(value, Move))

# People's moves of a task execution (API, admin, commands), from each status. NEW: creating
# an attempt (POST /task-executions). completed → completed is a corrected output; failed →
# completed a person supplying the right one; queued → completed only for a human task
# (HUMAN_COMPLETION); → deleted is a soft delete, and a deleted attempt stays deleted.
PERSON_MOVES: dict[str | None, frozenset[str]] = {
    NEW: frozenset(set(Status) - {Status.DELETED}),
    Status.QUEUED: frozenset({Status.RUNNING, Status.DELETED}),
    Status.RUNNING: frozenset({Status.COMPLETED, Status.FAILED, Status.DELETED}),
    Status.COMPLETED: frozenset({Status.COMPLETED, Status.STALE, Status.DELETED}),
    Status.FAILED: frozenset({Status.COMPLETED, Status.STALE, Status.DELETED}),
    Status.STALE: frozenset({Status.DELETED}),
    Status.DELETED: frozenset({Status.DELETED}),
}
HUMAN_COMPLETION = (Status.QUEUED, Status.COMPLETED)

# A flow execution's moves. Its status is derived from its attempts (status.refresh_status),
# except being created queued, deleted by a person, and a re-execution starting a new run.
FLOW_CREATE = _move("create", [NEW], FlowStatus.QUEUED, "a person or integration starts it")
FLOW_START = _move("start", [FlowStatus.QUEUED], FlowStatus.RUNNING, "worker: its first claim")
FLOW_RERUN = _move(
    "rerun", set(FlowStatus) - {FlowStatus.DELETED}, FlowStatus.RUNNING, "a re-execution"
)
FLOW_DELETE = _move("delete", set(FlowStatus), FlowStatus.DELETED, "a person (soft delete)")
# refresh_status: from any status but deleted to any derived one (never backwards in a run).
FLOW_DERIVE_SOURCES = frozenset(set(FlowStatus) - {FlowStatus.DELETED})

# A task output's moves. A person may create one in any status but deleted, change a live one
# to any status, and delete one (it stays deleted).
PUBLISH = _move("publish", [NEW], OutputStatus.COMPLETED, "engine: a result, or a correction")
OUTPUT_GO_STALE = _move(
    "output_go_stale", [OutputStatus.COMPLETED], OutputStatus.STALE, "engine: with its task"
)
RETIRE_OUTPUT = _move(
    "retire_output", set(OutputStatus) - {OutputStatus.DELETED}, OutputStatus.DELETED, "upgrade"
)


def person_may(current: str | None, requested: str, *, human_task: bool = False) -> bool:
    """May a person move a task execution from `current` (NEW: create it) to `requested`?"""
    if human_task and (current, requested) == HUMAN_COMPLETION:
        return True
    return requested in PERSON_MOVES.get(current, frozenset())


def check_person_move(current: str, requested: str, *, human_task: bool = False) -> None:
    if not person_may(current, requested, human_task=human_task):
        raise InvalidTransition(current, requested)


# Task executions ------------------------------------------------------------------------------


def new_attempt(move: Move, **fields: Any) -> TaskExecution:
    """An unsaved attempt created by `move` (one from NEW); the caller saves or bulk-creates it."""
    assert move.sources == {NEW}, move
    return TaskExecution(status=move.target, **fields)


def check_new_attempt_status(status: str) -> None:
    """May a person record an attempt (POST /task-executions) in `status`?"""
    if not person_may(NEW, status):
        raise InvalidInput.field("status", f"a task execution cannot be created as {status}")


def new_attempt_by_person(status: str, **fields: Any) -> TaskExecution:
    """An unsaved attempt a person records in `status`; becoming completed records when."""
    check_new_attempt_status(status)
    if status == Status.COMPLETED:
        fields["completed_at"] = timezone.now()
    return TaskExecution(status=status, **fields)


def move_by_person(
    attempt: TaskExecution, requested: str, *, human_task: bool, now: datetime
) -> None:
    """A person's move of a locked attempt; the caller saves it (with its other changes, as one
    history row). Becoming completed records when."""
    check_person_move(attempt.status, requested, human_task=human_task)
    if requested == Status.COMPLETED and attempt.status != requested:
        attempt.completed_at = now
    attempt.status = requested


def _soft_delete(record: TaskExecution | FlowExecution | TaskOutput, actor: str) -> bool:
    """A person's soft delete of a locked row (False if it was deleted already)."""
    if record.status == Status.DELETED:
        return False
    record.status = Status.DELETED
    record.modified_by = actor
    record.save(update_fields=["status", "modified_by", "updated_at"])
    return True


def delete_attempt(attempt: TaskExecution, *, actor: str) -> bool:
    """A person's soft delete of a locked attempt (a live one is thereby cancelled)."""
    return _soft_delete(attempt, actor)


def claim(attempt: TaskExecution, *, owner: str, expires: Expression, now: datetime) -> bool:
    """CLAIM, with this worker's lease (the loaded `attempt` follows)."""
    claimed = TaskExecution.objects.filter(pk=attempt.pk, status__in=CLAIM.sources).update(
        status=CLAIM.target, lease_owner=owner, lease_expires_at=expires, updated_at=now
    )
    if claimed:
        attempt.status = CLAIM.target
    return bool(claimed)


_CLAIMED_COLUMNS = ["id", "status", "task_name", "task_execution_idx", "iteration", "input"]
_CLAIMED_COLUMNS.append("started_by_correction_id")


def claim_many(
    attempt_ids: Iterable[uuid.UUID], *, owner: str, expires: datetime, now: datetime
) -> list[TaskExecution]:
    """CLAIM these attempts with this worker's lease in one UPDATE … RETURNING: those still
    queued, loaded with what running them needs (task, idx, input, starting correction)."""
    return bulksql.update_returning(
        TaskExecution,
        list(attempt_ids),
        where={"status": list(CLAIM.sources)},
        values={
            "status": CLAIM.target,
            "lease_owner": owner,
            "lease_expires_at": expires,
            "updated_at": now,
        },
        returning=_CLAIMED_COLUMNS,
    )


def ran_pure(attempt: TaskExecution, *, output: Any, error: Any, now: datetime) -> None:
    """RUN_PURE (no error) or FAIL_PURE: an attempt the planner built (QUEUE, not saved yet)
    ran in the scheduling loop; the caller bulk-creates it in this state."""
    assert attempt._state.adding, attempt
    assert attempt.status == QUEUE.target, attempt
    attempt.status = RUN_PURE.target if error is None else FAIL_PURE.target
    attempt.output, attempt.error = output, error
    attempt.completed_at = now if error is None else None


_LEASE_ENDED = {"lease_owner": "", "lease_expires_at": None}
_OUTCOME = ("status", "output", "error", "completed_at")


def record_claimed(
    outcomes: Iterable[tuple[TaskExecution, Any, Any]], *, now: datetime
) -> list[TaskExecution]:
    """COMPLETE (no error) or FAIL each (attempt, output, error) this transaction claimed
    (claim_many), their leases ending, in one statement. The loaded attempts follow."""
    rows, values = [], []
    for attempt, output, error in outcomes:
        attempt.status = COMPLETE.target if error is None else FAIL.target
        attempt.output, attempt.error = (output, None) if error is None else (None, error)
        attempt.completed_at = now if error is None else None
        attempt.updated_at = now
        attempt.lease_owner, attempt.lease_expires_at = "", None
        rows.append(attempt)
        values.append({"id": attempt.pk, **{f: getattr(attempt, f) for f in _OUTCOME}})
    bulksql.update_each(TaskExecution, values, same={"updated_at": now, **_LEASE_ENDED})
    return rows


def complete(attempt_id: uuid.UUID, *, output: Any, now: datetime) -> bool:
    """COMPLETE: the attempt's output, and its lease ends."""
    return bool(
        TaskExecution.objects.filter(pk=attempt_id, status__in=COMPLETE.sources).update(
            status=COMPLETE.target, output=output, completed_at=now, updated_at=now, **_LEASE_ENDED
        )
    )


def fail(attempt_id: uuid.UUID, *, error: Any, now: datetime) -> bool:
    """FAIL: the attempt's error, and its lease ends."""
    return bool(
        TaskExecution.objects.filter(pk=attempt_id, status__in=FAIL.sources).update(
            status=FAIL.target, error=error, updated_at=now, **_LEASE_ENDED
        )
    )


def retire(
    attempt_ids: Iterable[uuid.UUID], *, history: str | None = None, **cause_fields: Any
) -> int:
    """RETIRE these iterations, or an upgrade's removed tasks' attempts (set-based; a live one
    is thereby cancelled); with `history` (a reason), with their history rows."""
    rows = TaskExecution.objects.filter(pk__any_of=list(attempt_ids), status__in=RETIRE.sources)
    values = {"status": RETIRE.target, **cause_fields}
    return update_with_history(rows, values, reason=history) if history else rows.update(**values)


def reap(attempt_id: uuid.UUID, *, error: Any, now: datetime) -> bool:
    """REAP: only while the lease is still expired (a heartbeat that renewed it since belongs
    to a worker that is alive, and wins)."""
    return bool(
        TaskExecution.objects.filter(
            pk=attempt_id, status__in=REAP.sources, lease_expires_at__lt=Now()
        ).update(status=REAP.target, error=error, updated_at=now)
    )


def hand_back(attempt_id: uuid.UUID, *, owner: str, now: datetime) -> bool:
    """HAND_BACK: only while `owner` still holds it; its lease ends."""
    return bool(
        TaskExecution.objects.filter(
            pk=attempt_id, status__in=HAND_BACK.sources, lease_owner=owner
        ).update(status=HAND_BACK.target, updated_at=now, **_LEASE_ENDED)
    )


def go_stale(
    attempt_ids: Iterable[uuid.UUID], *, history: str | None = None, **cause_fields: Any
) -> int:
    """GO_STALE for these attempts, with the columns of their stale cause. Set-based: one
    statement, which with `history` (a reason) also records the moved attempts' history rows."""
    rows = TaskExecution.objects.filter(pk__any_of=list(attempt_ids), status__in=GO_STALE.sources)
    values = {"status": GO_STALE.target, **cause_fields}
    return update_with_history(rows, values, reason=history) if history else rows.update(**values)


def cancel(attempt_ids: Iterable[uuid.UUID], **cause_fields: Any) -> int:
    """CANCEL these live attempts, with the columns of their stale cause. Set-based."""
    return TaskExecution.objects.filter(pk__in=list(attempt_ids), status__in=CANCEL.sources).update(
        status=CANCEL.target, **cause_fields
    )


# Flow executions ------------------------------------------------------------------------------


def start_flow(flow_execution_id: uuid.UUID, *, now: datetime) -> bool:
    """FLOW_START: the first attempt of a queued flow execution was claimed."""
    return bool(
        FlowExecution.objects.filter(pk=flow_execution_id, status__in=FLOW_START.sources).update(
            status=FLOW_START.target, updated_at=now
        )
    )


def derive_flow(flow_execution: FlowExecution, status: str) -> None:
    """The status its attempts give it (status.refresh_status decides which)."""
    assert status in DERIVED_FLOW_STATUSES, status
    FlowExecution.objects.filter(pk=flow_execution.pk, status__in=FLOW_DERIVE_SOURCES).update(
        status=status, updated_at=timezone.now()
    )
    flow_execution.status = status


def rerun_flow(flow_execution: FlowExecution, *, actor: str) -> None:
    """FLOW_RERUN: a re-execution starts a new run."""
    FlowExecution.objects.filter(pk=flow_execution.pk, status__in=FLOW_RERUN.sources).update(
        status=FLOW_RERUN.target, modified_by=actor, updated_at=timezone.now()
    )
    flow_execution.status = FLOW_RERUN.target


def delete_flow(flow_execution: FlowExecution, *, actor: str) -> bool:
    """FLOW_DELETE on a locked flow execution."""
    return _soft_delete(flow_execution, actor)


# Task outputs ---------------------------------------------------------------------------------


def new_output(**fields: Any) -> TaskOutput:
    """An unsaved output PUBLISHed as its task's current result."""
    return TaskOutput(status=PUBLISH.target, **fields)


def new_output_by_person(status: str, **fields: Any) -> TaskOutput:
    """An unsaved output a person records (POST /task-outputs) in `status`."""
    if status == OutputStatus.DELETED:
        raise InvalidInput.field("status", "a task output cannot be created as deleted")
    return TaskOutput(status=status, **fields)


def move_output_by_person(task_output: TaskOutput, requested: str) -> None:
    """A person's change of a locked output's status; the caller saves it. A deleted output
    stays deleted."""
    if task_output.status == OutputStatus.DELETED and requested != task_output.status:
        raise InvalidTransition(task_output.status, requested)
    task_output.status = requested


def delete_output(task_output: TaskOutput, *, actor: str) -> bool:
    """A person's soft delete of a locked output."""
    return _soft_delete(task_output, actor)


def outputs_go_stale(
    output_ids: Iterable[Any], *, actor: str, now: datetime, history: str | None = None
) -> int:
    """OUTPUT_GO_STALE for these outputs. Set-based: one statement, which with `history` (a
    reason) also records the moved outputs' history rows."""
    sources = OUTPUT_GO_STALE.sources
    rows = TaskOutput.objects.filter(pk__any_of=list(output_ids), status__in=sources)
    values = {"status": OUTPUT_GO_STALE.target, "modified_by": actor, "updated_at": now}
    return update_with_history(rows, values, reason=history) if history else rows.update(**values)


def retire_outputs(task_outputs: Any, *, actor: str, now: datetime, history: str) -> int:
    """RETIRE_OUTPUT: outputs (a queryset) of tasks an upgrade removed, soft-deleted with
    history rows saying why."""
    rows = task_outputs.filter(status__in=RETIRE_OUTPUT.sources)
    values = {"status": RETIRE_OUTPUT.target, "modified_by": actor, "updated_at": now}
    return update_with_history(rows, values, reason=history)
