"""Keeps FlowExecution.task_outputs_summary derived from the flow execution's TaskOutputs."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from outputs.models import TaskOutput
from outputs.summary import add_to_task_outputs_summary, recompute_task_outputs_summary


def on_task_output_saved(
    sender: type[TaskOutput], instance: TaskOutput, created: bool, **kwargs: object
) -> None:
    if created and instance.status != TaskOutput.Status.DELETED:
        add_to_task_outputs_summary(instance)
    else:
        recompute_task_outputs_summary(instance.flow_execution_id)


def on_task_output_deleted(
    sender: type[TaskOutput], instance: TaskOutput, **kwargs: object
) -> None:
    recompute_task_outputs_summary(instance.flow_execution_id)


def connect() -> None:
    post_save.connect(on_task_output_saved, sender=TaskOutput, dispatch_uid="outputs-summary-save")
    post_delete.connect(
        on_task_output_deleted, sender=TaskOutput, dispatch_uid="outputs-summary-delete"
    )
