"""Sending an endpoint's deliveries from the tasks backend: the `deliver_webhooks` job, its
retries with exponential backoff, and the repair of deliveries a lost worker was sending.

At least once: a delivery is claimed (`sending`, with a lease) in a committed transaction
before its request goes out, and its outcome recorded in another; a worker that dies between
them leaves the lease to expire, and the reaper (every db_worker's, `manage.py reap_expired`)
hands it to a new job, which sends the same event (the same `webhook-id`) again.
In order where it can be: one sender per endpoint at a time, oldest due delivery first; a
delivery waiting for its retry does not hold back the ones after it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.tasks import task
from django.tasks.base import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from executions import jobs, leases
from flowplatform import rls
from flowplatform.webhooks import sending
from flowplatform.webhooks.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger("flowplatform.webhooks")
State = WebhookDelivery.State


def lease_seconds() -> float:
    """How long a claim lasts: twice the request's deadline and a second; a delivery still
    `sending` after that was lost with its worker."""
    return 2 * settings.FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS + 1


@task()
def deliver_webhooks(endpoint_id: str, organization_id: str) -> None:
    """Send the endpoint's due deliveries (drain)."""
    drain(uuid.UUID(endpoint_id), uuid.UUID(organization_id))


def enqueue_drain(
    organization_id: uuid.UUID, endpoint_id: uuid.UUID, run_after: datetime | None = None
) -> None:
    """A deliver_webhooks job with the current transaction (jobs.with_commit). A job due
    later (`run_after`, a retry) needs a backend that defers jobs (django-tasks-db); the
    embedded one cannot, so there a retry waits for the endpoint's next drain or
    reap_expired (requeue_lost_deliveries)."""
    args = (str(endpoint_id), str(organization_id))
    if run_after is not None and jobs.uses_job_rows():
        jobs.with_commit(lambda: deliver_webhooks.using(run_after=run_after).enqueue(*args))
    elif run_after is None:
        jobs.with_commit(lambda: deliver_webhooks.enqueue(*args))


def backoff(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling, capped."""
    first = settings.FLOWPLATFORM_WEBHOOK_BACKOFF_SECONDS
    return min(first * 2 ** (attempts - 1), settings.FLOWPLATFORM_WEBHOOK_MAX_BACKOFF_SECONDS)


def drain(endpoint_id: uuid.UUID, organization_id: uuid.UUID) -> int:
    """Send due deliveries one at a time until none is due; returns how many were sent."""
    sent = 0
    while (claimed := _claim(endpoint_id, organization_id)) is not None:
        delivery, url, secret, body = claimed
        outcome = sending.send(url, secret, str(delivery.event_id), body.encode())
        _record(delivery, outcome, organization_id)
        sent += 1
    return sent


def _claim(
    endpoint_id: uuid.UUID, organization_id: uuid.UUID
) -> tuple[WebhookDelivery, str, str, str] | None:
    """The endpoint's oldest due delivery, claimed (committed) for this worker; None when
    nothing is due or another worker is sending to the endpoint."""
    with rls.tenant_scope(organization_id):
        endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id).first()
        if endpoint is None or not endpoint.enabled:
            return None
        now = timezone.now()
        open_ = WebhookDelivery.objects.filter(
            endpoint=endpoint, state__in=[State.PENDING, State.SENDING]
        )
        if open_.filter(state=State.SENDING, lease_expires_at__gt=now).exists():
            return None  # its sender sends the rest after it
        due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        head = open_.filter(due).select_related("event").order_by("created_at", "id").first()
        if head is None:
            return None
        head.attempts += 1
        lease = lease_seconds()
        WebhookDelivery.objects.filter(pk=head.pk).update(
            state=State.SENDING,
            attempts=head.attempts,
            last_attempt_at=now,
            lease_expires_at=now + timedelta(seconds=lease),
        )
        return head, endpoint.url, endpoint.secret, head.event.body


def _record(
    delivery: WebhookDelivery, outcome: sending.Outcome, organization_id: uuid.UUID
) -> None:
    """The attempt's outcome, if the delivery is still this attempt's (not handed on since);
    a failure is tried again after its backoff, or given up past the retry period."""
    with rls.tenant_scope(organization_id):
        now = timezone.now()
        fields: dict = {"latency_ms": outcome.latency_ms, "lease_expires_at": None}
        retry_at = None
        if outcome.ok:
            fields.update(
                state=State.SUCCEEDED, last_error="", finished_at=now, next_attempt_at=None
            )
        else:
            retry_at = now + timedelta(seconds=backoff(delivery.attempts))
            if retry_at > delivery.retry_until:
                retry_at = None
                fields.update(state=State.FAILED, finished_at=now, next_attempt_at=None)
            else:
                fields.update(state=State.PENDING, next_attempt_at=retry_at)
            fields["last_error"] = outcome.error[:2000]
            logger.warning(
                "webhook delivery %s (attempt %d) failed: %s",
                delivery.pk,
                delivery.attempts,
                outcome.error,
            )
        mine = WebhookDelivery.objects.filter(
            pk=delivery.pk, state=State.SENDING, attempts=delivery.attempts
        ).update(**fields)
        if mine and retry_at is not None:
            enqueue_drain(organization_id, delivery.endpoint_id, run_after=retry_at)


def requeue_lost_deliveries(limit: int = 1000) -> int:
    """Deliveries whose sender was lost (their lease expired while `sending`) and pending ones
    overdue by more than a lease (their deferred job was lost, or the embedded backend has no
    deferred jobs): a drain job for each of their endpoints. Returns how many endpoints."""
    now = timezone.now()
    overdue = now - timedelta(seconds=lease_seconds())
    lost = Q(state=State.SENDING, lease_expires_at__lt=now)
    with rls.lookup():  # ids only, across organizations, as the reaper reads them
        rows = WebhookDelivery.objects.filter(
            lost | Q(state=State.PENDING, next_attempt_at__lt=overdue), endpoint__enabled=True
        ).values_list("organization_id", "endpoint_id", "state")[:limit]
        endpoints = {(org, endpoint) for org, endpoint, _ in rows}
        abandoned = {str(endpoint) for _, endpoint, state in rows if state == State.SENDING}
    _fail_lost_jobs(abandoned, before=overdue)
    for organization_id, endpoint_id in sorted(endpoints):
        with rls.tenant_scope(organization_id):
            enqueue_drain(organization_id, endpoint_id)
    if endpoints:
        logger.warning("resumed the deliveries of %d webhook endpoint(s)", len(endpoints))
    return len(endpoints)


def _fail_lost_jobs(endpoint_ids: set[str], *, before: datetime) -> None:
    """The lost workers' django-tasks-db job rows would stay RUNNING forever: failed, as
    executions.jobs.fail_lost_jobs does for attempts' jobs."""
    if not endpoint_ids or not jobs.uses_job_rows():
        return
    DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING,
        task_path=deliver_webhooks.module_path,
        started_at__lt=before,
        args_kwargs__args__0__in=sorted(endpoint_ids),
    ).update(
        status=TaskResultStatus.FAILED,
        finished_at=timezone.now(),
        exception_class_path=leases.WORKER_LOST_PATH,
        traceback="The worker running this job was lost (its delivery's lease expired).",
    )
