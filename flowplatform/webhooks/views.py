"""HTTP for /webhook-endpoints, their deliveries and "send again"."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from flowplatform import rls
from flowplatform.api.views import TenantViewSet
from flowplatform.exceptions import NotFound
from flowplatform.webhooks import services
from flowplatform.webhooks.models import WebhookDelivery, WebhookEndpoint
from flowplatform.webhooks.serializers import (
    WebhookDeliverySerializer,
    WebhookEndpointCreatedSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointWriteSerializer,
)

DELIVERY_NOT_FOUND = "Webhook delivery not found"


@extend_schema_view(
    list=extend_schema(summary="List webhook endpoints"),
    retrieve=extend_schema(summary="Get a webhook endpoint (never its secret)"),
    create=extend_schema(
        summary="Add a webhook endpoint; its secret is in this answer only",
        request=WebhookEndpointWriteSerializer,
        responses={201: WebhookEndpointCreatedSerializer},
    ),
    update=extend_schema(
        summary="Replace a webhook endpoint's settings (a secret sent replaces the old one)",
        request=WebhookEndpointWriteSerializer,
    ),
    partial_update=extend_schema(
        summary="Change some of a webhook endpoint's settings",
        request=WebhookEndpointWriteSerializer(partial=True),
    ),
    destroy=extend_schema(summary="Delete a webhook endpoint and its delivery log"),
)
class WebhookEndpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Where an organization's events are POSTed, signed (README, "Webhooks")."""

    queryset = WebhookEndpoint.objects.order_by("created_at", "id")
    serializer_class = WebhookEndpointSerializer
    filterset_class = None
    not_found_message = "Webhook endpoint not found"

    def create(self, request: Request) -> Response:
        body = WebhookEndpointWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        created = services.create_endpoint(self.organization, **body.validated_data)
        data = {**WebhookEndpointSerializer(created.endpoint).data, "secret": created.secret}
        return Response(data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str, partial: bool = False) -> Response:
        endpoint = self.get_object()
        body = WebhookEndpointWriteSerializer(data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        endpoint = services.update_endpoint(endpoint, **body.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk, partial=True)

    def destroy(self, request: Request, pk: str) -> Response:
        services.delete_endpoint(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="List an endpoint's deliveries, newest first: status, attempts, latency, error",
        filters=False,
        responses=WebhookDeliverySerializer(many=True),  # paginated like every list
    )
    @action(
        detail=True,
        methods=["get"],
        serializer_class=WebhookDeliverySerializer,
        filterset_class=None,
    )
    def deliveries(self, request: Request, pk: str) -> Response:
        endpoint = self.get_object()
        queryset = (
            WebhookDelivery.objects.filter(endpoint=endpoint)
            .select_related("event")
            .order_by("-created_at", "-id")
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)

    @extend_schema(
        summary="Send a delivery's event again (the same id), in the background",
        parameters=[OpenApiParameter("delivery_id", str, OpenApiParameter.PATH)],
        request=None,
        responses={202: WebhookDeliverySerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"deliveries/(?P<delivery_id>[^/]+)/send-again",
        serializer_class=WebhookDeliverySerializer,
        filterset_class=None,
    )
    def send_again(self, request: Request, pk: str, delivery_id: str) -> Response:
        endpoint = self.get_object()
        try:
            delivery_pk = uuid.UUID(delivery_id)
        except ValueError:
            raise NotFound(DELIVERY_NOT_FOUND) from None
        delivery = (
            WebhookDelivery.objects.filter(endpoint=endpoint, pk=delivery_pk)
            .select_related("event")
            .first()
        )
        if delivery is None:
            raise NotFound(DELIVERY_NOT_FOUND)
        delivery = services.send_again(delivery)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    def refresh_response(self, response: Response) -> None:
        """The embedded backend sent what the request enqueued: answer the delivery as it is."""
        data = getattr(response, "data", None)
        if response.status_code != 202 or not isinstance(data, dict) or "id" not in data:
            super().refresh_response(response)
            return
        with rls.tenant_scope(self.organization):
            delivery = WebhookDelivery.objects.select_related("event").filter(pk=data["id"]).first()
            if delivery is not None:
                response.data = WebhookDeliverySerializer(delivery).data
