"""HTTP for /flow-executions and /task-executions."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from executions import services
from executions.correction_serializers import CorrectionSerializer
from executions.corrections import preview, task_executions, upgrades
from executions.filters import (
    CorrectionFilterSet,
    FlowExecutionFilterSet,
    TaskExecutionFilterSet,
)
from executions.models import Correction, FlowExecution, TaskExecution
from executions.serializers import (
    CorrectionResponseSerializer,
    ExecuteFlowQuerySerializer,
    FlowExecutionCreateSerializer,
    FlowExecutionSerializer,
    ReexecuteQuerySerializer,
    TaskExecutionCreateSerializer,
    TaskExecutionSerializer,
    TaskExecutionUpdateSerializer,
)
from executions.upgrade_serializers import (
    UpgradeResponseSerializer,
    UpgradeSerializer,
    upgrade_response,
)
from flowplatform import rls
from flowplatform.api.errors import RequestValidationError
from flowplatform.api.serializers import REASON_HEADER_PARAMETER, correction_reason
from flowplatform.api.views import RecordWriteMixin, TenantViewSet
from flowplatform.exceptions import FLOW_EXECUTION_NOT_FOUND


@extend_schema_view(
    create=extend_schema(
        summary="Start a flow execution",
        description=(
            "Pins the flow version (the latest unless `flow_version` is given) and starts it: "
            "every task whose upstream tasks are completed gets an attempt. With the embedded "
            "tasks backend the flow has run (to completion, a failure, or a human task) when "
            "this answers; with worker processes it answers at once, `queued` or `running`."
        ),
        request=FlowExecutionCreateSerializer,
        responses={201: FlowExecutionSerializer},
    ),
    list=extend_schema(summary="List flow executions"),
    retrieve=extend_schema(summary="Get a flow execution with its task output summaries"),
    destroy=extend_schema(summary="Soft-delete a flow execution (status becomes deleted)"),
)
class FlowExecutionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Runs of a flow: each pins the flow version it runs and carries its output summaries."""

    queryset = FlowExecution.objects.select_related("flow_version")
    serializer_class = FlowExecutionSerializer
    filterset_class = FlowExecutionFilterSet
    not_found_message = FLOW_EXECUTION_NOT_FOUND

    def create(self, request: Request) -> Response:
        serializer = FlowExecutionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        flow_execution = services.start_flow_execution(
            self.organization,
            flow_id=data["flow_id"],
            input=data["input"],
            version=data.get("flow_version"),
            actor=request.user.actor,
        )
        return Response(self.get_serializer(flow_execution).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, pk: str) -> Response:
        services.delete_flow_execution(self.get_object(), actor=request.user.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Re-execute entire flow, or only its stale tasks",
        description=(
            "Every task runs again in dependency order as a new attempt (idx + 1); each task's "
            "latest attempt becomes `stale` (a queued or running one is cancelled). With "
            "`only=stale`, only the stale tasks run again; with `task=NAME`, that task and its "
            "dependents. Earlier attempts are kept."
        ),
        parameters=[ReexecuteQuerySerializer],
        request=None,
        responses={202: FlowExecutionSerializer},
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def execute(self, request: Request, pk: str) -> Response:
        query = ReexecuteQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise RequestValidationError(query.errors, location="query")
        flow_execution = services.reexecute_flow_execution(
            self.get_object(),
            actor=request.user.actor,
            only_stale=query.validated_data.get("only") == "stale",
            task=query.validated_data.get("task"),
        )
        return Response(self.get_serializer(flow_execution).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Upgrade the flow execution to another version of its flow",
        description=(
            "Moves the execution to `flow_version` (default: the flow's latest) and re-runs only "
            "what the definition change affects. A task is changed when its type, config, "
            "input, dependencies, `rerun`, loop definition or declared `version:` changed; "
            "changed tasks that had run and everything downstream of them go `stale` with the "
            "stale cause `definition_changed`; removed tasks' attempts and outputs are retired "
            "(kept as history); added tasks start once their upstream tasks are complete. With "
            "`execute_flow=true` the stale set runs again on the new version, with early cutoff. "
            "Recorded as a Correction with operation `upgrade`. `dry_run` and `preview_token` "
            "work as for a correction. Refused: a deleted execution (409 "
            "`flow_execution_deleted`), one with queued or running attempts (409 "
            "`flow_execution_live`), the version it runs (422 `already_on_version`), a version "
            "its work cannot carry over to (422 `incompatible_upgrade`)."
        ),
        parameters=[ExecuteFlowQuerySerializer, REASON_HEADER_PARAMETER],
        request=UpgradeSerializer,
        responses={200: UpgradeResponseSerializer},
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def upgrade(self, request: Request, pk: str) -> Response:
        flow_execution = self.get_object()  # another organization's is a 404 before anything
        query = ExecuteFlowQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise RequestValidationError(query.errors, location="query")
        body = UpgradeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        kwargs = {
            "flow_version": body.validated_data.get("flow_version"),
            "actor": request.user.actor,
            "execute_flow": query.validated_data["execute_flow"],
            "reason": correction_reason(request, body.validated_data.get("reason")),
            "preview_token": query.validated_data.get("preview_token"),
        }
        if query.validated_data["dry_run"]:
            result = upgrades.preview_upgrade(flow_execution, predict=True, **kwargs)
            shown = result.flow_execution
        else:
            try:
                result = upgrades.upgrade_flow_execution(flow_execution, **kwargs)
            except preview.PreviewOutdated as exc:
                fresh = upgrades.preview_upgrade(
                    flow_execution, predict=True, **{**kwargs, "preview_token": None}
                )
                exc.details = {"preview": upgrade_response(fresh, fresh.flow_execution)}
                raise
            shown = self.get_queryset().get(pk=flow_execution.pk)
        return Response(upgrade_response(result, shown))

    def refresh_response(self, response: Any) -> None:
        """An upgrade's answer nests the flow execution: after its jobs ran (the embedded
        backend), that is re-read as it is now."""
        data = getattr(response, "data", None)
        if response.status_code < 300 and isinstance(data, dict) and "flow_execution" in data:
            with rls.tenant_scope(self.organization):
                record = self.get_queryset().get(pk=data["flow_execution"]["id"])
                response.data = {**data, "flow_execution": self.get_serializer(record).data}
            return
        super().refresh_response(response)


def correction_response(result: task_executions.CorrectionResult) -> dict[str, Any]:
    record = result.task_execution
    record.stale_tasks = result.stale_tasks
    record.stale_iterations = result.stale_iterations
    record.predictions = result.predictions
    record.started_tasks = [attempt.task_name for attempt in result.started]
    record.new_attempts = [] if result.dry_run else [attempt.id for attempt in result.started]
    record.dry_run = result.dry_run
    record.preview_token = result.preview_token if result.dry_run else None
    record.correction_id = None if result.correction is None else result.correction.pk
    return CorrectionResponseSerializer(record).data


@extend_schema_view(
    list=extend_schema(summary="List task executions with filtering"),
    retrieve=extend_schema(summary="Get a task execution"),
    create=extend_schema(
        summary="Create new task execution",
        request=TaskExecutionCreateSerializer,
        responses={201: TaskExecutionSerializer},
    ),
    update=extend_schema(
        summary="Update task execution and optionally re-execute flow",
        description=(
            "The correction path, in one transaction with the flow execution locked: validate "
            "(identity fields unchanged; allowed status transition; only the task's current "
            "attempt), save, publish the output as the task's current TaskOutput (summaries are "
            "recomputed), mark every transitive dependent's latest attempt `stale` (queued or "
            "running ones are cancelled) and, with `execute_flow=true`, run exactly those tasks "
            "again with inputs resolved from the corrected outputs; earlier attempts are kept. "
            "`dry_run=true` answers the same without writing anything, with a `preview_token`; "
            "a later PUT with `?preview_token=` is applied only if nothing the preview saw has "
            "changed (else 409 `preview_outdated` with the fresh preview in "
            "`error.details.preview`). Every applied change is recorded as a Correction "
            "(GET /corrections), with the optional `reason` (body field or "
            "`X-Correction-Reason` header); each attempt it makes stale shows `stale_cause`. A "
            "stale task whose freshly resolved input equals its previous completed attempt's "
            "is not run again: its new attempt reuses that output (`reused_from`) unless its "
            "definition says `rerun: always`. A correction that leaves the task's current "
            "output as it was makes nothing stale. Concurrency: optimistic "
            "locking via `updated_at` — send the value you read to get 409 instead of "
            "overwriting a newer change; omit it for last-write-wins."
        ),
        request=TaskExecutionUpdateSerializer,
        parameters=[ExecuteFlowQuerySerializer, REASON_HEADER_PARAMETER],
        responses={
            200: OpenApiResponse(
                CorrectionResponseSerializer, "Task execution updated successfully"
            )
        },
    ),
    partial_update=extend_schema(
        summary="Change some fields of a task execution (the same correction path as PUT)",
        request=TaskExecutionUpdateSerializer,
        parameters=[ExecuteFlowQuerySerializer, REASON_HEADER_PARAMETER],
        responses={200: CorrectionResponseSerializer},
    ),
    destroy=extend_schema(summary="Soft-delete a task execution (status becomes deleted)"),
)
class TaskExecutionViewSet(
    RecordWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet
):
    """Task executions: one attempt of one task in a flow execution (seed page 000)."""

    # An upgrade's stale cause names its versions and changed fields (from its Correction):
    # one more query per page, however many attempts it lists.
    queryset = TaskExecution.objects.prefetch_related(
        Prefetch(
            "stale_correction",
            queryset=Correction.objects.filter(operation=Correction.Operation.UPGRADE).only(
                "id", "before", "after", "changes"
            ),
        )
    )
    serializer_class = TaskExecutionSerializer
    create_serializer_class = TaskExecutionCreateSerializer
    update_serializer_class = TaskExecutionUpdateSerializer
    filterset_class = TaskExecutionFilterSet
    identity_fields = (
        "id",
        "flow_execution_id",
        "organization_id",
        "task_name",
        "task_execution_idx",
    )
    not_found_message = "Task execution not found"

    def create_record(self, organization: Any, *, actor: str, **fields: Any) -> Any:
        return services.create_task_execution(organization, actor=actor, **fields)

    def update(self, request: Request, pk: str, partial: bool = False) -> Response:
        query = ExecuteFlowQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise RequestValidationError(query.errors, location="query")
        task_execution = self.get_object()
        kwargs = {
            "execute_flow": query.validated_data["execute_flow"],
            "preview_token": query.validated_data.get("preview_token"),
            **self.split_update(request, partial),
        }
        kwargs["summary"] = kwargs["changes"].pop("summary", None)
        correction = (
            task_executions.preview_correction
            if query.validated_data["dry_run"]
            else task_executions.correct_task_execution
        )
        try:
            result = correction(task_execution, **kwargs)
        except preview.PreviewOutdated as exc:
            fresh = task_executions.preview_correction(
                task_execution, **{**kwargs, "preview_token": None}
            )
            exc.details = {"preview": correction_response(fresh)}
            raise
        return Response(correction_response(result))

    def destroy(self, request: Request, pk: str) -> Response:
        services.delete_task_execution(self.get_object(), actor=request.user.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="List corrections (who changed which task's result, and why)"),
    retrieve=extend_schema(summary="Get a correction with its stale set and started attempts"),
)
class CorrectionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Corrections: every change a person made to a task's result (read-only)."""

    queryset = Correction.objects.prefetch_related(
        Prefetch(
            "started_attempts",
            queryset=TaskExecution.objects.only(
                "id",
                "task_name",
                "task_execution_idx",
                "iteration",
                "reused_from_id",
                "started_by_correction_id",
                "created_at",
            ),
        )
    )
    serializer_class = CorrectionSerializer
    filterset_class = CorrectionFilterSet
    not_found_message = "Correction not found"
