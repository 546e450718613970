"""HTTP for /task-outputs."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from executions.corrections import task_outputs
from flowplatform.api.serializers import REASON_HEADER_PARAMETER, correction_reason
from flowplatform.api.views import RecordWriteMixin, TenantViewSet
from outputs.filters import TaskOutputFilterSet
from outputs.models import TaskOutput
from outputs.serializers import (
    TaskOutputCreateSerializer,
    TaskOutputSerializer,
    TaskOutputUpdateSerializer,
)


@extend_schema_view(
    list=extend_schema(summary="List task outputs with filtering"),
    retrieve=extend_schema(summary="Get a task output"),
    create=extend_schema(
        summary="Create task output",
        description=(
            "The output becomes the task's current output (what its dependents read). When it "
            "supersedes one, it is a correction: recorded (GET /corrections) with the optional "
            "`reason`, and every transitive dependent's latest attempt becomes `stale`."
        ),
        parameters=[REASON_HEADER_PARAMETER],
        request=TaskOutputCreateSerializer,
        responses={
            201: OpenApiResponse(TaskOutputSerializer, "Task output successfully created"),
        },
    ),
    update=extend_schema(
        summary="Replace a task output",
        description="A changed output or status is a correction: recorded with the optional "
        "`reason`; the task's dependents become stale.",
        parameters=[REASON_HEADER_PARAMETER],
        request=TaskOutputUpdateSerializer,
    ),
    partial_update=extend_schema(
        summary="Change some fields of a task output",
        parameters=[REASON_HEADER_PARAMETER],
        request=TaskOutputUpdateSerializer,
    ),
    destroy=extend_schema(
        summary="Soft-delete a task output (status becomes deleted)",
        description="A correction: the task's previous output (if any) is current again and "
        "its dependents become stale.",
        parameters=[REASON_HEADER_PARAMETER],
    ),
)
class TaskOutputViewSet(
    RecordWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet
):
    """Task outputs: the published result of a task in a flow execution (seed page 003)."""

    queryset = TaskOutput.objects.all()
    serializer_class = TaskOutputSerializer
    create_serializer_class = TaskOutputCreateSerializer
    update_serializer_class = TaskOutputUpdateSerializer
    filterset_class = TaskOutputFilterSet
    identity_fields = ("id", "flow_execution_id", "organization_id", "task_name")
    not_found_message = "Task output not found"

    def create_record(self, organization: Any, *, actor: str, **fields: Any) -> Any:
        return task_outputs.create_task_output(organization, actor=actor, **fields)

    def update_record(self, record: TaskOutput, **kwargs: Any) -> TaskOutput:
        return task_outputs.update_task_output(record, **kwargs)

    def destroy(self, request: Request, pk: str) -> Response:
        task_outputs.delete_task_output(
            self.get_object(),
            actor=request.user.actor,
            reason=correction_reason(request, None),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
