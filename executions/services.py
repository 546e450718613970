"""Use cases of flow executions and task executions other than corrections (those are in
executions.corrections): create and start, re-execute, record an attempt, delete. Every edge
(API, admin, commands) calls these; the engine's entry points do the work."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, transaction

from executions import jobs, locking, selectors, transitions
from executions.engine import lifecycle, staleness
from executions.engine import status as flow_status
from executions.executors import get_executor
from executions.models import FlowExecution, TaskExecution
from flowplatform.exceptions import Conflict, InvalidInput, NotFound
from flowplatform.tenancy.models import Organization
from flows.definitions import FlowSpec, spec_for
from flows.expressions import ExpressionError
from flows.models import Flow, FlowVersion


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
        lifecycle.start(flow_execution)
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
    return lifecycle.reexecute(flow_execution, actor=actor, only_stale=only_stale, task=task)


def outstanding_tasks(flow_execution: FlowExecution) -> list[str]:
    """The tasks that will still run (their attempts now, or once their upstream tasks
    complete), in dependency order: what a re-execution will run in all, not only its first
    attempts."""
    spec = spec_for(flow_execution.flow_version)
    return flow_status.outstanding(spec, selectors.latest_statuses(flow_execution, spec.tasks))


@transaction.atomic
def delete_flow_execution(flow_execution: FlowExecution, *, actor: str) -> FlowExecution:
    """Soft delete: status `deleted`, hidden from lists, kept for the audit trail. Its queued
    and running attempts are cancelled (made stale), so nothing keeps working on it."""
    flow_execution = locking.lock_flow_execution(flow_execution.pk)
    staleness.cancel_live(flow_execution, actor=actor)
    transitions.delete_flow(flow_execution, actor=actor)
    return flow_execution


def _input_for_new_attempt(
    flow_execution: FlowExecution, spec: FlowSpec, task_name: str, supplied: Any
) -> Any:
    """A queued attempt will run: its upstream tasks must be completed, and its input is what
    its expressions resolve to now (sent as-is or omitted; anything else would break freshness)."""
    upstream = spec.tasks[task_name].upstream
    latest = selectors.latest_attempts(flow_execution, upstream)
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
        expected = selectors.resolve_task_input(
            spec,
            task_name,
            flow_execution.input,
            selectors.current_outputs(flow_execution, upstream),
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
    flow_execution = locking.flow_execution_for_write(organization, flow_execution_id)
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise Conflict("the flow execution is deleted; it takes no new task executions")
    transitions.check_new_attempt_status(status)
    spec = spec_for(flow_execution.flow_version)
    if task_name not in spec.tasks:
        raise InvalidInput.field(
            "task_name",
            f"'{task_name}' is not a task of version {flow_execution.flow_version.version} of "
            "this flow",
            "unknown_task",
        )
    if spec.tasks[task_name].loop:
        raise InvalidInput.field(
            "task_name",
            f"'{task_name}' is a looped task: the engine creates its iterations; correct one "
            "with PUT /task-executions/{id}, or re-execute the task",
            "looped_task",
        )
    runs = (
        status == TaskExecution.Status.QUEUED
        and not get_executor(spec.tasks[task_name].type).waits_for_person
    )
    if runs:
        input = _input_for_new_attempt(flow_execution, spec, task_name, input)
    if task_execution_idx is None:
        latest = selectors.latest_attempt(flow_execution, task_name)
        task_execution_idx = 0 if latest is None else latest.idx + 1
    task_execution = transitions.new_attempt_by_person(
        status,
        organization=organization,
        flow_execution=flow_execution,
        task_name=task_name,
        task_execution_idx=task_execution_idx,
        input=input,
        output=output,
        error=error,
        modified_by=actor,
    )
    try:
        with transaction.atomic():
            task_execution.save(force_insert=True)
    except IntegrityError:
        raise Conflict(
            f"task '{task_name}' already has an attempt with task_execution_idx "
            f"{task_execution_idx} in this flow execution",
            {"task_name": task_name, "task_execution_idx": task_execution_idx},
        ) from None
    if runs:
        # a queued attempt is one to run
        jobs.enqueue_after_commit(flow_execution.organization_id, [task_execution.id])
    lifecycle.settle(flow_execution, spec)
    return task_execution


@transaction.atomic
def delete_task_execution(task_execution: TaskExecution, *, actor: str) -> TaskExecution:
    """Soft delete: the attempt stays, with status `deleted`, hidden from lists. A queued or
    running one is thereby cancelled; the flow execution's status follows."""
    flow_execution = locking.lock_flow_execution(task_execution.flow_execution_id)
    task_execution = TaskExecution.objects.select_for_update().get(pk=task_execution.pk)
    if transitions.delete_attempt(task_execution, actor=actor):
        lifecycle.settle(flow_execution)
    return task_execution
