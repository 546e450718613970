"""Wire format of task outputs (seed page 003)."""

from __future__ import annotations

from rest_framework import serializers

from flowplatform.api.serializers import (
    JSONObjectField,
    StrictSerializer,
    TagsField,
    UUIDField,
    modified_by_field,
    reason_field,
    server_set_field,
)
from outputs.models import TaskOutput

TO = TaskOutput._meta

ID_HELP = (
    "Unique identifier for this task output. Auto-generated UUID assigned at creation time. "
    "Used for direct resource access via GET /task-outputs/{id}."
)
FLOW_EXECUTION_ID_HELP = (
    "ID of the parent flow execution containing this task. Establishes the execution hierarchy "
    "and organization scope."
)
ORGANIZATION_ID_HELP = (
    "ID of the organization owning this task output. Inherited from parent flow execution. "
    "Used for multi-tenant isolation."
)
STATUS_HELP = (
    "Execution status when output was created: queued, running, in_progress, completed, failed, "
    "deleted (soft-deleted, excluded from queries), stale (outdated). Typically 'completed'."
)


class TaskOutputSerializer(serializers.ModelSerializer):
    id = UUIDField(read_only=True, help_text=ID_HELP)
    flow_execution_id = UUIDField(read_only=True, help_text=FLOW_EXECUTION_ID_HELP)
    organization_id = UUIDField(read_only=True, help_text=ORGANIZATION_ID_HELP)
    flow_version = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        min_value=1,
        help_text=TO.get_field("flow_version").help_text,
    )
    status = serializers.ChoiceField(
        choices=TaskOutput.Status.choices, read_only=True, help_text=STATUS_HELP
    )
    modified_by = modified_by_field(read_only=True)

    class Meta:
        model = TaskOutput
        fields = [
            "id",
            "flow_execution_id",
            "organization_id",
            "task_name",
            "output",
            "summary",
            "tags",
            "status",
            "flow_version",
            "modified_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class _TaskOutputWriteFields(StrictSerializer):
    flow_execution_id = UUIDField(help_text=FLOW_EXECUTION_ID_HELP)
    organization_id = UUIDField(help_text=ORGANIZATION_ID_HELP)
    task_name = serializers.CharField(
        min_length=1,
        max_length=200,
        trim_whitespace=False,
        help_text=TO.get_field("task_name").help_text,
    )
    output = serializers.JSONField(
        required=False, allow_null=True, help_text=TO.get_field("output").help_text
    )
    summary = JSONObjectField(help_text=TO.get_field("summary").help_text)
    tags = TagsField(required=False, allow_null=True, help_text=TO.get_field("tags").help_text)
    modified_by = modified_by_field(required=False)
    flow_version = serializers.IntegerField(
        read_only=True, help_text="Set by the server from the flow execution's pinned version."
    )
    created_at = server_set_field(serializers.DateTimeField, "When the output was created.")
    reason = reason_field()


class TaskOutputCreateSerializer(_TaskOutputWriteFields):
    """POST /task-outputs, exactly as seed page 003."""

    ignored_fields = ("id", "created_at", "updated_at")

    id = server_set_field(UUIDField, ID_HELP)
    status = serializers.ChoiceField(
        choices=TaskOutput.Status.choices, default=TaskOutput.Status.QUEUED, help_text=STATUS_HELP
    )
    updated_at = server_set_field(serializers.DateTimeField, "When the output last changed.")


class TaskOutputUpdateSerializer(_TaskOutputWriteFields):
    """PUT / PATCH /task-outputs/{id}: identity fields must match; updated_at is the lock."""

    ignored_fields = ("created_at",)

    id = UUIDField(help_text=ID_HELP)
    status = serializers.ChoiceField(choices=TaskOutput.Status.choices, help_text=STATUS_HELP)
    updated_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Optimistic lock: the updated_at you read; a different stored value → 409.",
    )
