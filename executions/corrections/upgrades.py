"""Upgrading one flow execution to another version of its flow: POST
/flow-executions/{id}/upgrade, the admin's "Upgrade" page, and each execution of an upgrade job
(executions.corrections.upgrade_jobs) call `upgrade_flow_execution` (or `preview_upgrade`).

In one transaction with the flow execution's row locked: check it may move (not deleted,
nothing queued or running, another version of its own flow that can take its work), check the
preview token, open the Correction (operation `upgrade`), let the engine move it
(engine.upgrading), close the Correction with the stale set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction

from executions import locking, selectors
from executions.corrections import preview, records
from executions.engine import predicting, upgrading
from executions.models import Correction, FlowExecution, TaskExecution, UpgradeJob
from flowplatform.exceptions import Conflict, InvalidInput
from flows import changes
from flows.definitions import spec_for
from flows.models import FlowVersion


class FlowExecutionLive(Conflict):
    code = "flow_execution_live"


class FlowExecutionDeleted(Conflict):
    code = "flow_execution_deleted"


@dataclass(frozen=True)
class UpgradeResult:
    flow_execution: FlowExecution
    from_version: int
    to_version: int
    change: changes.DefinitionChange
    stale_tasks: list[str] = field(default_factory=list)
    stale_iterations: dict[str, list[int]] = field(default_factory=dict)
    started: list[TaskExecution] = field(default_factory=list)
    # With execute_flow: at most these run (the stale set and the added tasks; early cutoff
    # reuses what did not change). Without: the added tasks that start now.
    tasks_to_run: list[str] = field(default_factory=list)
    dry_run: bool = False
    preview_token: str | None = None
    correction: Correction | None = None
    # A dry run's (`predict`): what each task to run would do (executions.engine.predicting).
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)


def target_version(
    flow_id: Any, number: int | None, field_name: str = "flow_version"
) -> FlowVersion:
    """Version `number` of the flow (its latest when None); a 422 at `field_name` if there is
    none."""
    versions = FlowVersion.objects.filter(flow_id=flow_id)
    if number is None:
        return versions.order_by("-version").first()
    found = versions.filter(version=number).first()
    if found is None:
        latest = versions.order_by("-version").values_list("version", flat=True).first()
        raise InvalidInput.field(
            field_name,
            f"the flow has no version {number} (its versions are 1 to {latest})",
            "does_not_exist",
        )
    return found


def check_upgrade(flow_execution: FlowExecution, version: FlowVersion) -> None:
    """Refuse an upgrade the execution cannot take, naming the reason: deleted (409
    flow_execution_deleted), queued or running work (409 flow_execution_live), already on
    that version (422 already_on_version), a task whose attempts the new version's DAG cannot
    take (422 incompatible_upgrade). Two queries."""
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise FlowExecutionDeleted("the flow execution is deleted; it cannot be upgraded")
    if flow_execution.flow_version_id == version.pk:
        raise InvalidInput.field(
            "flow_version",
            f"the flow execution already runs version {version.version}",
            "already_on_version",
        )
    if selectors.live_attempts(flow_execution).exists():
        raise FlowExecutionLive(
            "the flow execution has queued or running attempts (a human task waiting for a "
            "person counts); upgrade it once they finish"
        )
    ran = set(
        TaskExecution.objects.filter(flow_execution=flow_execution)
        .values_list("task_name", flat=True)
        .distinct()
    )
    problems = changes.incompatibilities(
        spec_for(flow_execution.flow_version), spec_for(version), ran
    )
    if problems:
        raise InvalidInput(
            [(("body", "flow_version"), message, "incompatible_upgrade") for _, message in problems]
        )


@transaction.atomic
def upgrade_flow_execution(
    flow_execution: FlowExecution,
    *,
    flow_version: int | None,
    actor: str,
    execute_flow: bool = False,
    reason: str | None = None,
    source: str = Correction.Source.API,
    preview_token: str | None = None,
    issue_token: bool = False,
    job: UpgradeJob | None = None,
    predict: bool = False,
) -> UpgradeResult:
    """Upgrade the flow execution to `flow_version` (the flow's latest when None), as one
    Correction. `predict` (a dry run's, in its rolled-back transaction): also run the pure
    tasks of what it makes run, for the predictions (engine.predicting)."""
    flow_execution = locking.flow_execution_for_write(
        flow_execution.organization, flow_execution.pk
    )
    version = target_version(flow_execution.flow_id, flow_version)
    check_upgrade(flow_execution, version)
    from_version = flow_execution.flow_version.version
    token = None
    if preview_token is not None or issue_token:
        token = preview.upgrade_fingerprint(flow_execution, version.pk, execute_flow)
        if preview_token is not None and preview_token != token:
            raise preview.PreviewOutdated()
    correction = records.open_correction(
        flow_execution,
        task_name="",
        task_execution_id=None,
        task_output=None,
        operation=Correction.Operation.UPGRADE,
        source=source,
        actor=actor,
        reason=reason,
        before={"flow_version": from_version},
        execute_flow=execute_flow,
    )
    upgraded = upgrading.upgrade(
        flow_execution,
        version,
        actor=actor,
        execute_flow=execute_flow,
        correction_id=correction.pk,
    )
    correction.changes = upgraded.change.as_json()
    correction.upgrade_job = job
    correction.save(update_fields=["changes", "upgrade_job"])
    records.close_correction(
        correction,
        after={"flow_version": version.version},
        stale_tasks=upgraded.stale_tasks,
        task_output=None,
        stale_iterations=upgraded.stale_iterations,
    )
    spec = spec_for(version)
    if execute_flow:
        to_run = spec.dag.in_order({*upgraded.stale_tasks, *upgraded.change.added})
    else:
        to_run = spec.dag.in_order({a.task_name for a in upgraded.started})
    predictions: dict[str, dict[str, Any]] = {}
    if predict:
        affected = spec.dag.in_order({*upgraded.stale_tasks, *upgraded.change.added})
        predictions = predicting.predict(
            flow_execution, spec, affected, correction_id=correction.pk, executed=execute_flow
        )
    return UpgradeResult(
        predictions=predictions,
        flow_execution=flow_execution,
        from_version=from_version,
        to_version=version.version,
        change=upgraded.change,
        stale_tasks=upgraded.stale_tasks,
        stale_iterations=upgraded.stale_iterations,
        started=upgraded.started,
        tasks_to_run=to_run,
        preview_token=token,
        correction=correction,
    )


def preview_upgrade(
    flow_execution: FlowExecution, *, predict: bool = False, **kwargs: Any
) -> UpgradeResult:
    """`dry_run`: the same upgrade in a transaction that is rolled back (nothing written, no
    job enqueued), with the preview token that binds a later upgrade to what it saw; with
    `predict` (one execution's dry run in the API), the predictions of what would run."""
    with transaction.atomic():
        result = upgrade_flow_execution(flow_execution, issue_token=True, predict=predict, **kwargs)
        transaction.set_rollback(True)
    return replace(result, dry_run=True, correction=None, started=[])
