"""Wire format of corrections (GET /corrections)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from executions.models import Correction
from flowplatform.api.serializers import UUIDField

REASON_READ_HELP = "Why, in the words of the person who made it; null if none was given."


class BlankAsNullField(serializers.CharField):
    def to_representation(self, value: str) -> str | None:
        return value or None


class StartedAttemptSerializer(serializers.Serializer):
    id = UUIDField()
    task_name = serializers.CharField()
    task_execution_idx = serializers.IntegerField()
    iteration = serializers.IntegerField(allow_null=True)
    reused_from = UUIDField(allow_null=True)


PREDICTION_ACTIONS = ("run", "reuse", "unknown")  # the schema's PredictionActionEnum


class PredictionSerializer(serializers.Serializer):
    """What a dry run predicts one downstream task would do (executions.engine.predicting)."""

    action = serializers.ChoiceField(
        choices=PREDICTION_ACTIONS,
        help_text="`run`: it runs again, and (for a side-effect-free type) `output` is what it "
        "will produce; `reuse`: early cutoff keeps its previous result (its input did not "
        "change); `unknown`: it will run, with a result that cannot be known without running "
        "it (a `python`, `http` or `human` task, or one that needs such a task's output or the "
        "output of a task predicted to fail).",
    )
    input = serializers.JSONField(
        required=False,
        help_text="The input it will run on, where it is known (absent when it depends on an "
        "unknown output). Of a looped task: its iterations' inputs, in order.",
    )
    output = serializers.JSONField(
        required=False, help_text="The output it will produce or reuse, where it is known."
    )
    error = serializers.JSONField(
        required=False,
        help_text="Instead of `output`, when it is known that it will fail (its input does not "
        "resolve, or its side-effect-free executor fails on it): `{type, message}`.",
    )


class CorrectionSerializer(serializers.ModelSerializer):
    """A correction: who changed which task's result, when, why, and what that did."""

    organization_id = UUIDField(read_only=True)
    flow_execution_id = UUIDField(read_only=True)
    task_execution_id = UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The corrected attempt (for a task output change, the task's latest attempt).",
    )
    task_output_id = UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The task output it published (a task execution correction), created, edited "
        "or deleted.",
    )
    source = serializers.ChoiceField(
        choices=Correction.Source.choices, read_only=True, help_text="api, admin or command."
    )
    operation = serializers.ChoiceField(
        choices=Correction.Operation.choices,
        read_only=True,
        help_text="What was changed: a task execution (PUT/PATCH), or a task output "
        "(POST superseding the current one, PUT/PATCH, DELETE).",
    )
    modified_by = serializers.CharField(read_only=True, help_text="Who made the correction.")
    reason = BlankAsNullField(read_only=True, allow_null=True, help_text=REASON_READ_HELP)
    before = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text="Task execution corrections: the attempt's status, output and error, and the "
        "task's summary in the flow execution's task_outputs_summary, before the change. Task "
        "output corrections: the task's current output (task_output_id, status, output, summary, "
        "tags) before the change; null if it had none.",
    )
    after = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The same, after the change."
    )
    stale_tasks = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="The tasks it made stale, in dependency order.",
    )
    stale_iterations = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField()),
        read_only=True,
        help_text="Of the looped tasks it made stale, the iterations: task name → iterations.",
    )
    changes = serializers.JSONField(
        read_only=True,
        help_text="Of an upgrade (operation `upgrade`): the tasks changed (task → changed "
        "fields), added and removed between `before.flow_version` and `after.flow_version`; "
        "{} otherwise.",
    )
    upgrade_job_id = UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The upgrade job (GET /upgrade-jobs/{id}) this upgrade was part of, if any.",
    )
    execute_flow = serializers.BooleanField(
        read_only=True, help_text="Whether it re-executed the stale tasks."
    )
    started_attempts = serializers.SerializerMethodField(
        help_text="Attempts its re-execution created, as they were created (also later ones, as "
        "upstream tasks completed); `reused_from` is set on those early cutoff reused."
    )

    class Meta:
        model = Correction
        fields = [
            "id",
            "organization_id",
            "flow_execution_id",
            "task_name",
            "iteration",
            "task_execution_id",
            "task_output_id",
            "source",
            "operation",
            "modified_by",
            "reason",
            "before",
            "after",
            "stale_tasks",
            "stale_iterations",
            "changes",
            "upgrade_job_id",
            "execute_flow",
            "started_attempts",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(StartedAttemptSerializer(many=True))
    def get_started_attempts(self, correction: Correction) -> list[dict[str, Any]]:
        return [
            {
                "id": attempt.id,
                "task_name": attempt.task_name,
                "task_execution_idx": attempt.task_execution_idx,
                "iteration": attempt.iteration,
                "reused_from": attempt.reused_from_id,
            }
            for attempt in correction.started_attempts.all()
        ]
