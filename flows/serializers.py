"""Wire format of flows and flow versions."""

from __future__ import annotations

from rest_framework import serializers

from flowplatform.api.serializers import StrictFieldsMixin, UUIDField
from flows.models import Flow, FlowVersion


class FlowSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    organization_id = UUIDField(read_only=True)
    version = serializers.IntegerField(
        source="current_version.version",
        read_only=True,
        help_text="Number of the latest version (1, 2, …).",
    )
    definition = serializers.CharField(
        source="current_version.definition",
        trim_whitespace=False,
        help_text="The latest version's YAML text. Changing it adds a new version.",
    )

    class Meta:
        model = Flow
        fields = [
            "id",
            "organization_id",
            "name",
            "description",
            "definition",
            "version",
            "modified_by",
            "created_at",
            "updated_at",
            "deleted_at",
        ]
        read_only_fields = ["modified_by", "created_at", "updated_at", "deleted_at"]
        extra_kwargs = {
            "name": {"min_length": 1, "max_length": 200},
            "description": {"required": False, "allow_blank": True},
        }


class FlowVersionSerializer(serializers.ModelSerializer):
    flow_id = UUIDField(read_only=True)
    organization_id = UUIDField(read_only=True)

    class Meta:
        model = FlowVersion
        fields = [
            "id",
            "organization_id",
            "flow_id",
            "version",
            "definition",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields
