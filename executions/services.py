"""Writes to flow executions and task executions. Every edge (API, admin, commands) calls these."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from executions import engine
from executions.executors import get_executor
from executions.models import (
    Correction,
    FlowExecution,
    StaleReason,
    TaskExecution,
    allowed_transition,
)
from flowplatform.canonical import fingerprint, same_json
from flowplatform.exceptions import (
    FLOW_EXECUTION_NOT_FOUND,
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
)
from flowplatform.history import ensure_baseline, record_history
from flowplatform.records import apply_changes, lock_for_update
from flowplatform.tenancy.models import Organization
from flows.definitions import spec_for
from flows.expressions import ExpressionError
from flows.models import Flow, FlowVersion
from outputs.models import TaskOutput

# Fields of a task execution a client may change; everything else is identity or server-set.
TASK_EXECUTION_MUTABLE_FIELDS = ("status", "input", "output", "error")


def get_flow_execution_for_write(
    organization: Organization, flow_execution_id: uuid.UUID | str
) -> FlowExecution:
    """The organization's flow execution, row-locked until the transaction ends.

    Locking the flow execution first is the lock order for every write to its tasks, so
    concurrent changes to one flow execution serialize instead of deadlocking.
    """
    flow_execution = (
        engine.locked_flow_executions()
        .filter(organization=organization, pk=flow_execution_id)
        .first()
    )
    if flow_execution is None:
        raise NotFound(FLOW_EXECUTION_NOT_FOUND)
    return flow_execution


@transaction.atomic
def create_flow_execution(
    organization: Organization,
    flow: Flow,
    *,
    input: Any = None,
    version: int | None = None,
    actor: str = "system",
) -> FlowExecution:
    """A queued flow execution pinned to `version` of `flow` (the latest by default)."""
    if flow.organization_id != organization.id:
        raise NotFound("Flow not found")
    if flow.deleted_at is not None:
        raise Conflict("the flow is deleted; restore it or create a new one")
    if version is None:
        flow_version = flow.current_version
    else:
        flow_version = FlowVersion.objects.filter(flow=flow, version=version).first()
        if flow_version is None:
            raise InvalidInput.field("flow_version", f"the flow has no version {version}")
    return FlowExecution.objects.create(
        organization=organization,
        flow=flow,
        flow_version=flow_version,
        input=input,
        modified_by=actor,
    )


def start_flow_execution(
    organization: Organization,
    *,
    flow_id: uuid.UUID,
    input: Any = None,
    version: int | None = None,
    actor: str,
) -> FlowExecution:
    """Create a flow execution pinned to `version` (latest by default) and start it.

    Its first jobs are enqueued when the transaction commits; with the embedded backend the
    flow has run (to completion, a failure, or a human task) when this returns, and the
    returned row says so.
    """
    with transaction.atomic():
        flow = (
            Flow.objects.filter(organization=organization, pk=flow_id)
            .select_related("current_version")
            .first()
        )
        if flow is None:
            raise NotFound("Flow not found")
        flow_execution = create_flow_execution(
            organization, flow, input=input, version=version, actor=actor
        )
        engine.start(flow_execution)
    flow_execution.refresh_from_db()
    return flow_execution


def reexecute_flow_execution(
    flow_execution: FlowExecution,
    *,
    actor: str,
    only_stale: bool = False,
    task: str | None = None,
) -> FlowExecution:
    """POST /flow-executions/{id}/execute[?only=stale]: every task, only the stale ones, or
    (`task`) one task and its dependents runs again; earlier attempts are kept. Returns the
    flow execution as it is once the transaction committed (embedded jobs have run)."""
    start_reexecution(flow_execution, actor=actor, only_stale=only_stale, task=task)
    flow_execution.refresh_from_db()
    return flow_execution


def start_reexecution(
    flow_execution: FlowExecution,
    *,
    actor: str,
    only_stale: bool = False,
    task: str | None = None,
) -> list[TaskExecution]:
    """The re-execution itself: the attempts it created, in dependency order (their jobs run
    after commit)."""
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise Conflict("the flow execution is deleted")
    if task is not None and task not in spec_for(flow_execution.flow_version).tasks:
        raise InvalidInput.field(
            "task",
            f"'{task}' is not a task of version {flow_execution.flow_version.version} of this flow",
            "unknown_task",
        )
    return engine.reexecute(flow_execution, actor=actor, only_stale=only_stale, task=task)


@transaction.atomic
def delete_flow_execution(flow_execution: FlowExecution, *, actor: str) -> FlowExecution:
    """Soft delete: status `deleted`, hidden from lists, kept for the audit trail. Its queued
    and running attempts are cancelled (made stale), so nothing keeps working on it."""
    flow_execution = engine.lock_flow_execution(flow_execution.pk)
    live = list(
        TaskExecution.objects.filter(
            flow_execution=flow_execution, status__in=engine.LIVE
        ).values_list("pk", flat=True)
    )
    now = timezone.now()
    TaskExecution.objects.filter(pk__in=live).update(
        status=TaskExecution.Status.STALE,
        modified_by=actor,
        updated_at=now,
        **engine.StaleCause(StaleReason.FLOW_EXECUTION_DELETED).fields(actor, now),
    )
    record_history(TaskExecution, live, reason="stale: flow execution deleted")
    if flow_execution.status != FlowExecution.Status.DELETED:
        flow_execution.status = FlowExecution.Status.DELETED
        flow_execution.modified_by = actor
        flow_execution.save(update_fields=["status", "modified_by", "updated_at"])
    return flow_execution


def _input_for_new_attempt(
    flow_execution: FlowExecution, spec: Any, task_name: str, supplied: Any
) -> Any:
    """A queued attempt will run: its upstream tasks must be completed, and its input is what
    its expressions resolve to now (sent as-is or omitted; anything else would break freshness)."""
    upstream = spec.tasks[task_name].upstream
    latest = engine.latest_attempts(flow_execution, upstream)
    waiting = [
        n
        for n in upstream
        if getattr(latest.get(n), "status", None) != TaskExecution.Status.COMPLETED
    ]
    if waiting:
        raise InvalidInput.field(
            "status",
            f"'{task_name}' cannot be queued to run: upstream tasks not completed: "
            + ", ".join(waiting),
            "upstream_not_completed",
        )
    try:
        expected = engine.resolve_task_input(
            spec, task_name, flow_execution.input, engine.current_outputs(flow_execution, upstream)
        )
    except ExpressionError as exc:
        raise InvalidInput.field("input", str(exc), "invalid_expression") from None
    if supplied is not None and supplied != expected:
        raise InvalidInput.field(
            "input",
            "a queued attempt runs on the input its expressions resolve to; omit it or send "
            f"exactly {expected!r}",
            "immutable",
        )
    return expected


@transaction.atomic
def create_task_execution(
    organization: Organization,
    *,
    flow_execution_id: uuid.UUID,
    task_name: str,
    task_execution_idx: int | None = None,
    status: str = TaskExecution.Status.QUEUED,
    input: Any = None,
    output: Any = None,
    error: Any = None,
    actor: str,
) -> TaskExecution:
    """Record an attempt. Without an idx, it becomes the task's next attempt (max + 1, or 0)."""
    flow_execution = get_flow_execution_for_write(organization, flow_execution_id)
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise Conflict("the flow execution is deleted; it takes no new task executions")
    if status == TaskExecution.Status.DELETED:
        raise InvalidInput.field("status", "a task execution cannot be created as deleted")
    spec = spec_for(flow_execution.flow_version)
    if task_name not in spec.tasks:
        raise InvalidInput.field(
            "task_name",
            f"'{task_name}' is not a task of version {flow_execution.flow_version.version} of "
            "this flow",
            "unknown_task",
        )
    runs = (
        status == TaskExecution.Status.QUEUED
        and not get_executor(spec.tasks[task_name].type).waits_for_person
    )
    if runs:
        input = _input_for_new_attempt(flow_execution, spec, task_name, input)
    if task_execution_idx is None:
        latest = flow_execution.task_executions.filter(task_name=task_name).aggregate(
            latest=Max("task_execution_idx")
        )["latest"]
        task_execution_idx = 0 if latest is None else latest + 1
    try:
        with transaction.atomic():
            task_execution = TaskExecution.objects.create(
                organization=organization,
                flow_execution=flow_execution,
                task_name=task_name,
                task_execution_idx=task_execution_idx,
                status=status,
                input=input,
                output=output,
                error=error,
                modified_by=actor,
                completed_at=timezone.now() if status == TaskExecution.Status.COMPLETED else None,
            )
    except IntegrityError:
        raise Conflict(
            f"task '{task_name}' already has an attempt with task_execution_idx "
            f"{task_execution_idx} in this flow execution",
            {"task_name": task_name, "task_execution_idx": task_execution_idx},
        ) from None
    if runs:
        # a queued attempt is one to run
        engine.enqueue_after_commit(flow_execution.organization_id, [task_execution.id])
    engine.refresh_status(flow_execution, spec)
    return task_execution


@dataclass(frozen=True)
class CorrectionResult:
    task_execution: TaskExecution
    stale_tasks: list[str] = field(default_factory=list)  # dependency order
    started: list[TaskExecution] = field(default_factory=list)  # attempts created now
    dry_run: bool = False
    preview_token: str | None = None  # what the request saw; see correction_fingerprint
    correction: Correction | None = None


class PreviewOutdated(Conflict):
    """The state a preview token was issued for has changed: nothing was applied."""

    code = "preview_outdated"

    def __init__(self) -> None:
        super().__init__(
            "the flow execution changed since the preview this preview_token was issued for, or "
            "this request asks for something else; nothing was applied. Review the fresh preview "
            "(in the API: error.details.preview) and send its preview_token to apply it"
        )


def _check_current_attempt(task_execution: TaskExecution) -> None:
    latest = (
        TaskExecution.objects.filter(
            flow_execution_id=task_execution.flow_execution_id, task_name=task_execution.task_name
        )
        .order_by("-task_execution_idx")
        .values_list("id", "task_execution_idx")
        .first()
    )
    if latest is not None and latest[0] != task_execution.pk:
        raise InvalidInput.field(
            "task_execution_idx",
            f"attempt {task_execution.task_execution_idx} of task '{task_execution.task_name}' "
            f"is not its current attempt; correct the current one: task_execution_idx "
            f"{latest[1]}, id {latest[0]}",
            "not_current_attempt",
        )


def current_task_output(flow_execution: FlowExecution, task_name: str) -> TaskOutput | None:
    return (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name=task_name)
        .oldest_to_current()
        .only("id", "output", "summary", "status", "tags")
        .last()
    )


def correction_fingerprint(
    flow_execution: FlowExecution,
    spec: Any,
    attempt: TaskExecution,
    result: dict[str, Any],
    execute_flow: bool,
) -> str:
    """The preview token: a digest of what a correction would start from and what it asks.

    It covers the corrected attempt, the tasks downstream of it and every task those read from
    (what decides their stale marking, their readiness and their inputs): each one's latest
    attempt (id, status, `updated_at`) and current output (id, status, `updated_at`); and the
    requested result (status, output, error) with `execute_flow`. Any change to those between
    a dry run and the PUT that carries its token changes the digest. Two queries.
    """
    affected: set[str] = {attempt.task_name}
    if attempt.task_name in spec.tasks:
        downstream = spec.dag.descendants(attempt.task_name)
        affected |= downstream.union(*(spec.tasks[t].upstream for t in downstream))
    attempts: dict[str, list[str]] = {}
    for name, pk, status, updated_at in (
        TaskExecution.objects.filter(flow_execution=flow_execution, task_name__in=affected)
        .order_by("task_name", "task_execution_idx")
        .values_list("task_name", "id", "status", "updated_at")
    ):
        attempts[name] = [str(pk), status, updated_at.isoformat()]
    outputs: dict[str, list[str]] = {}
    for name, pk, status, updated_at in (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name__in=affected)
        .oldest_to_current()
        .values_list("task_name", "id", "status", "updated_at")
    ):
        outputs[name] = [str(pk), status, updated_at.isoformat()]
    return fingerprint(
        {
            "attempts": attempts,
            "outputs": outputs,
            "result": result,
            "execute_flow": execute_flow,
        }
    )


def attempt_state(attempt: TaskExecution, summary: dict | None = None) -> dict[str, Any]:
    """An attempt as a correction records it (before and after); with the flow execution's
    `task_outputs_summary`, also the task's entry in it."""
    state = {name: getattr(attempt, name) for name in ("status", "output", "error")}
    if summary is not None:
        state["summary"] = summary.get("tasks", {}).get(attempt.task_name)
    return state


@transaction.atomic
def correct_task_execution(
    task_execution: TaskExecution,
    *,
    changes: dict[str, Any],
    identity: dict[str, Any],
    expected_updated_at: datetime | None,
    actor: str,
    execute_flow: bool = False,
    reason: str | None = None,
    source: str = Correction.Source.API,
    preview_token: str | None = None,
    issue_token: bool = False,
) -> CorrectionResult:
    """PUT/PATCH /task-executions/{id}: the correction path (DESIGN.md), in one transaction.

    1. validate: identity fields unchanged, the optimistic lock, the status transition, that
       this is the task's current attempt and, with `preview_token`, that nothing the preview
       saw has changed since (else PreviewOutdated, 409);
    2. save it, with `modified_by` = the actor, and record a Correction (who, why, before);
    3. when it ends completed with an output other than the task's current one: publish it as
       the task's current TaskOutput (signals recompute the summaries), mark every transitive
       dependent's latest attempt stale (caused by this correction) and with `execute_flow`
       start the stale tasks again (jobs enqueued after commit; early cutoff reuses what did
       not change);
    4. complete the Correction: after, the stale set; its attempts point back to it.
    The flow execution row is locked first, so corrections to one flow execution serialize.
    """
    flow_execution = get_flow_execution_for_write(
        task_execution.organization, task_execution.flow_execution_id
    )
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise Conflict("the flow execution is deleted; its task executions cannot change")
    spec = spec_for(flow_execution.flow_version)
    locked = lock_for_update(
        task_execution, identity=identity, expected_updated_at=expected_updated_at
    )
    requested = changes.get("status", locked.status)
    if requested != TaskExecution.Status.DELETED:
        _check_current_attempt(locked)
    if "input" in changes and not same_json(changes["input"], locked.input):
        # The input is what the task's expressions resolved to from its upstream outputs;
        # editing it would make the attempt claim it ran on something it did not.
        raise InvalidInput.field(
            "input",
            "is resolved from the flow input and upstream outputs and cannot be edited; "
            "correct the upstream task's output instead",
            "immutable",
        )
    task = spec.tasks.get(locked.task_name)
    human = task is not None and get_executor(task.type).waits_for_person
    if not allowed_transition(locked.status, requested, human_task=human):
        raise InvalidTransition(locked.status, requested)
    before = attempt_state(locked)
    result = {**before, **{k: v for k, v in changes.items() if k in before}}
    current_output = current_task_output(flow_execution, locked.task_name)
    token = None
    if issue_token or preview_token is not None:
        token = correction_fingerprint(flow_execution, spec, locked, result, execute_flow)
        if preview_token is not None and preview_token != token:
            raise PreviewOutdated()
    # Finishing pending work (a person completing a waiting human task) carries the flow on,
    # as a worker finishing an attempt does; re-running what a changed output made stale is
    # the caller's choice (execute_flow) only when an already finished output is corrected.
    finishing_pending_work = locked.status in (
        TaskExecution.Status.QUEUED,
        TaskExecution.Status.RUNNING,
    )
    execute_flow = execute_flow or finishing_pending_work
    correction = Correction.objects.create(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=locked.task_name,
        task_execution=locked,
        task_output=current_output,
        source=source,
        operation=Correction.Operation.TASK_EXECUTION_UPDATE,
        modified_by=actor,
        reason=reason or "",
        before=attempt_state(locked, flow_execution.task_outputs_summary),
        execute_flow=execute_flow,
    )
    now = timezone.now()
    if requested == TaskExecution.Status.COMPLETED and locked.status != requested:
        locked.completed_at = now
    elif requested == TaskExecution.Status.STALE and locked.status != requested:
        # A person says this task's own result is wrong: it is its own stale cause.
        cause = engine.StaleCause(StaleReason.CORRECTION, correction.pk, locked.task_name)
        for name, value in cause.fields(actor, now).items():
            setattr(locked, name, value)
    ensure_baseline(TaskExecution, locked.pk)  # so its history shows what this changed
    apply_changes(
        locked, mutable_fields=TASK_EXECUTION_MUTABLE_FIELDS, changes=changes, actor=actor
    )
    task_execution = locked
    unchanged_output = (
        locked.status == before["status"] == TaskExecution.Status.COMPLETED
        and current_output is not None
        and same_json(current_output.output, locked.output)
    )
    if task_execution.status != TaskExecution.Status.COMPLETED or task is None:
        engine.refresh_status(flow_execution, spec)
        propagation = engine.Propagation(stale_tasks=[], started=[])
    elif unchanged_output:
        # The task's current output stays what its dependents read: nothing is outdated.
        propagation = engine.Propagation(stale_tasks=[], started=[])
    else:
        propagation = engine.propagate_new_output(
            flow_execution,
            spec,
            task_execution.task_name,
            task_execution.output,
            actor=actor,
            execute_flow=execute_flow,
            correction_id=correction.pk,
        )
        correction.task_output = current_task_output(flow_execution, locked.task_name)
    flow_execution.refresh_from_db(fields=["task_outputs_summary"])
    correction.after = attempt_state(locked, flow_execution.task_outputs_summary)
    correction.stale_tasks = propagation.stale_tasks
    if locked.stale_correction_id == correction.pk:
        correction.stale_tasks = [locked.task_name]  # a person marked this task itself stale
    correction.save(update_fields=["task_output", "after", "stale_tasks"])
    return CorrectionResult(
        task_execution,
        propagation.stale_tasks,
        propagation.started,
        preview_token=token,
        correction=correction,
    )


def preview_correction(task_execution: TaskExecution, **kwargs: Any) -> CorrectionResult:
    """`dry_run`: the same correction, computed in a transaction that is rolled back.

    Nothing is written and no job is enqueued (on-commit hooks of a rolled-back transaction are
    dropped); the answer shows the record as it would be, with its stored `updated_at`, and
    the preview token that binds a later PUT to what this preview saw.
    """
    stored_updated_at = task_execution.updated_at
    with transaction.atomic():
        result = correct_task_execution(task_execution, issue_token=True, **kwargs)
        transaction.set_rollback(True)
    result.task_execution.updated_at = stored_updated_at
    return replace(result, dry_run=True, correction=None)


@transaction.atomic
def delete_task_execution(task_execution: TaskExecution, *, actor: str) -> TaskExecution:
    """Soft delete: the attempt stays, with status `deleted`, hidden from lists. A queued or
    running one is thereby cancelled; the flow execution's status follows."""
    flow_execution = engine.lock_flow_execution(task_execution.flow_execution_id)
    task_execution = TaskExecution.objects.select_for_update().get(pk=task_execution.pk)
    if task_execution.status != TaskExecution.Status.DELETED:
        task_execution.status = TaskExecution.Status.DELETED
        task_execution.modified_by = actor
        task_execution.save(update_fields=["status", "modified_by", "updated_at"])
        engine.refresh_status(flow_execution, spec_for(flow_execution.flow_version))
    return task_execution
