"""Webhook events, recorded in the transaction that causes them: the event (its JSON document,
with the resource as the API shows it) and a delivery for each enabled endpoint that subscribed,
whose job is enqueued with that transaction (executions.jobs.with_commit). A transaction that
rolls back (a dry run's, a failed request's) leaves no event and sends nothing; nothing is sent
before the commit.

Cost: one indexed query of the organization's enabled endpoints where an event happens (a human
task starts waiting, a correction is recorded, a flow execution or upgrade job finishes), never
per task run; rendering and inserting only when an endpoint subscribed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from executions.models import Correction, FlowExecution, UpgradeJob
from flowplatform.webhooks import delivering
from flowplatform.webhooks.models import (
    EventType,
    PendingSettlement,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

Renderer = Callable[[list[uuid.UUID]], Mapping[uuid.UUID, Any]]
# Event type → the resources (by id) as the API shows them; registered at start-up
# (flowplatform.webhooks.apps), since the API's serializers are an edge above the engine.
RENDERERS: dict[str, Renderer] = {}
SETTLED = frozenset({FlowExecution.Status.COMPLETED, FlowExecution.Status.FAILED})


def register_renderers(renderers: Mapping[str, Renderer]) -> None:
    RENDERERS.update(renderers)


def subscribers(organization_id: uuid.UUID, types: Iterable[str]) -> dict[str, list[uuid.UUID]]:
    """Event type → the organization's enabled endpoints that receive it (one query)."""
    wanted = set(types)
    found: dict[str, list[uuid.UUID]] = {t: [] for t in wanted}
    rows = WebhookEndpoint.objects.filter(organization_id=organization_id, enabled=True)
    for pk, events in rows.values_list("id", "events").order_by("created_at", "id"):
        for event_type in wanted.intersection(events or ()):
            found[event_type].append(pk)
    return found


def emit(
    organization_id: uuid.UUID,
    event_type: str,
    resource_ids: list[uuid.UUID],
    endpoints: list[uuid.UUID] | None = None,
) -> int:
    """One event per resource for every endpoint that subscribed (`endpoints`, when the caller
    asked already), in the current transaction. Returns how many events."""
    if not resource_ids:
        return 0
    if endpoints is None:
        endpoints = subscribers(organization_id, [event_type])[event_type]
    if not endpoints:
        return 0
    rendered = RENDERERS[event_type](resource_ids)
    now = timezone.now()
    retry_until = now + timedelta(seconds=settings.FLOWPLATFORM_WEBHOOK_RETRY_SECONDS)
    events = []
    for resource_id in resource_ids:
        if resource_id not in rendered:
            continue
        event_id = uuid.uuid4()
        document = {
            "id": str(event_id),
            "type": event_type,
            "time": now.isoformat().replace("+00:00", "Z"),
            "organization": str(organization_id),
            "data": rendered[resource_id],
        }
        body = JSONRenderer().render(document).decode()
        events.append(
            WebhookEvent(
                id=event_id,
                organization_id=organization_id,
                type=event_type,
                resource_id=resource_id,
                body=body,
            )
        )
    WebhookEvent.objects.bulk_create(events)
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            organization_id=organization_id,
            endpoint_id=endpoint_id,
            event=event,
            retry_until=retry_until,
        )
        for event in events
        for endpoint_id in endpoints
    )
    for endpoint_id in endpoints:
        delivering.enqueue_drain(organization_id, endpoint_id)
    return len(events)


def attempts_waiting(organization_id: uuid.UUID, attempt_ids: list[uuid.UUID]) -> None:
    """task_execution.waiting: human tasks' attempts that now wait for a person."""
    emit(organization_id, EventType.TASK_EXECUTION_WAITING, attempt_ids)


def correction_recorded(correction: Correction) -> None:
    """correction.applied; and correction.settled at once if its flow execution is settled
    (nothing it made stale is left to run), else when the flow execution settles."""
    org = correction.organization_id
    subscribed = subscribers(org, [EventType.CORRECTION_APPLIED, EventType.CORRECTION_SETTLED])
    emit(org, EventType.CORRECTION_APPLIED, [correction.pk], subscribed["correction.applied"])
    settling = subscribed[EventType.CORRECTION_SETTLED]
    if not settling:
        return
    if correction.flow_execution.status in SETTLED:
        emit(org, EventType.CORRECTION_SETTLED, [correction.pk], settling)
    else:
        PendingSettlement.objects.get_or_create(
            correction_id=correction.pk,
            defaults={"organization_id": org, "flow_execution_id": correction.flow_execution_id},
        )


def flow_execution_settled(flow_execution: FlowExecution) -> None:
    """flow_execution.settled; and correction.settled for the corrections that waited for it:
    once the flow execution is completed or failed, every attempt they started has run."""
    org = flow_execution.organization_id
    subscribed = subscribers(org, [EventType.FLOW_EXECUTION_SETTLED, EventType.CORRECTION_SETTLED])
    emit(
        org,
        EventType.FLOW_EXECUTION_SETTLED,
        [flow_execution.pk],
        subscribed["flow_execution.settled"],
    )
    if not subscribed[EventType.CORRECTION_SETTLED]:
        return
    pending = PendingSettlement.objects.filter(flow_execution_id=flow_execution.pk)
    corrections = list(
        pending.order_by("correction__created_at").values_list("correction_id", flat=True)
    )
    if corrections:
        pending.delete()
        emit(org, EventType.CORRECTION_SETTLED, corrections, subscribed["correction.settled"])


def upgrade_job_finished(job: UpgradeJob) -> None:
    """upgrade_job.finished, for a job that upgraded (a dry run's job sends nothing)."""
    if not job.dry_run:
        emit(job.organization_id, EventType.UPGRADE_JOB_FINISHED, [job.pk])
