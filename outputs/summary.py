"""A flow execution's `task_outputs_summary`, derived from its task outputs: each task's current
summary under `tasks`, and the number of current outputs by status under `status_counts`.

Who keeps it: the outputs.signals receiver for every TaskOutput saved or deleted row by row (a new
output is folded in at constant cost, an edit or delete recomputes); and, for set-based changes
that bypass signals, their own callers: executions.engine.staleness (outputs going stale move
their counts) and executions.engine.publishing (reused results republished in bulk recompute).
Every write locks the flow execution's row first (the lock order of executions.locking).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from django.db.models import F, Func, JSONField, OuterRef, Subquery, Value
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from executions.models import FlowExecution
from outputs.models import TaskOutput


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
