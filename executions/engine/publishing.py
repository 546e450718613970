"""Publishing results: a task's new current TaskOutput, from a worker, a person's correction, or
early cutoff's reuse. The flow execution's summary follows (outputs.summary)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils import timezone

from executions import transitions
from executions.engine.cutoff import Reusable
from executions.executors import default_summary
from executions.models import FlowExecution, TaskExecution
from flowplatform import bulksql
from outputs import summary as outputs_summary
from outputs.models import TaskOutput


def publish_output(
    flow_execution: FlowExecution,
    task_name: str,
    output: Any,
    summary: dict | None,
    actor: str = "system",
) -> TaskOutput:
    """The task's new current TaskOutput; its save signal folds it into the summary.

    A worker's output gets no history row of its own, as the attempts the engine creates in
    bulk do not: history records what people change, and the first manual change of such a
    row adds a baseline row first (flowplatform.history.ensure_baseline). A person's output
    (a correction) is history at once.
    """
    task_output = new_result(flow_execution, task_name, output, summary, actor)
    if actor == "system":
        task_output.skip_history_when_saving = True
    task_output.save(force_insert=True)
    return task_output


def new_result(
    flow_execution: FlowExecution,
    task_name: str,
    output: Any,
    summary: dict | None,
    actor: str = "system",
    tags: Any = None,
) -> TaskOutput:
    """An unsaved current TaskOutput for a result (publish_many saves many at once)."""
    return transitions.new_output(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=task_name,
        output=output,
        summary=summary if summary is not None else default_summary(output),
        tags=tags,
        flow_version=flow_execution.flow_version.version,
        modified_by=actor,
    )


def publish_many(
    flow_execution: FlowExecution,
    results: list[TaskOutput],
    reused: list[TaskExecution],
    reusable: Mapping[str, Reusable],
) -> None:
    """A wave's results (new_result) and reused results become their tasks' current outputs:
    one insert, and the summary recomputed once (outputs.summary)."""
    rows = [*results, *(_republished(flow_execution, a, reusable) for a in reused)]
    if not rows:
        return
    bulksql.insert_many(rows, now=timezone.now())
    outputs_summary.recompute_task_outputs_summary(flow_execution.pk)


def _republished(
    flow_execution: FlowExecution, attempt: TaskExecution, reusable: Mapping[str, Reusable]
) -> TaskOutput:
    kept = reusable[attempt.task_name]
    return new_result(
        flow_execution, attempt.task_name, attempt.output, kept.summary, kept.modified_by, kept.tags
    )


def republish_reused(
    flow_execution: FlowExecution,
    attempts: list[TaskExecution],
    reusable: Mapping[str, Reusable],
) -> None:
    """Reused results become their tasks' current outputs again (completed), with the summary,
    tags and author they had. Set-based (bulk_create bypasses the signal, so the summary is
    recomputed here): a few queries for any number of tasks."""
    publish_many(flow_execution, [], attempts, reusable)
