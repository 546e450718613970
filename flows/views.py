"""HTTP for /flows and /flows/{id}/versions."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from flowplatform.api.views import TenantViewSet
from flows import services
from flows.filters import FlowFilterSet
from flows.models import Flow, FlowVersion
from flows.serializers import FlowSerializer, FlowVersionSerializer


@extend_schema_view(
    list=extend_schema(summary="List flows"),
    create=extend_schema(summary="Create a flow (its definition becomes version 1)"),
    retrieve=extend_schema(summary="Get a flow with its latest definition"),
    update=extend_schema(summary="Replace a flow; a changed definition adds a version"),
    partial_update=extend_schema(summary="Change some of a flow's fields"),
    destroy=extend_schema(summary="Soft-delete a flow"),
)
class FlowViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Flows: named YAML definitions; each change of the definition is a new immutable version."""

    queryset = Flow.objects.select_related("current_version")
    serializer_class = FlowSerializer
    filterset_class = FlowFilterSet
    not_found_message = "Flow not found"

    def create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        flow = services.create_flow(
            self.organization,
            name=data["name"],
            description=data.get("description", ""),
            definition=data["current_version"]["definition"],
            actor=request.user.actor,
        )
        return Response(self.get_serializer(flow).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str, partial: bool = False) -> Response:
        flow = self.get_object()
        serializer = self.get_serializer(flow, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        flow = services.update_flow(
            flow,
            actor=request.user.actor,
            name=data.get("name"),
            description=data.get("description"),
            definition=data.get("current_version", {}).get("definition"),
        )
        return Response(self.get_serializer(flow).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk, partial=True)

    def destroy(self, request: Request, pk: str) -> Response:
        services.delete_flow(self.get_object(), actor=request.user.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="List a flow's versions, oldest first",
        filters=False,
        responses=FlowVersionSerializer(many=True),  # paginated like every list
    )
    @action(
        detail=True, methods=["get"], serializer_class=FlowVersionSerializer, filterset_class=None
    )
    def versions(self, request: Request, pk: str) -> Response:
        flow = self.get_object()
        queryset = FlowVersion.objects.filter(flow=flow).order_by("version")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(FlowVersionSerializer(page, many=True).data)
