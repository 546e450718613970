"""Wire format of flow executions and task executions (seed page 000)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from executions.correction_serializers import PredictionSerializer
from executions.models import FlowExecution, StaleReason, TaskExecution
from flowplatform.api.serializers import (
    JSONObjectField,
    QueryBooleanField,
    StrictSerializer,
    UUIDField,
    modified_by_field,
    reason_field,
    server_set_field,
)

TE = TaskExecution._meta

FLOW_EXECUTION_ID_HELP = (
    "ID of the parent flow execution containing this task. Establishes the execution hierarchy "
    "and determines organization scope. All tasks in a flow execution share the same "
    "flow_execution_id."
)
ORGANIZATION_ID_HELP = (
    "ID of the organization owning this task execution. Inherited from parent flow execution "
    "for tenant isolation. All task executions are scoped to a single organization."
)
ID_HELP = (
    "Unique identifier for this task execution. Auto-generated UUID assigned at creation time. "
    "Used for direct resource access via GET /task-executions/{id}."
)
STATUS_HELP = (
    "Current execution state of the task: queued, running, completed, failed, deleted, stale. "
    "Transitions: queued → running → completed | failed; any → deleted (soft delete, hidden "
    "from lists); completed/failed → stale (data outdated). A deleted attempt cannot change."
)
UPDATED_AT_LOCK_HELP = (
    "Optimistic lock: send the updated_at you read. If the stored value differs, the update is "
    "refused with 409 and the current record. Omit it for last-write-wins."
)


class FlowExecutionSerializer(serializers.ModelSerializer):
    organization_id = UUIDField(read_only=True)
    flow_id = UUIDField(read_only=True)
    flow_version = serializers.IntegerField(
        source="flow_version.version",
        read_only=True,
        min_value=1,
        help_text="Number of the flow version this execution runs (pinned at creation).",
    )

    class Meta:
        model = FlowExecution
        fields = [
            "id",
            "organization_id",
            "flow_id",
            "flow_version",
            "status",
            "input",
            "task_outputs_summary",
            "modified_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class DefinitionChangeSerializer(serializers.Serializer):
    from_version = serializers.IntegerField(help_text="The version the execution ran before.")
    to_version = serializers.IntegerField(help_text="The version it was upgraded to.")
    changed_fields = serializers.ListField(
        child=serializers.CharField(),
        help_text="Of upstream_task's definition: type, config, input, depends_on, rerun, "
        "for_each, loop, tolerate_failures, version.",
    )


class StaleCauseSerializer(serializers.Serializer):
    correction_id = UUIDField(
        allow_null=True,
        help_text="The correction that made the attempt stale (GET /corrections/{id}); null "
        "when it went stale for another reason.",
    )
    upstream_task = serializers.CharField(
        allow_null=True,
        help_text="The corrected task through which staleness reached this attempt: its nearest "
        "corrected ancestor (this task itself when a person marked it stale).",
    )
    upstream_iteration = serializers.IntegerField(
        allow_null=True,
        help_text="The corrected iteration of that task, when one iteration of a looped task "
        "was corrected; null otherwise.",
    )
    definition_change = DefinitionChangeSerializer(
        allow_null=True,
        required=False,
        help_text="For `definition_changed`: the upgrade's versions and, of `upstream_task` "
        "(the changed task), which fields changed. Null for other reasons.",
    )
    at = serializers.DateTimeField(help_text="When the attempt went stale.")
    by = serializers.CharField(help_text="Who made it stale (the correction's actor).")
    reason = serializers.ChoiceField(
        choices=StaleReason.choices,
        help_text="correction; upstream_rerun (an upstream task ran again outside a "
        "correction); reexecution (the whole flow was re-executed); flow_execution_deleted; "
        "iteration_removed (its item left the for_each list, or its until loop ended before "
        "it: the iteration is retired and counts for nothing); definition_changed (an upgrade "
        "changed this task's definition, or upstream_task's); task_removed (an upgrade moved "
        "the execution to a version without this task: retired).",
    )


class TaskExecutionSerializer(serializers.ModelSerializer):
    """The representation every endpoint returns."""

    id = UUIDField(read_only=True, help_text=ID_HELP)
    flow_execution_id = UUIDField(read_only=True, help_text=FLOW_EXECUTION_ID_HELP)
    organization_id = UUIDField(read_only=True, help_text=ORGANIZATION_ID_HELP)
    status = serializers.ChoiceField(
        choices=TaskExecution.Status.choices, read_only=True, help_text=STATUS_HELP
    )
    modified_by = modified_by_field(read_only=True)
    stale_cause = serializers.SerializerMethodField(
        help_text="Why the attempt is stale; null unless its status is stale."
    )
    reused_from = UUIDField(
        source="reused_from_id",
        read_only=True,
        allow_null=True,
        help_text="Early cutoff: the earlier completed attempt whose output this attempt reuses "
        "because its freshly resolved input was the same (the task did not run again).",
    )

    class Meta:
        model = TaskExecution
        fields = [
            "id",
            "flow_execution_id",
            "organization_id",
            "task_name",
            "task_execution_idx",
            "iteration",
            "status",
            "input",
            "output",
            "error",
            "modified_by",
            "created_at",
            "updated_at",
            "stale_cause",
            "reused_from",
        ]
        read_only_fields = fields

    @extend_schema_field(StaleCauseSerializer(allow_null=True))
    def get_stale_cause(self, attempt: TaskExecution) -> dict[str, Any] | None:
        if attempt.status != TaskExecution.Status.STALE or not attempt.stale_reason:
            return None
        return {
            "correction_id": attempt.stale_correction_id,
            "upstream_task": attempt.stale_upstream_task or None,
            "upstream_iteration": attempt.stale_upstream_iteration,
            "definition_change": _definition_change(attempt),
            "at": attempt.stale_at,
            "by": attempt.stale_by,
            "reason": attempt.stale_reason,
        }


def _definition_change(attempt: TaskExecution) -> dict[str, Any] | None:
    """An upgrade's stale cause, from its Correction (select_related by the views)."""
    if attempt.stale_reason != StaleReason.DEFINITION_CHANGED or not attempt.stale_correction_id:
        return None
    record = attempt.stale_correction
    return {
        "from_version": (record.before or {}).get("flow_version"),
        "to_version": (record.after or {}).get("flow_version"),
        "changed_fields": record.changes.get("changed", {}).get(attempt.stale_upstream_task, []),
    }


class _TaskExecutionWriteFields(StrictSerializer):
    task_name = serializers.CharField(
        min_length=1,
        max_length=200,
        trim_whitespace=False,
        help_text=TE.get_field("task_name").help_text,
    )
    input = serializers.JSONField(
        required=False, allow_null=True, help_text=TE.get_field("input").help_text
    )
    output = serializers.JSONField(
        required=False, allow_null=True, help_text=TE.get_field("output").help_text
    )
    error = serializers.JSONField(
        required=False, allow_null=True, help_text=TE.get_field("error").help_text
    )
    modified_by = modified_by_field(required=False)
    created_at = server_set_field(serializers.DateTimeField, "When the attempt was created.")
    stale_cause = server_set_field(serializers.JSONField, "Why the attempt is stale.")
    reused_from = server_set_field(UUIDField, "The attempt whose output is reused.")
    iteration = server_set_field(
        serializers.IntegerField, "Which iteration of a looped task (set by the engine)."
    )


class TaskExecutionCreateSerializer(_TaskExecutionWriteFields):
    """POST /task-executions. Without task_execution_idx the attempt is the task's next one."""

    ignored_fields = ("id", "created_at", "updated_at", "stale_cause", "reused_from", "iteration")

    id = server_set_field(UUIDField, ID_HELP)
    flow_execution_id = UUIDField(help_text=FLOW_EXECUTION_ID_HELP)
    organization_id = UUIDField(help_text=ORGANIZATION_ID_HELP)
    task_execution_idx = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=2**31 - 1,
        help_text=TE.get_field("task_execution_idx").help_text + " Default: the next index.",
    )
    status = serializers.ChoiceField(
        choices=TaskExecution.Status.choices,
        default=TaskExecution.Status.QUEUED,
        help_text=STATUS_HELP,
    )
    updated_at = server_set_field(serializers.DateTimeField, "When the attempt last changed.")


class TaskExecutionUpdateSerializer(_TaskExecutionWriteFields):
    """PUT (every required field of the seed) and PATCH (any subset) of /task-executions/{id}.

    Identity fields (id, flow_execution_id, organization_id, task_name, task_execution_idx) must
    equal the stored ones. Optional fields left out keep their stored values.
    """

    ignored_fields = ("created_at", "stale_cause", "reused_from", "iteration")

    id = UUIDField(help_text=ID_HELP)
    flow_execution_id = UUIDField(help_text=FLOW_EXECUTION_ID_HELP)
    organization_id = UUIDField(help_text=ORGANIZATION_ID_HELP)
    task_execution_idx = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, help_text=TE.get_field("task_execution_idx").help_text
    )
    status = serializers.ChoiceField(choices=TaskExecution.Status.choices, help_text=STATUS_HELP)
    updated_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text=UPDATED_AT_LOCK_HELP
    )
    reason = reason_field()
    summary = JSONObjectField(
        required=False,
        write_only=True,
        help_text="The corrected output's summary (a JSON object), published with it as the "
        "task output's summary. Without it the summary is derived from the output as the "
        "task's type derives it (a python task's `config.summary` function, else a generic "
        "one). Only for a correction that publishes a new output.",
    )


class ExecuteFlowQuerySerializer(serializers.Serializer):
    execute_flow = QueryBooleanField(
        default=False,
        help_text="Whether to re-execute downstream tasks after updating this task execution. "
        "If true, every task that depends on it (the stale tasks) runs again with inputs "
        "resolved from the corrected output; if false, they are only marked stale. "
        "Default: false for safety (explicit opt-in for re-execution).",
    )
    dry_run = QueryBooleanField(
        default=False,
        help_text="Validate and answer what would happen (the record as it would be, the stale "
        "tasks, the tasks that would start) without writing anything or starting any job. The "
        "answer carries a `preview_token`.",
    )
    preview_token = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        help_text="The `preview_token` of a dry run: the correction is applied only if nothing "
        "it saw has changed since (the corrected attempt, the latest attempt of every task "
        "downstream of it, the task's current output) and the request asks for the same result; "
        "otherwise 409 `preview_outdated` with the fresh preview in `error.details.preview`.",
        error_messages={"invalid": "Must be the 64-character preview_token of a dry run."},
    )


class CorrectionResponseSerializer(TaskExecutionSerializer):
    """The seed's task execution, plus what the correction did to the rest of the flow."""

    stale_tasks = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Tasks whose latest attempt this correction made stale (every transitive "
        "dependent that had run), in dependency order.",
    )
    stale_iterations = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField()),
        read_only=True,
        help_text="Of the looped tasks in stale_tasks (and the corrected task itself, for an "
        "until loop's later rounds), the iterations this correction made stale: task name → "
        "iterations, ascending.",
    )
    predictions = serializers.DictField(
        child=PredictionSerializer(),
        read_only=True,
        help_text="On a dry run, what each task downstream of the corrected one would do "
        "(task name → prediction, in dependency order): the tasks of side-effect-free types "
        "(`transform`) are run on the corrected values in the rolled-back preview, so their "
        "inputs and outputs, and which of them early cutoff reuses, are the ones the correction "
        "will produce. Without execute_flow, what running the stale set would do "
        "(POST /flow-executions/{id}/execute?only=stale). Empty when nothing downstream "
        "changes, and on a correction that is applied. The current values are in the tasks' "
        "attempts.",
    )
    started_tasks = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Tasks given a new attempt by this request (with execute_flow, the stale tasks "
        "whose inputs are ready; the rest follow as their upstream tasks complete).",
    )
    new_attempts = serializers.ListField(
        child=UUIDField(),
        read_only=True,
        help_text="Ids of the attempts this request started (empty on a dry run).",
    )
    dry_run = serializers.BooleanField(read_only=True, help_text="True for a preview.")
    preview_token = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="On a dry run: send it back as `?preview_token=` with the same change to apply "
        "it only if nothing this preview saw has changed. Null otherwise.",
    )
    correction_id = UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The Correction recorded for this change (GET /corrections/{id}); null on a "
        "dry run.",
    )

    class Meta(TaskExecutionSerializer.Meta):
        fields = [
            *TaskExecutionSerializer.Meta.fields,
            "stale_tasks",
            "stale_iterations",
            "predictions",
            "started_tasks",
            "new_attempts",
            "dry_run",
            "preview_token",
            "correction_id",
        ]
        read_only_fields = fields


class FlowExecutionCreateSerializer(StrictSerializer):
    """POST /flow-executions."""

    flow_id = UUIDField(help_text="The flow to run.")
    input = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The flow's input; expressions read it as flow.input.",
    )
    flow_version = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The version to run and pin; default: the flow's latest version.",
    )


class ReexecuteQuerySerializer(serializers.Serializer):
    only = serializers.ChoiceField(
        choices=["stale"],
        required=False,
        help_text="`stale`: re-run only the stale tasks (and what they release). Not with "
        "`task` (both are a 422 at `task`).",
    )
    task = serializers.CharField(
        required=False,
        min_length=1,
        max_length=200,
        help_text="Re-run only this task and every task downstream of it. Not with `only` (both "
        "are a 422 at `task`).",
    )

    def validate(self, data: dict) -> dict:
        if "only" in data and "task" in data:
            raise serializers.ValidationError({"task": ["cannot be combined with only"]})
        return data
