"""Every write of webhook endpoints (API, admin, command): create, change, delete, and "send
again" of a delivery. Endpoint URLs obey the `http` task type's network rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from flowplatform.exceptions import Conflict, InvalidInput
from flowplatform.tenancy.models import Organization
from flowplatform.webhooks import delivering, sending, signing
from flowplatform.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint

State = WebhookDelivery.State


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once, at creation


def _problems(fields: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str, str]]:
    errors: list[tuple[tuple[str | int, ...], str, str]] = []
    if "url" in fields and (problem := sending.url_problem(fields["url"])):
        errors.append((("body", "url"), problem, "invalid"))
    if "events" in fields:
        events = fields["events"]
        if not isinstance(events, list) or not events:
            errors.append((("body", "events"), "must list at least one event type", "invalid"))
        else:
            for name in events:
                if name not in EventType.values:
                    known = ", ".join(EventType.values)
                    message = f"'{name}' is not an event type (one of: {known})"
                    errors.append((("body", "events"), message, "invalid_choice"))
            if len(set(events)) != len(events):
                errors.append((("body", "events"), "lists an event type twice", "invalid"))
    if fields.get("secret") is not None and (problem := signing.secret_problem(fields["secret"])):
        errors.append((("body", "secret"), problem, "invalid"))
    return errors


def check_endpoint(**fields: Any) -> None:
    """The checks of create_endpoint and update_endpoint, alone (admin's form runs them)."""
    if errors := _problems(fields):
        raise InvalidInput(errors)


def create_endpoint(
    organization: Organization,
    *,
    url: str,
    events: list[str],
    secret: str | None = None,
    enabled: bool = True,
    description: str = "",
) -> CreatedEndpoint:
    """A new endpoint; without a secret one is generated. The secret is returned here only."""
    check_endpoint(url=url, events=events, secret=secret)
    secret = secret or signing.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url=url,
        events=list(events),
        secret=secret,
        enabled=enabled,
        description=description,
    )
    return CreatedEndpoint(endpoint, secret)


def update_endpoint(endpoint: WebhookEndpoint, **changes: Any) -> WebhookEndpoint:
    """Change url, events, secret (a new one signs from now on), enabled or description."""
    changes = {name: value for name, value in changes.items() if value is not None}
    check_endpoint(**changes)
    for name, value in changes.items():
        setattr(endpoint, name, list(value) if name == "events" else value)
    endpoint.save()
    if changes.get("enabled"):  # what waited while it was disabled goes out now
        delivering.enqueue_drain(endpoint.organization_id, endpoint.pk)
    return endpoint


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """The endpoint and its delivery log; nothing more is sent to it."""
    endpoint.delete()


def send_again(delivery: WebhookDelivery) -> WebhookDelivery:
    """The same event (the same webhook-id) to the same endpoint once more, with a new retry
    period; refused while a worker is sending it."""
    now = timezone.now()
    if (
        delivery.state == State.SENDING
        and delivery.lease_expires_at
        and delivery.lease_expires_at > now
    ):
        raise Conflict("the delivery is being sent right now; try again when it has finished")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=State.PENDING,
        next_attempt_at=None,
        lease_expires_at=None,
        finished_at=None,
        retry_until=now + timedelta(seconds=settings.FLOWPLATFORM_WEBHOOK_RETRY_SECONDS),
    )
    delivering.enqueue_drain(delivery.organization_id, delivery.endpoint_id)
    delivery.refresh_from_db()
    return delivery
