"""Webhook endpoints of an organization, the events sent to them and each endpoint's delivery
log (flowplatform.webhooks.events writes events and deliveries; .jobs sends them)."""

from __future__ import annotations

from django.db import models

from flowplatform.tenancy.models import TenantOwned


class EventType(models.TextChoices):
    """The contract: what an endpoint may subscribe to (README, "Webhooks")."""

    TASK_EXECUTION_WAITING = "task_execution.waiting", "A human task waits for a person"
    CORRECTION_APPLIED = "correction.applied", "A correction was recorded"
    CORRECTION_SETTLED = "correction.settled", "What a correction made stale has all run"
    FLOW_EXECUTION_SETTLED = "flow_execution.settled", "A flow execution completed or failed"
    UPGRADE_JOB_FINISHED = "upgrade_job.finished", "An upgrade job finished"


class WebhookEndpoint(TenantOwned):
    """Where an organization wants its events POSTed. The secret is stored as it is (it signs
    every delivery, so it must be recoverable) and never shown again after creation."""

    url = models.CharField(max_length=2000, help_text="Where events are POSTed.")
    secret = models.CharField(max_length=200, help_text="Signs deliveries (Standard Webhooks).")
    events = models.JSONField(default=list, help_text="The event types it receives.")
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["organization", "enabled"])]

    def __str__(self) -> str:
        return self.url


class WebhookEvent(TenantOwned):
    """One event: the exact JSON document every endpoint that subscribed receives (kept as the
    text that is signed, as PostgreSQL's jsonb would reorder its keys)."""

    type = models.CharField(max_length=64, choices=EventType.choices)
    resource_id = models.UUIDField(help_text="The id of the resource in `data`.")
    body = models.TextField(help_text="The JSON document sent.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.type} {self.pk}"


class WebhookDelivery(TenantOwned):
    """One event to one endpoint: sent until the endpoint answers 2xx or the retry period
    passes. `state` is the delivery's own progress (not a run's status)."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending (due at next_attempt_at)"
        SENDING = "sending", "Sending (a worker holds it until lease_expires_at)"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (gave up after the retry period)"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    retry_until = models.DateTimeField(help_text="Failed attempts are retried until then.")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    latency_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long the last attempt took."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once"),
        ]
        indexes = [
            models.Index(fields=["endpoint", "state", "created_at"]),
            models.Index(fields=["state", "lease_expires_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.event.type} to {self.endpoint.url}"


class PendingSettlement(TenantOwned):
    """A correction whose flow execution had not settled when it was recorded, while someone
    subscribed to correction.settled: sent (and removed) when the flow execution settles."""

    correction = models.OneToOneField(
        "executions.Correction", on_delete=models.CASCADE, related_name="+"
    )
    flow_execution = models.ForeignKey(
        "executions.FlowExecution", on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["flow_execution"])]
