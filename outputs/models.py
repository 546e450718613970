"""TaskOutput: the published result of a task in a flow execution.

Signals: saving or deleting a TaskOutput (post_save / post_delete, connected in
outputs.signals) updates its flow execution's `task_outputs_summary` in the same transaction:
a new output is folded in (outputs.summary.add_to_task_outputs_summary, constant work); an
edit or delete recomputes it (recompute_task_outputs_summary). Queryset `.update()` /
`.bulk_create()` bypass them; the code that uses them updates the summary itself (listed in
outputs.summary). Its status changes only through executions.transitions.
"""

from __future__ import annotations

from django.db import models
from simple_history.models import HistoricalRecords

from executions.models import MODIFIED_BY_HELP, FlowExecution
from flowplatform.history import history_user
from flowplatform.tenancy.models import TenantOwned


class TaskOutputQuerySet(models.QuerySet):
    def oldest_to_current(self) -> models.QuerySet:
        """Non-deleted outputs, oldest first: the last one of each task is its current output
        (its newest non-deleted one). The one place that rule is written."""
        return self.exclude(status=FlowExecution.Status.DELETED).order_by("created_at", "id")


class TaskOutput(TenantOwned):
    # The seed's request enum for TaskOutput.status is the flow execution lifecycle's.
    Status = FlowExecution.Status

    objects = TaskOutputQuerySet.as_manager()

    flow_execution = models.ForeignKey(
        FlowExecution,
        on_delete=models.CASCADE,
        related_name="task_outputs",
        help_text="ID of the parent flow execution containing this task.",
    )
    task_name = models.CharField(
        max_length=200,
        help_text="Name of the task that produced this output. Case-sensitive identifier "
        "matching the flow definition YAML.",
    )
    output = models.JSONField(null=True, blank=True, help_text="The task's output.")
    summary = models.JSONField(
        help_text="Structured summary of the output for display and querying, e.g. "
        "{'pages': 10, 'word_count': 5000}."
    )
    tags = models.JSONField(
        null=True, blank=True, help_text="Labels: a list of strings or an object."
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.QUEUED,
        help_text="Execution status when the output was created; typically 'completed'.",
    )
    flow_version = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Version of the flow definition the flow execution ran (>= 1).",
    )
    modified_by = models.CharField(max_length=200, default="system", help_text=MODIFIED_BY_HELP)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Every manual change and bulk stale marking, with who and when; shown in admin.
    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(flow_version__isnull=True) | models.Q(flow_version__gte=1),
                name="task_output_flow_version_gte_1",
            ),
            models.CheckConstraint(
                condition=~models.Q(task_name=""), name="task_output_name_not_empty"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "created_at"]),
            models.Index(fields=["flow_execution", "task_name", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} output {self.id}"
