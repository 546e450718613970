"""Upgrade jobs: a flow's matched executions moved to one version in batches
(executions.corrections.upgrade_jobs), each matched execution an item upgraded at most once."""

from __future__ import annotations

from django.db import models

from flowplatform.tenancy.models import TenantOwned


class UpgradeJob(TenantOwned):
    """Moving a flow's executions (those its filters match) to one version, in batches through
    the tasks backend (executions.corrections.upgrade_jobs). Each matched execution is an
    UpgradeJobItem, upgraded at most once."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"

    flow = models.ForeignKey("flows.Flow", on_delete=models.PROTECT, related_name="upgrade_jobs")
    to_version = models.ForeignKey(
        "flows.FlowVersion",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The version the matched executions move to.",
    )
    filters = models.JSONField(
        default=dict,
        blank=True,
        help_text="What matched: from_version, status, created_after, created_before.",
    )
    execute_flow = models.BooleanField(default=False)
    dry_run = models.BooleanField(default=False)
    reason = models.TextField(blank=True, default="")
    source = models.CharField(max_length=16, default="api")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    matched = models.PositiveIntegerField(default=0)
    upgraded = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="", help_text="Why the job itself failed.")
    modified_by = models.CharField(max_length=200, help_text="Who asked for it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # While a runner works on it: once this passes, the reaper hands the job to another runner.
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["organization", "created_at"])]

    def __str__(self) -> str:
        return f"upgrade job {str(self.pk)[:8]}"


class UpgradeJobItem(TenantOwned):
    """One matched execution of an upgrade job and what became of it."""

    class Outcome(models.TextChoices):
        PENDING = "pending"
        UPGRADED = "upgraded"
        SKIPPED = "skipped"
        FAILED = "failed"

    job = models.ForeignKey(UpgradeJob, on_delete=models.CASCADE, related_name="items")
    flow_execution = models.ForeignKey(
        "executions.FlowExecution", on_delete=models.CASCADE, related_name="+"
    )
    position = models.PositiveIntegerField(help_text="Its place in the job's order.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    code = models.CharField(
        max_length=64, blank=True, default="", help_text="Why skipped or failed."
    )
    message = models.TextField(blank=True, default="")
    from_version = models.PositiveIntegerField(null=True, blank=True)
    stale_tasks = models.PositiveIntegerField(null=True, blank=True)
    tasks_to_run = models.PositiveIntegerField(null=True, blank=True)
    correction = models.ForeignKey(
        "executions.Correction", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "flow_execution"], name="upgrade_item_once"),
        ]
        indexes = [models.Index(fields=["job", "outcome", "position"])]
