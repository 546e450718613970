"""Publishing results: a task's new current TaskOutput, from a worker, a person's correction, or
early cutoff's reuse. The flow execution's summary follows (outputs.summary)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executions import transitions
from executions.engine.cutoff import Reusable
from executions.executors import default_summary
from executions.models import FlowExecution, TaskExecution
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
    task_output = transitions.new_output(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=task_name,
        output=output,
        summary=summary if summary is not None else default_summary(output),
        flow_version=flow_execution.flow_version.version,
        modified_by=actor,
    )
    if actor == "system":
        task_output.skip_history_when_saving = True
    task_output.save(force_insert=True)
    return task_output


def republish_reused(
    flow_execution: FlowExecution,
    attempts: list[TaskExecution],
    reusable: Mapping[str, Reusable],
) -> None:
    """Reused results become their tasks' current outputs again (completed), with the summary,
    tags and author they had. Set-based (bulk_create bypasses the signal, so the summary is
    recomputed here): a few queries for any number of tasks."""
    TaskOutput.objects.bulk_create(
        transitions.new_output(
            organization_id=flow_execution.organization_id,
            flow_execution=flow_execution,
            task_name=attempt.task_name,
            output=attempt.output,
            summary=reusable[attempt.task_name].summary,
            tags=reusable[attempt.task_name].tags,
            flow_version=flow_execution.flow_version.version,
            modified_by=reusable[attempt.task_name].modified_by,
        )
        for attempt in attempts
    )
    outputs_summary.recompute_task_outputs_summary(flow_execution.pk)
