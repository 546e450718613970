"""manage.py webhook_endpoints: list, add, change, delete an organization's webhook endpoints,
show an endpoint's deliveries and send one again (the same services as the API and admin)."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from flowplatform import rls
from flowplatform.commands import command_error
from flowplatform.exceptions import DomainError
from flowplatform.tenancy.services import get_organization
from flowplatform.webhooks import services
from flowplatform.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint

ARGUMENTS = {"events": "--event", "url": "--url", "secret": "--secret"}


def _events(values: list[str] | None) -> list[str] | None:
    """--event a --event b, or --event a,b."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


class Command(BaseCommand):
    help = (
        "Manage an organization's webhook endpoints: list, add (the signing secret is printed "
        "alone on the last line, once), change, delete, deliveries, send-again. Event types: "
        + ", ".join(EventType.values)
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, metavar="SLUG", help="The organization's slug.")
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list", help="The endpoints (never their secrets).")
        add = actions.add_parser("add", help="Add an endpoint.")
        add.add_argument("--url", required=True)
        add.add_argument("--event", action="append", required=True, metavar="TYPE")
        add.add_argument("--secret", help="whsec_…; default: a new one, printed once.")
        add.add_argument("--disabled", action="store_true", help="Add it switched off.")
        add.add_argument("--description", default="")
        change = actions.add_parser("change", help="Change an endpoint.")
        change.add_argument("endpoint", type=uuid.UUID, metavar="ENDPOINT_ID")
        change.add_argument("--url")
        change.add_argument("--event", action="append", metavar="TYPE")
        change.add_argument("--secret", help="A new signing secret (whsec_…).")
        switch = change.add_mutually_exclusive_group()
        switch.add_argument("--enable", dest="enabled", action="store_true", default=None)
        switch.add_argument("--disable", dest="enabled", action="store_false")
        change.add_argument("--description")
        delete = actions.add_parser("delete", help="Delete an endpoint and its delivery log.")
        delete.add_argument("endpoint", type=uuid.UUID, metavar="ENDPOINT_ID")
        log = actions.add_parser("deliveries", help="An endpoint's latest deliveries.")
        log.add_argument("endpoint", type=uuid.UUID, metavar="ENDPOINT_ID")
        log.add_argument("--limit", type=int, default=20)
        again = actions.add_parser("send-again", help="Send a delivery's event again.")
        again.add_argument("delivery", type=uuid.UUID, metavar="DELIVERY_ID")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            organization = get_organization(options["org"])
        except DomainError as exc:
            raise CommandError(exc.message) from None
        action = options["action"]
        try:
            with rls.tenant_scope(organization):
                getattr(self, f"_{action.replace('-', '_')}")(organization, options)
        except DomainError as exc:  # rolled back: nothing changed
            raise command_error(exc, ARGUMENTS) from None

    def _endpoint(self, organization: Any, pk: uuid.UUID) -> WebhookEndpoint:
        endpoint = WebhookEndpoint.objects.filter(organization=organization, pk=pk).first()
        if endpoint is None:
            raise CommandError(f"webhook endpoint {pk} does not exist in {organization.slug}")
        return endpoint

    def _list(self, organization: Any, options: dict[str, Any]) -> None:
        for endpoint in WebhookEndpoint.objects.filter(organization=organization):
            state = "enabled" if endpoint.enabled else "disabled"
            self.stdout.write(f"{endpoint.pk} {state} {endpoint.url} {','.join(endpoint.events)}")

    def _add(self, organization: Any, options: dict[str, Any]) -> None:
        created = services.create_endpoint(
            organization,
            url=options["url"],
            events=_events(options["event"]) or [],
            secret=options["secret"],
            enabled=not options["disabled"],
            description=options["description"],
        )
        endpoint = created.endpoint
        self.stdout.write(
            f"webhook endpoint {endpoint.pk} for {organization.slug}: {endpoint.url} "
            f"({','.join(endpoint.events)}); its signing secret (store it now; it is not shown "
            "again):"
        )
        self.stdout.write(created.secret)

    def _change(self, organization: Any, options: dict[str, Any]) -> None:
        endpoint = services.update_endpoint(
            self._endpoint(organization, options["endpoint"]),
            url=options["url"],
            events=_events(options["event"]),
            secret=options["secret"],
            enabled=options["enabled"],
            description=options["description"],
        )
        self.stdout.write(f"changed webhook endpoint {endpoint.pk}")

    def _delete(self, organization: Any, options: dict[str, Any]) -> None:
        services.delete_endpoint(self._endpoint(organization, options["endpoint"]))
        self.stdout.write(f"deleted webhook endpoint {options['endpoint']}")

    def _deliveries(self, organization: Any, options: dict[str, Any]) -> None:
        endpoint = self._endpoint(organization, options["endpoint"])
        rows = (
            WebhookDelivery.objects.filter(endpoint=endpoint)
            .select_related("event")
            .order_by("-created_at", "-id")[: max(options["limit"], 1)]
        )
        for d in rows:
            latency = "-" if d.latency_ms is None else f"{d.latency_ms}ms"
            error = f" {d.last_error}" if d.last_error else ""
            self.stdout.write(
                f"{d.pk} {d.event.type} event {d.event_id} {d.state} attempts={d.attempts} "
                f"latency={latency}{error}"
            )

    def _send_again(self, organization: Any, options: dict[str, Any]) -> None:
        delivery = WebhookDelivery.objects.filter(
            organization=organization, pk=options["delivery"]
        ).first()
        if delivery is None:
            raise CommandError(f"webhook delivery {options['delivery']} does not exist")
        delivery = services.send_again(delivery)
        self.stdout.write(f"delivery {delivery.pk}: {delivery.state}, attempts={delivery.attempts}")
