"""Writes to task outputs, and the summary each flow execution derives from its outputs."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F, Func, JSONField, OuterRef, Subquery, Value
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from executions.engine import Marked
from executions.models import Correction, FlowExecution, TaskExecution
from executions.services import current_task_output, get_flow_execution_for_write
from flowplatform.canonical import same_json
from flowplatform.exceptions import Conflict, InvalidInput
from flowplatform.history import ensure_baseline
from flowplatform.records import apply_update
from flowplatform.tenancy.models import Organization
from outputs.models import TaskOutput


def mark_dependents_stale(
    flow_execution: FlowExecution, task_name: str, *, actor: str, correction: Correction
) -> Marked:
    from executions import engine
    from executions.models import StaleReason
    from flows.definitions import spec_for

    spec = spec_for(flow_execution.flow_version)
    if task_name not in spec.tasks:
        return Marked([], [])
    cause = engine.StaleCause(StaleReason.CORRECTION, correction.pk, task_name)
    marked = engine.mark_stale(
        flow_execution, spec, spec.dag.descendants(task_name), actor=actor, cause=cause
    )
    if marked.stale:
        engine.refresh_status(flow_execution, spec)
    return marked


def output_state(task_output: TaskOutput | None) -> dict[str, Any] | None:
    """A task output as a correction records it (before and after)."""
    if task_output is None:
        return None
    return {
        "task_output_id": str(task_output.pk),
        "status": task_output.status,
        "output": task_output.output,
        "summary": task_output.summary,
        "tags": task_output.tags,
    }


def _correct_output(
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
    output of a task that had none), the change is a correction only if it made something stale.
    """
    correction = Correction.objects.create(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=task_name,
        task_execution=TaskExecution.objects.filter(
            flow_execution=flow_execution, task_name=task_name
        )
        .order_by("-task_execution_idx")
        .first(),
        task_output=task_output,
        source=source,
        operation=operation,
        modified_by=actor,
        reason=reason or "",
        before=output_state(before),
    )
    marked = mark_dependents_stale(flow_execution, task_name, actor=actor, correction=correction)
    if only_if_outdating and not marked.stale and not marked.moved:
        correction.delete()
        return None
    correction.after = output_state(current_task_output(flow_execution, task_name))
    correction.stale_tasks = marked.stale
    correction.save(update_fields=["after", "stale_tasks"])
    return correction


TASK_OUTPUT_MUTABLE_FIELDS = ("output", "summary", "tags", "status")


def recompute_task_outputs_summary(flow_execution_id: uuid.UUID) -> dict[str, Any]:
    """Rebuild `task_outputs_summary` from the current output of each task. Two queries.

    A task's current output is its newest non-deleted TaskOutput. The flow execution row is
    locked first, so two recomputes never overwrite each other with stale reads.
    """
    FlowExecution.objects.select_for_update(of=("self",)).filter(pk=flow_execution_id).exists()
    rows = (
        TaskOutput.objects.filter(flow_execution_id=flow_execution_id)
        .oldest_to_current()
        .values_list("task_name", "summary", "status")
    )
    current: dict[str, tuple[Any, str]] = {}
    for task_name, summary, status in rows:
        current[task_name] = (summary, status)
    summary = {
        "tasks": {name: task_summary for name, (task_summary, _) in sorted(current.items())},
        "status_counts": dict(sorted(Counter(status for _, status in current.values()).items())),
    }
    FlowExecution.objects.filter(pk=flow_execution_id).update(
        task_outputs_summary=summary, updated_at=timezone.now()
    )
    return summary


class _PatchedSummary(Func):
    """The summary with its status counts (and, given a task, that task's entry) replaced,
    computed by the database (jsonb_set / json_set): the summary of a 10,000-task flow is not
    read into Python, re-sorted and written back for every finished task."""

    output_field = JSONField()

    def __init__(
        self, counts: dict[str, int], task_name: str | None = None, task_summary: Any = None
    ) -> None:
        arguments = [F("task_outputs_summary"), Value(json.dumps(counts))]
        if task_name is not None:
            arguments += [Value(task_name), Value(json.dumps(task_summary))]
        super().__init__(*arguments)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        compiled = [compiler.compile(e) for e in self.get_source_expressions()]
        (column, column_params), (counts, counts_params), *task = compiled
        params = [*column_params]
        if connection.vendor == "postgresql":
            if task:  # the placeholders in the order they appear
                (name, name_params), (entry, entry_params) = task
                column = f"jsonb_set({column}, ARRAY['tasks', {name}]::text[], ({entry})::jsonb)"
                params += [*name_params, *entry_params]
            sql = f"jsonb_set({column}, '{{status_counts}}', ({counts})::jsonb)"
            return sql, [*params, *counts_params]
        patch = f"'$.status_counts', json({counts})"
        params += counts_params
        if task:
            (name, name_params), (entry, entry_params) = task
            patch += f", '$.tasks.' || json_quote({name}), json({entry})"
            params += [*name_params, *entry_params]
        return f"json_set({column}, {patch})", params


def _locked_counts(flow_execution_id: uuid.UUID, *also: Any) -> tuple | None:
    """Lock the flow execution's row and read its summary's status counts (a Counter), with
    the values of `also` (expressions over the row) in the same query; None when the summary
    is not in its usual shape (the caller then recomputes it)."""
    row = (
        FlowExecution.objects.select_for_update(of=("self",))
        .filter(pk=flow_execution_id, task_outputs_summary__has_keys=["tasks", "status_counts"])
        .values_list(KeyTransform("status_counts", "task_outputs_summary"), *also)
        .first()
    )
    if row is None or not isinstance(row[0], dict):
        return None
    return (Counter(row[0]), *row[1:])


def _save_counts(
    flow_execution_id: uuid.UUID,
    counts: Counter,
    task_name: str | None = None,
    task_summary: Any = None,
) -> None:
    """Store `counts` (and, given a task, its summary entry) in the summary, in place."""
    counts_in_place = dict(sorted((k, v) for k, v in counts.items() if v > 0))
    FlowExecution.objects.filter(pk=flow_execution_id).update(
        task_outputs_summary=_PatchedSummary(counts_in_place, task_name, task_summary),
        updated_at=timezone.now(),
    )


def move_status_counts(flow_execution_id: uuid.UUID, source: str, target: str, count: int) -> None:
    """`count` tasks' current outputs changed status from `source` to `target` (their entries
    did not change): move them in the summary's counts. Two queries."""
    if count <= 0:
        return
    locked = _locked_counts(flow_execution_id)
    if locked is None or locked[0][source] < count:
        recompute_task_outputs_summary(flow_execution_id)  # not in the shape this assumes
        return
    (counts,) = locked
    counts[source] -= count
    counts[target] += count
    _save_counts(flow_execution_id, counts)


def add_to_task_outputs_summary(task_output: TaskOutput) -> None:
    """Fold a newly created output into its flow execution's summary. Two queries.

    A new output is its task's newest, so it replaces the task's entry; the status counts move
    from the task's previous current output to this one (read with the counts, in the query
    that locks the row). Equivalent to a full recompute, but independent of how many outputs
    the flow execution has: only the (small) status counts are read, and the database patches
    the stored JSON in place.
    """
    flow_execution_id = task_output.flow_execution_id
    previous_status = (
        TaskOutput.objects.filter(flow_execution_id=OuterRef("pk"), task_name=task_output.task_name)
        .exclude(pk=task_output.pk)
        .oldest_to_current()
        .reverse()  # the current one first
        .values("status")[:1]
    )
    locked = _locked_counts(flow_execution_id, Subquery(previous_status))
    name = task_output.task_name
    if locked is None or '"' in name or "\\" in name:
        recompute_task_outputs_summary(flow_execution_id)  # not (yet) in the usual shape
        return
    counts, previous = locked
    if previous is not None:
        counts[previous] -= 1
    counts[task_output.status] += 1
    _save_counts(flow_execution_id, counts, name, task_output.summary)


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
    flow_execution = get_flow_execution_for_write(organization, flow_execution_id)
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise Conflict("the flow execution is deleted; it takes no new task outputs")
    if status == TaskOutput.Status.DELETED:
        raise InvalidInput.field("status", "a task output cannot be created as deleted")
    before = current_task_output(flow_execution, task_name)
    task_output = TaskOutput.objects.create(
        organization=organization,
        flow_execution=flow_execution,
        task_name=task_name,
        output=output,
        summary=summary,
        tags=tags,
        status=status,
        flow_version=flow_execution.flow_version.version,
        modified_by=actor,
    )
    # Dependents read this task's current output: whatever they computed before is outdated.
    _correct_output(
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
    flow_execution = get_flow_execution_for_write(
        task_output.organization, task_output.flow_execution_id
    )
    current = current_task_output(flow_execution, task_output.task_name)
    ensure_baseline(TaskOutput, task_output.pk)
    task_output, before = apply_update(
        task_output,
        mutable_fields=TASK_OUTPUT_MUTABLE_FIELDS,
        changes=changes,
        identity=identity,
        expected_updated_at=expected_updated_at,
        actor=actor,
    )
    if any(
        not same_json(before[name], getattr(task_output, name))
        for name in ("output", "status")
        if name in before
    ):
        _correct_output(
            flow_execution,
            task_output.task_name,
            Correction.Operation.TASK_OUTPUT_UPDATE,
            task_output,
            before=current,
            actor=actor,
            reason=reason,
            source=source,
        )
    return task_output


@transaction.atomic
def delete_task_output(
    task_output: TaskOutput,
    *,
    actor: str,
    reason: str | None = None,
    source: str = Correction.Source.API,
) -> TaskOutput:
    """Soft delete; the task's previous output (if any) becomes current again, so what its
    dependents computed is outdated. Lock order: the flow execution first."""
    flow_execution = get_flow_execution_for_write(
        task_output.organization, task_output.flow_execution_id
    )
    task_output = TaskOutput.objects.select_for_update().get(pk=task_output.pk)
    if task_output.status != TaskOutput.Status.DELETED:
        current = current_task_output(flow_execution, task_output.task_name)
        ensure_baseline(TaskOutput, task_output.pk)
        task_output.status = TaskOutput.Status.DELETED
        task_output.modified_by = actor
        task_output.save(update_fields=["status", "modified_by", "updated_at"])
        _correct_output(
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
