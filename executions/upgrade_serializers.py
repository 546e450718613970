"""Wire format of upgrades: POST /flow-executions/{id}/upgrade, POST
/flows/{id}/upgrade-executions and /upgrade-jobs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from executions.correction_serializers import PredictionSerializer
from executions.models import FlowExecution, UpgradeJob, UpgradeJobItem
from executions.serializers import FlowExecutionSerializer
from flowplatform.api.serializers import StrictSerializer, UUIDField, reason_field

TO_VERSION_HELP = "The version to move to; default: the flow's latest version."


class UpgradeSerializer(StrictSerializer):
    """POST /flow-executions/{id}/upgrade."""

    flow_version = serializers.IntegerField(required=False, min_value=1, help_text=TO_VERSION_HELP)
    reason = reason_field()


class UpgradeResponseSerializer(serializers.Serializer):
    flow_execution = FlowExecutionSerializer(
        help_text="The flow execution after the upgrade (as it would be, on a dry run)."
    )
    from_version = serializers.IntegerField(help_text="The version it ran before.")
    to_version = serializers.IntegerField(help_text="The version it runs now.")
    changed_tasks = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Tasks whose definition changed → which fields (type, config, input, "
        "depends_on, rerun, for_each, loop, tolerate_failures, version), in dependency order.",
    )
    added_tasks = serializers.ListField(
        child=serializers.CharField(), help_text="Tasks only the new version has."
    )
    removed_tasks = serializers.ListField(
        child=serializers.CharField(),
        help_text="Tasks the new version does not have: their attempts and outputs are retired "
        "(kept as history, stale cause `task_removed`).",
    )
    stale_tasks = serializers.ListField(
        child=serializers.CharField(),
        help_text="Tasks whose current attempt became stale for `definition_changed` (the "
        "changed tasks that had run and everything downstream of them), in dependency order.",
    )
    stale_iterations = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="Of the looped tasks in stale_tasks, the iterations that became stale.",
    )
    tasks_to_run = serializers.ListField(
        child=serializers.CharField(),
        help_text="With execute_flow: the tasks that run again at most (the stale set and the "
        "added tasks; early cutoff reuses a result whose input did not change). Without: the "
        "added tasks that start now.",
    )
    predictions = serializers.DictField(
        child=PredictionSerializer(),
        help_text="On a dry run, what each task in tasks_to_run would do on the new version "
        "(task name → prediction, in dependency order), as a correction's dry run predicts it: "
        "side-effect-free tasks are run in the rolled-back preview, so their inputs, outputs "
        "and early-cutoff reuses are the ones the upgrade will produce; others are `unknown`. "
        "Without execute_flow, what running the stale set afterwards would do. Empty when "
        "applied, and in an upgrade job's dry run.",
    )
    new_attempts = serializers.ListField(
        child=UUIDField(), help_text="Ids of the attempts this request started (none on a dry run)."
    )
    dry_run = serializers.BooleanField()
    preview_token = serializers.CharField(
        allow_null=True,
        help_text="On a dry run: send it back as `?preview_token=` to apply the upgrade only "
        "if nothing this preview saw has changed (else 409 `preview_outdated`).",
    )
    correction_id = UUIDField(
        allow_null=True,
        help_text="The Correction (operation `upgrade`) recorded; null on a dry run.",
    )


def upgrade_response(result: Any, flow_execution: FlowExecution) -> dict[str, Any]:
    return UpgradeResponseSerializer(
        {
            "flow_execution": flow_execution,
            "from_version": result.from_version,
            "to_version": result.to_version,
            "changed_tasks": result.change.changed,
            "added_tasks": result.change.added,
            "removed_tasks": result.change.removed,
            "stale_tasks": result.stale_tasks,
            "stale_iterations": result.stale_iterations,
            "tasks_to_run": result.tasks_to_run,
            "predictions": result.predictions,
            "new_attempts": [a.id for a in result.started],
            "dry_run": result.dry_run,
            "preview_token": result.preview_token if result.dry_run else None,
            "correction_id": None if result.correction is None else result.correction.pk,
        }
    ).data


class UpgradeJobCreateSerializer(StrictSerializer):
    """POST /flows/{id}/upgrade-executions: which executions, to which version."""

    to_version = serializers.IntegerField(required=False, min_value=1, help_text=TO_VERSION_HELP)
    from_version = serializers.IntegerField(
        required=False, min_value=1, help_text="Only executions pinned to this version."
    )
    status = serializers.ListField(
        child=serializers.ChoiceField(
            choices=[s for s in FlowExecution.Status.values if s != FlowExecution.Status.DELETED]
        ),
        required=False,
        allow_empty=False,
        help_text="Only executions in one of these statuses (deleted ones are never upgraded).",
    )
    created_after = serializers.DateTimeField(
        required=False, help_text="Only executions created at or after this time."
    )
    created_before = serializers.DateTimeField(
        required=False, help_text="Only executions created before this time."
    )
    reason = reason_field()

    def validate(self, data: dict) -> dict:
        after, before = data.get("created_after"), data.get("created_before")
        if after and before and after >= before:
            raise serializers.ValidationError(
                {"created_before": ["must be later than created_after"]}
            )
        return data


class UpgradeJobSerializer(serializers.ModelSerializer):
    organization_id = UUIDField(read_only=True)
    flow_id = UUIDField(read_only=True)
    to_version = serializers.IntegerField(
        source="to_version.version", read_only=True, help_text="The version executions move to."
    )
    pending = serializers.SerializerMethodField(help_text="Matched and not yet handled.")
    skipped_reasons = serializers.SerializerMethodField(
        help_text="Skipped executions by reason: deleted (soft-deleted since the job matched "
        "it), live (queued or running attempts when its turn came; run another job once it "
        "settles), already_on_version."
    )
    failures = serializers.SerializerMethodField(
        help_text="The first 100 executions that could not be upgraded, with the reason "
        "(e.g. incompatible_upgrade); all of them at /upgrade-jobs/{id}/executions."
    )

    class Meta:
        model = UpgradeJob
        fields = [
            "id",
            "organization_id",
            "flow_id",
            "to_version",
            "filters",
            "execute_flow",
            "dry_run",
            "status",
            "matched",
            "upgraded",
            "skipped",
            "failed",
            "pending",
            "skipped_reasons",
            "failures",
            "error",
            "reason",
            "modified_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_pending(self, job: UpgradeJob) -> int:
        return max(job.matched - job.upgraded - job.skipped - job.failed, 0)

    def get_skipped_reasons(self, job: UpgradeJob) -> dict[str, int]:
        counts: dict[str, int] = {}
        for code in job.items.filter(outcome=UpgradeJobItem.Outcome.SKIPPED).values_list(
            "code", flat=True
        ):
            counts[code] = counts.get(code, 0) + 1
        return dict(sorted(counts.items()))

    def get_failures(self, job: UpgradeJob) -> list[dict[str, Any]]:
        rows = job.items.filter(outcome=UpgradeJobItem.Outcome.FAILED).values_list(
            "flow_execution_id", "code", "message"
        )[:100]
        return [{"flow_execution_id": str(f), "code": c, "message": m} for f, c, m in rows]


class UpgradeJobItemSerializer(serializers.ModelSerializer):
    flow_execution_id = UUIDField(read_only=True)
    correction_id = UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = UpgradeJobItem
        fields = [
            "position",
            "flow_execution_id",
            "outcome",
            "code",
            "message",
            "from_version",
            "stale_tasks",
            "tasks_to_run",
            "correction_id",
            "updated_at",
        ]
        read_only_fields = fields
