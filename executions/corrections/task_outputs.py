"""Corrections through task outputs: POST, PUT/PATCH and DELETE /task-outputs. A task's current
output is what its dependents read, so a change to it outdates what they computed: it is
recorded as a Correction and their latest attempts go stale (nothing runs again)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import transaction

from executions import locking, selectors, transitions
from executions.corrections import records
from executions.engine import lifecycle
from executions.models import Correction, FlowExecution
from flowplatform.canonical import same_json
from flowplatform.exceptions import Conflict
from flowplatform.history import ensure_baseline
from flowplatform.records import apply_changes, lock_for_update
from flowplatform.tenancy.models import Organization
from outputs.models import TaskOutput

TASK_OUTPUT_MUTABLE_FIELDS = ("output", "summary", "tags", "status")
# Of those, what is saved as it is sent (the status moves through executions.transitions).
_SAVED_AS_SENT = tuple(name for name in TASK_OUTPUT_MUTABLE_FIELDS if name != "status")


@transaction.atomic
def create_task_output(
    organization: Organization,
    *,
    flow_execution_id: uuid.UUID,
    task_name: str,
    summary: dict[str, Any],
    output: Any = None,
    tags: Any = None,
    status: str = TaskOutput.Status.QUEUED,
    actor: str,
    reason: str | None = None,
    source: str = Correction.Source.API,
) -> TaskOutput:
    """A new output of a task: it becomes the task's current output. When it supersedes one
    (or outdates what dependents computed) it is a correction: recorded, dependents stale."""
    flow_execution = locking.flow_execution_for_write(organization, flow_execution_id)
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise Conflict("the flow execution is deleted; it takes no new task outputs")
    task_output = transitions.new_output_by_person(
        status,
        organization=organization,
        flow_execution=flow_execution,
        task_name=task_name,
        output=output,
        summary=summary,
        tags=tags,
        flow_version=flow_execution.flow_version.version,
        modified_by=actor,
    )
    before = selectors.current_task_output(flow_execution, task_name)
    task_output._change_reason = records.history_reason(reason, source)
    task_output.save(force_insert=True)
    # Dependents read this task's current output: whatever they computed before is outdated.
    _record(
        flow_execution,
        task_name,
        Correction.Operation.TASK_OUTPUT_CREATE,
        task_output,
        before=before,
        actor=actor,
        reason=reason,
        source=source,
        only_if_outdating=before is None,
    )
    return task_output


@transaction.atomic
def update_task_output(
    task_output: TaskOutput,
    *,
    changes: dict[str, Any],
    identity: dict[str, Any],
    expected_updated_at: datetime | None,
    actor: str,
    reason: str | None = None,
    source: str = Correction.Source.API,
) -> TaskOutput:
    """A person edits an output; a change of its content or status is a correction."""
    flow_execution = locking.flow_execution_for_write(
        task_output.organization, task_output.flow_execution_id
    )
    current = selectors.current_task_output(flow_execution, task_output.task_name)
    ensure_baseline(TaskOutput, task_output.pk)
    locked = lock_for_update(
        task_output, identity=identity, expected_updated_at=expected_updated_at
    )
    previous_status = locked.status
    locked._change_reason = records.history_reason(reason, source)
    if "status" in changes:
        transitions.move_output_by_person(locked, changes["status"])
    before = apply_changes(
        locked,
        mutable_fields=_SAVED_AS_SENT,
        changes={k: v for k, v in changes.items() if k != "status"},
        actor=actor,
    )
    if locked.status != previous_status or (
        "output" in before and not same_json(before["output"], locked.output)
    ):
        _record(
            flow_execution,
            locked.task_name,
            Correction.Operation.TASK_OUTPUT_UPDATE,
            locked,
            before=current,
            actor=actor,
            reason=reason,
            source=source,
        )
    return locked


@transaction.atomic
def delete_task_output(
    task_output: TaskOutput,
    *,
    actor: str,
    reason: str | None = None,
    source: str = Correction.Source.API,
) -> TaskOutput:
    """Soft delete; the task's previous output (if any) becomes current again, so what its
    dependents computed is outdated."""
    flow_execution = locking.flow_execution_for_write(
        task_output.organization, task_output.flow_execution_id
    )
    task_output = TaskOutput.objects.select_for_update().get(pk=task_output.pk)
    if task_output.status != TaskOutput.Status.DELETED:
        current = selectors.current_task_output(flow_execution, task_output.task_name)
        ensure_baseline(TaskOutput, task_output.pk)
        task_output._change_reason = records.history_reason(reason, source)
        transitions.delete_output(task_output, actor=actor)
        _record(
            flow_execution,
            task_output.task_name,
            Correction.Operation.TASK_OUTPUT_DELETE,
            task_output,
            before=current,
            actor=actor,
            reason=reason,
            source=source,
        )
    return task_output


def _record(
    flow_execution: FlowExecution,
    task_name: str,
    operation: str,
    task_output: TaskOutput,
    *,
    before: TaskOutput | None,
    actor: str,
    reason: str | None,
    source: str,
    only_if_outdating: bool = False,
) -> Correction | None:
    """Record a change to a task's outputs as a Correction and mark what it outdates stale.

    `before` is the task's current output before the change. With `only_if_outdating` (a new
    output of a task that had none), the change is a correction only if it made something
    stale (or took over earlier stale causes).
    """
    latest = selectors.latest_attempt(flow_execution, task_name)
    correction = records.open_correction(
        flow_execution,
        task_name=task_name,
        task_execution_id=None if latest is None else latest.id,
        task_output=task_output,
        operation=operation,
        source=source,
        actor=actor,
        reason=reason,
        before=records.output_state(before),
    )
    marked = lifecycle.outdate_dependents(
        flow_execution, task_name, actor=actor, correction_id=correction.pk
    )
    if only_if_outdating and not marked.stale and not marked.moved:
        records.discard_correction(correction)
        return None
    return records.close_correction(
        correction,
        after=records.output_state(selectors.current_task_output(flow_execution, task_name)),
        stale_tasks=marked.stale,
        task_output=task_output,
        stale_iterations=marked.iterations,
    )
