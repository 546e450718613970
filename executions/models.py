"""FlowExecution (one run of a pinned flow version) and TaskExecution (one attempt of one task)."""

from __future__ import annotations

from django.db import models
from django.utils.timezone import localtime
from simple_history.models import HistoricalRecords

from flowplatform.history import history_user
from flowplatform.tenancy.models import TenantOwned
from flows.models import Flow, FlowVersion

MODIFIED_BY_HELP = (
    "Identifier of the actor who last modified this record. 'system' for worker-initiated "
    "changes, a user's UUID, or an integration identifier."
)


class FlowExecutionStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"
    STALE = "stale"


class TaskExecutionStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"
    STALE = "stale"


class StaleReason(models.TextChoices):
    CORRECTION = "correction", "A correction of this task or an upstream task"
    UPSTREAM_RERUN = "upstream_rerun", "An upstream task ran again outside a correction"
    REEXECUTION = "reexecution", "The whole flow execution was re-executed"
    FLOW_EXECUTION_DELETED = "flow_execution_deleted", "The flow execution was deleted"
    ITERATION_REMOVED = (
        "iteration_removed",
        "Its item left the for_each list, or its until loop ended before it",
    )
    DEFINITION_CHANGED = (
        "definition_changed",
        "An upgrade changed the definition of this task or of a task upstream",
    )
    TASK_REMOVED = "task_removed", "An upgrade moved the execution to a version without the task"


class FlowExecution(TenantOwned):
    """One run of a pinned flow version. Its status is derived from its attempts
    (executions.engine.status) and written only through executions.transitions."""

    Status = FlowExecutionStatus

    flow = models.ForeignKey(Flow, on_delete=models.PROTECT, related_name="executions")
    flow_version = models.ForeignKey(
        FlowVersion,
        on_delete=models.PROTECT,
        related_name="executions",
        help_text="The flow version this execution runs; pinned when it is created.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    input = models.JSONField(null=True, blank=True, help_text="The flow's input.")
    task_outputs_summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="Recomputed whenever a task output changes: each task's current summary "
        "under `tasks`, and the number of current outputs by status under `status_counts`.",
    )
    modified_by = models.CharField(max_length=200, default="system", help_text=MODIFIED_BY_HELP)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    reexecuted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the whole flow was last re-executed: early cutoff reuses no result "
        "from before then.",
    )

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=FlowExecutionStatus.values),
                name="flow_execution_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "created_at"]),
            models.Index(fields=["organization", "status"]),
        ]

    def __str__(self) -> str:
        """The flow's name, when the run started and the start of its id, as operators tell
        runs apart in admin (lists select the flow with it): "invoice · 2026-12-01 10:02 ·
        3f2a9c1d"."""
        started = f" · {localtime(self.created_at):%Y-%m-%d %H:%M}" if self.created_at else ""
        return f"{self.flow.name}{started} · {str(self.id)[:8]}"


class TaskExecution(TenantOwned):
    """One attempt of one task. Attempts are never overwritten: a re-run adds idx+1.

    Its status changes only through executions.transitions, which holds the moves people may
    make (API, admin, commands) and the engine's own (claim, complete, fail, reap, go stale,
    cancel, reuse).
    """

    Status = TaskExecutionStatus

    flow_execution = models.ForeignKey(
        FlowExecution,
        on_delete=models.CASCADE,
        related_name="task_executions",
        help_text="ID of the parent flow execution containing this task.",
    )
    task_name = models.CharField(
        max_length=200,
        help_text="Name of the task as defined in the flow definition YAML. Case-sensitive.",
    )
    task_execution_idx = models.PositiveIntegerField(
        default=0,
        help_text="Zero-based attempt index: 0 for the first run, +1 for every retry, "
        "re-execution or loop iteration of the same task.",
    )
    iteration = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Which iteration of a looped task this attempt is: the item's index in its "
        "for_each list, or the round of its until loop (0, 1, 2, …); null for a task without "
        "a loop. A retry of an iteration keeps its iteration.",
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.QUEUED,
        help_text="Current execution state of the task.",
    )
    input = models.JSONField(
        null=True, blank=True, help_text="Input parameters provided to the task executor."
    )
    output = models.JSONField(null=True, blank=True, help_text="What the task produced.")
    error = models.JSONField(null=True, blank=True, help_text="Why the task failed, if it did.")
    modified_by = models.CharField(max_length=200, default="system", help_text=MODIFIED_BY_HELP)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the attempt last became completed; kept when it later goes stale, so "
        "early cutoff can find the task's previous completed attempt.",
    )
    # Why the attempt went stale (set with the status; see executions.engine.staleness).
    stale_reason = models.CharField(
        max_length=32, choices=StaleReason.choices, blank=True, default=""
    )
    stale_correction = models.ForeignKey(
        "Correction",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="stale_attempts",
        help_text="The correction that made this attempt stale.",
    )
    stale_upstream_task = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="The corrected task through which staleness reached this attempt: its nearest "
        "corrected ancestor (the task itself when it was corrected to stale).",
    )
    stale_upstream_iteration = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The corrected iteration of that task, when the correction was of one "
        "iteration of a looped task.",
    )
    stale_at = models.DateTimeField(null=True, blank=True)
    stale_by = models.CharField(max_length=200, blank=True, default="")
    started_by_correction = models.ForeignKey(
        "Correction",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="started_attempts",
        help_text="The correction (with execute_flow) whose re-execution created this attempt.",
    )
    reused_from = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Early cutoff: the earlier completed attempt whose output this one reuses "
        "because its freshly resolved input was the same.",
    )
    # A worker's claim on a running attempt (executions.leases): renewed while the task runs;
    # once it expires the reaper presumes the worker lost. Empty for a human task's wait.
    lease_owner = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="The worker (host:pid) running this attempt.",
    )
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the running worker's lease ends unless it renews it (heartbeat).",
    )

    # Every manual change (API, admin, commands), and bulk stale marking
    # (flowplatform.history.record_history), with who and when; shown in admin.
    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["flow_execution", "task_name", "task_execution_idx"],
                name="task_execution_attempt_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(task_execution_idx__gte=0), name="task_execution_idx_gte_0"
            ),
            models.CheckConstraint(
                condition=~models.Q(task_name=""), name="task_execution_name_not_empty"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=TaskExecutionStatus.values),
                name="task_execution_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "created_at"]),
            models.Index(fields=["organization", "status"]),
            # Is anything queued or running? (refresh_status, once per finished task)
            models.Index(fields=["flow_execution", "status"], name="task_execution_fe_status"),
            # The reaper's search: running attempts by lease expiry, nothing else.
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(status="running"),
                name="task_execution_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}#{self.task_execution_idx}"


class Correction(TenantOwned):
    """One change a person made to a task's result, and what it did to the rest of the flow.

    Written in the same transaction as the change, by whichever surface made it (API, admin,
    command). The stale attempts point back here (TaskExecution.stale_correction), and so do
    the attempts its re-execution created (TaskExecution.started_by_correction).
    """

    class Source(models.TextChoices):
        API = "api"
        ADMIN = "admin"
        COMMAND = "command"

    class Operation(models.TextChoices):
        TASK_EXECUTION_UPDATE = "task_execution_update"
        TASK_OUTPUT_CREATE = "task_output_create"
        TASK_OUTPUT_UPDATE = "task_output_update"
        TASK_OUTPUT_DELETE = "task_output_delete"
        UPGRADE = "upgrade"

    flow_execution = models.ForeignKey(
        FlowExecution, on_delete=models.CASCADE, related_name="corrections"
    )
    task_name = models.CharField(
        max_length=200, blank=True, help_text="The corrected task (empty for an upgrade)."
    )
    iteration = models.PositiveIntegerField(
        null=True, blank=True, help_text="The corrected iteration, for a looped task."
    )
    task_execution = models.ForeignKey(
        TaskExecution,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="corrections",
        help_text="The corrected attempt (for task output changes: the task's latest attempt).",
    )
    task_output = models.ForeignKey(
        "outputs.TaskOutput",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="corrections",
        help_text="The task output this correction published, edited or deleted.",
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    operation = models.CharField(max_length=32, choices=Operation.choices)
    modified_by = models.CharField(max_length=200, help_text="Who made the correction.")
    reason = models.TextField(blank=True, default="", help_text="Why, in the person's words.")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    stale_tasks = models.JSONField(
        default=list, blank=True, help_text="Tasks it made stale, in dependency order."
    )
    stale_iterations = models.JSONField(
        default=dict,
        blank=True,
        help_text="Of the looped tasks it made stale, which iterations: task → iterations.",
    )
    changes = models.JSONField(
        default=dict,
        blank=True,
        help_text="Of an upgrade: the tasks changed (with their changed fields), added and "
        "removed between the two versions.",
    )
    upgrade_job = models.ForeignKey(
        "UpgradeJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="corrections",
        help_text="The upgrade job this upgrade was part of.",
    )
    execute_flow = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["organization", "created_at"]),
            models.Index(fields=["flow_execution", "created_at"]),
        ]

    def __str__(self) -> str:
        if self.operation == self.Operation.UPGRADE:
            return f"upgrade by {self.modified_by}"
        return f"correction of {self.task_name} by {self.modified_by}"


# Upgrade jobs live in their own module; imported here so the app registers them.
from executions.upgrade_models import UpgradeJob, UpgradeJobItem  # noqa: E402

__all__ = ["Correction", "FlowExecution", "TaskExecution", "UpgradeJob", "UpgradeJobItem"]
