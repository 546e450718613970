"""The wire shape of /webhook-endpoints and their deliveries."""

from __future__ import annotations

from rest_framework import serializers

from flowplatform.api.serializers import StrictSerializer
from flowplatform.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint

URL_HELP = (
    "Where events are POSTed: an http:// or https:// URL whose host is allowed "
    "(FLOWPLATFORM_HTTP_ALLOWED_HOSTS, exact match, as for `http` tasks)."
)
SIGNING_HELP = (
    "Write-only. Signs every delivery (Standard Webhooks): `whsec_` and base64 of 24 to 64 "
    "random bytes. Left out at creation, one is generated; it is returned once, in the "
    "creation's answer, and never again."
)
EVENTS_HELP = "The event types it receives (at least one)."


class WebhookEndpointSerializer(serializers.ModelSerializer):
    organization_id = serializers.UUIDField(read_only=True)
    events = serializers.ListField(child=serializers.ChoiceField(EventType.choices), read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "organization_id",
            "url",
            "events",
            "enabled",
            "description",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The signing secret, shown this once: store it now."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointWriteSerializer(StrictSerializer):
    url = serializers.CharField(max_length=2000, help_text=URL_HELP)
    secret = serializers.CharField(
        max_length=200, required=False, write_only=True, help_text=SIGNING_HELP
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(EventType.choices), allow_empty=False, help_text=EVENTS_HELP
    )
    enabled = serializers.BooleanField(default=True, help_text="Off: nothing is sent to it.")
    description = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )

    class Meta:
        ref_name = "WebhookEndpointWrite"


class WebhookDeliverySerializer(serializers.ModelSerializer):
    endpoint_id = serializers.UUIDField(read_only=True)
    event_id = serializers.UUIDField(
        read_only=True, help_text="The event's id: its `id` and the `webhook-id` header."
    )
    event_type = serializers.ChoiceField(EventType.choices, source="event.type", read_only=True)
    status = serializers.ChoiceField(
        WebhookDelivery.State.choices,
        source="state",
        read_only=True,
        help_text="pending (due at next_attempt_at), sending, succeeded, failed (given up "
        "after the retry period).",
    )
    latency_ms = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="How long the last attempt took (ms)."
    )

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint_id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "latency_ms",
            "last_error",
            "last_attempt_at",
            "next_attempt_at",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields
