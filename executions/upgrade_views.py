"""HTTP for upgrading many executions: POST /flows/{id}/upgrade-executions and /upgrade-jobs."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from executions.corrections import upgrade_jobs
from executions.models import UpgradeJob
from executions.upgrade_serializers import (
    UpgradeJobCreateSerializer,
    UpgradeJobItemSerializer,
    UpgradeJobSerializer,
)
from flowplatform import rls
from flowplatform.api.errors import RequestValidationError
from flowplatform.api.filters import ordering_filter
from flowplatform.api.serializers import QueryBooleanField, correction_reason
from flowplatform.api.views import TenantViewSet
from flowplatform.exceptions import Conflict
from flows.models import Flow


class UpgradeJobQuerySerializer(serializers.Serializer):
    execute_flow = QueryBooleanField(
        default=False,
        help_text="Re-run each upgraded execution's stale tasks on the new version (with early "
        "cutoff); if false they are only marked stale. Default: false.",
    )
    dry_run = QueryBooleanField(
        default=False,
        help_text="Upgrade nothing: the job previews each execution (how many tasks would go "
        "stale and run) and records the counts on its items.",
    )


class FlowUpgradeViewSet(TenantViewSet):
    """The flow's action that upgrades its executions (the rest of /flows is flows.views)."""

    queryset = Flow.objects.all()
    serializer_class = UpgradeJobSerializer
    filterset_class = None
    not_found_message = "Flow not found"

    @extend_schema(
        summary="Upgrade a flow's executions to one of its versions, in the background",
        description=(
            "Matches the flow's executions (`from_version`, `status`, `created_after`, "
            "`created_before`; at most FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS, else 422 "
            "`too_many_executions`) and answers at once with an upgrade job (202). The job "
            "upgrades them in batches through the tasks backend, each as "
            "POST /flow-executions/{id}/upgrade would, each at most once; it resumes after a "
            "crash. Deleted executions, ones already on the version and ones with queued or "
            "running attempts when their turn comes are skipped with that reason; ones the "
            "version cannot take fail with theirs. Progress: GET /upgrade-jobs/{id}."
        ),
        parameters=[UpgradeJobQuerySerializer],
        request=UpgradeJobCreateSerializer,
        responses={202: UpgradeJobSerializer},
    )
    @action(detail=True, methods=["post"], url_path="upgrade-executions", filterset_class=None)
    def upgrade_executions(self, request: Request, pk: str) -> Response:
        flow = self.get_object()  # another organization's is a 404 before anything
        query = UpgradeJobQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise RequestValidationError(query.errors, location="query")
        body = UpgradeJobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if flow.deleted_at is not None:
            raise Conflict("the flow is deleted; its executions cannot be upgraded")
        data = body.validated_data
        job = upgrade_jobs.create_job(
            flow,
            actor=request.user.actor,
            to_version=data.get("to_version"),
            from_version=data.get("from_version"),
            statuses=data.get("status"),
            created_after=data.get("created_after"),
            created_before=data.get("created_before"),
            execute_flow=query.validated_data["execute_flow"],
            dry_run=query.validated_data["dry_run"],
            reason=correction_reason(request, data.get("reason")),
        )
        return Response(UpgradeJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    def refresh_response(self, response: Response) -> None:
        """The embedded backend ran the job when the request committed: answer it as it is."""
        data = getattr(response, "data", None)
        if response.status_code == 202 and isinstance(data, dict) and "id" in data:
            with rls.tenant_scope(self.organization):
                job = UpgradeJob.objects.select_related("to_version").get(pk=data["id"])
                response.data = UpgradeJobSerializer(job).data


class UpgradeJobFilterSet(django_filters.FilterSet):
    flow_id = django_filters.UUIDFilter(help_text="Only jobs of this flow.")
    status = django_filters.ChoiceFilter(
        choices=UpgradeJob.Status.choices, help_text="Only jobs in this status."
    )
    ordering = ordering_filter("created_at")

    class Meta:
        model = UpgradeJob
        fields = []


@extend_schema_view(
    list=extend_schema(summary="List upgrade jobs"),
    retrieve=extend_schema(summary="Get an upgrade job: its progress and outcome"),
)
class UpgradeJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Upgrade jobs: a flow's executions moved to one version in the background."""

    queryset = UpgradeJob.objects.select_related("to_version").order_by("created_at", "id")
    serializer_class = UpgradeJobSerializer
    filterset_class = UpgradeJobFilterSet
    not_found_message = "Upgrade job not found"

    @extend_schema(
        summary="List what became of each execution an upgrade job matched, in its order",
        filters=False,
        responses=UpgradeJobItemSerializer(many=True),  # paginated like every list
    )
    @action(
        detail=True,
        methods=["get"],
        serializer_class=UpgradeJobItemSerializer,
        filterset_class=None,
    )
    def executions(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        page = self.paginate_queryset(job.items.order_by("position"))
        return self.get_paginated_response(UpgradeJobItemSerializer(page, many=True).data)
