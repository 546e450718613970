"""Upgrading many executions of a flow: POST /flows/{id}/upgrade-executions, the admin's
"Upgrade executions to this version" and `manage.py upgrade_executions`.

`create_job` matches the executions (the filters, at most FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS)
and records each as a pending UpgradeJobItem, in one transaction; `run_upgrade_job` (through the
tasks backend, after that commits) or `process` (a command, in-process) works through them in
batches of FLOWPLATFORM_UPGRADE_BATCH, each batch one transaction and each execution a savepoint
in it, its item's outcome written with its upgrade: a crash rolls back the batch it was in and
leaves those items pending, so the job resumes where it stopped and upgrades nothing twice.

The job holds a lease (FLOWPLATFORM_UPGRADE_LEASE_SECONDS), renewed as each batch commits (a
batch must take less); a worker that dies mid-job stops renewing it, and the reaper hands its
job row to another worker (executions.jobs.requeue_stalled_upgrades). An execution with
queued or running attempts when its turn comes is skipped (`live`), not waited for: run
another job once it settles.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.tasks import task
from django.utils import timezone

from executions import jobs
from executions.corrections import upgrades
from executions.models import Correction, FlowExecution, UpgradeJob, UpgradeJobItem
from flowplatform import logcontext, rls
from flowplatform.exceptions import DomainError, InvalidInput
from flowplatform.webhooks import events
from flows.models import Flow

logger = logging.getLogger("flowplatform.engine")
Outcome = UpgradeJobItem.Outcome
JobStatus = UpgradeJob.Status
# A skip is a state the execution is in, not an error of the job (see UpgradeJobSerializer).
SKIPS = {"flow_execution_deleted": "deleted", "flow_execution_live": "live"}
SKIPPED_VALIDATION = {"already_on_version"}


def matching(
    flow: Flow,
    *,
    from_version: int | None = None,
    statuses: list[str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Any:
    """The flow's executions the filters match, oldest first (deleted ones included: they are
    skipped with a reason, so the counts account for every execution asked about)."""
    rows = FlowExecution.objects.filter(organization_id=flow.organization_id, flow=flow)
    if from_version is not None:
        rows = rows.filter(flow_version__version=from_version)
    if statuses:
        rows = rows.filter(status__in=statuses)
    if created_after is not None:
        rows = rows.filter(created_at__gte=created_after)
    if created_before is not None:
        rows = rows.filter(created_at__lt=created_before)
    return rows.order_by("created_at", "id")


@transaction.atomic
def create_job(
    flow: Flow,
    *,
    actor: str,
    to_version: int | None = None,
    from_version: int | None = None,
    statuses: list[str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    execute_flow: bool = False,
    dry_run: bool = False,
    reason: str | None = None,
    source: str = Correction.Source.API,
    enqueue: bool = True,
) -> UpgradeJob:
    """Match the executions and record the job (queued); with `enqueue`, its first run starts
    through the tasks backend once this commits (with the embedded backend: before this
    returns to the request's caller). Refused (422) when the flow has no such version or more
    executions match than FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS."""
    version = upgrades.target_version(flow.pk, to_version, "to_version")
    limit = settings.FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS
    filters = {
        "from_version": from_version,
        "status": statuses or None,
        "created_after": created_after,
        "created_before": created_before,
    }
    ids = list(matching(flow, **_as_kwargs(filters)).values_list("pk", flat=True)[: limit + 1])
    if len(ids) > limit:
        raise InvalidInput.field(
            "filters",
            f"more than {limit} executions match (FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS): narrow "
            "the filters (from_version, status, created_after, created_before)",
            "too_many_executions",
        )
    job = UpgradeJob.objects.create(
        organization_id=flow.organization_id,
        flow=flow,
        to_version=version,
        filters={k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in filters.items()},
        execute_flow=execute_flow,
        dry_run=dry_run,
        reason=reason or "",
        source=source,
        modified_by=actor,
        matched=len(ids),
    )
    UpgradeJobItem.objects.bulk_create(
        [
            UpgradeJobItem(
                organization_id=flow.organization_id, job=job, flow_execution_id=pk, position=i
            )
            for i, pk in enumerate(ids)
        ],
        batch_size=1000,
    )
    if enqueue:
        org, pk = str(flow.organization_id), str(job.pk)
        jobs.with_commit(lambda: run_upgrade_job.enqueue(pk, org))
    return job


def _as_kwargs(filters: dict[str, Any]) -> dict[str, Any]:
    return {
        "from_version": filters["from_version"],
        "statuses": filters["status"],
        "created_after": filters["created_after"],
        "created_before": filters["created_before"],
    }


@task()
def run_upgrade_job(job_id: str, organization_id: str) -> None:
    """The tasks backend's entry: work through the job's pending executions."""
    with logcontext.scope(organization_id=organization_id):
        process(uuid.UUID(job_id), uuid.UUID(organization_id))


def process(
    job_id: uuid.UUID,
    organization_id: uuid.UUID,
    *,
    progress: Callable[[UpgradeJob], None] | None = None,
) -> UpgradeJob:
    """Run the job's batches until no item is pending; `progress` is told after each batch.
    Safe to run twice at once or again after a crash: each item is upgraded once."""
    with rls.tenant_scope(organization_id):  # committed first: a crash from here on is seen
        now = timezone.now()
        UpgradeJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(started_at=now)
        # This runner takes the job over (from a lost one, too): its lease starts now.
        UpgradeJob.objects.filter(
            pk=job_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).update(status=JobStatus.RUNNING, lease_expires_at=_lease_end())
    while True:
        with rls.tenant_scope(organization_id):
            job, more = _batch(job_id)
        if progress is not None:
            progress(job)
        if not more:
            return job


def _batch(job_id: uuid.UUID) -> tuple[UpgradeJob, bool]:
    """One batch in one transaction (the caller's): the job row locked, its next pending items
    (skipping ones another runner holds), each upgraded in a savepoint with its outcome."""
    job = UpgradeJob.objects.select_for_update().select_related("to_version").get(pk=job_id)
    if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        return job, False
    items = list(
        job.items.filter(outcome=Outcome.PENDING)
        .select_related("flow_execution__organization", "flow_execution__flow_version")
        .order_by("position")
        .select_for_update(skip_locked=True, of=("self",))[: settings.FLOWPLATFORM_UPGRADE_BATCH]
    )
    outcomes: Counter[str] = Counter()
    for item in items:
        _upgrade_item(job, item)
        outcomes[item.outcome] += 1
    job.upgraded += outcomes[Outcome.UPGRADED]
    job.skipped += outcomes[Outcome.SKIPPED]
    job.failed += outcomes[Outcome.FAILED]
    more = job.items.filter(outcome=Outcome.PENDING).exists()
    job.started_at = job.started_at or timezone.now()
    if more:
        job.status, job.lease_expires_at = JobStatus.RUNNING, _lease_end()
    else:
        job.status, job.lease_expires_at = JobStatus.COMPLETED, None
        job.finished_at = timezone.now()
    job.save()
    if not more:
        events.upgrade_job_finished(job)
    return job, more


def _lease_end() -> datetime:
    return timezone.now() + timedelta(seconds=settings.FLOWPLATFORM_UPGRADE_LEASE_SECONDS)


@logcontext.scope()  # each item's correction id ends with the item
def _upgrade_item(job: UpgradeJob, item: UpgradeJobItem) -> None:
    """Upgrade (or preview) one execution in a savepoint; record what became of it."""
    flow_execution = item.flow_execution
    item.from_version = flow_execution.flow_version.version
    try:
        with transaction.atomic():
            kwargs = {
                "flow_version": job.to_version.version,
                "actor": job.modified_by,
                "execute_flow": job.execute_flow,
                "reason": job.reason,
                "source": job.source,
            }
            if job.dry_run:
                result = upgrades.preview_upgrade(flow_execution, **kwargs)
            else:
                result = upgrades.upgrade_flow_execution(flow_execution, job=job, **kwargs)
    except InvalidInput as exc:
        code = exc.errors[0][2] if exc.errors else exc.code
        skipped = code in SKIPPED_VALIDATION
        message = "; ".join(text for _, text, _ in exc.errors) or str(exc)
        _settle(item, Outcome.SKIPPED if skipped else Outcome.FAILED, code, message)
    except DomainError as exc:
        skip = SKIPS.get(exc.code)
        _settle(item, Outcome.SKIPPED if skip else Outcome.FAILED, skip or exc.code, str(exc))
    except DatabaseError:
        raise  # the batch rolls back; its items stay pending for the next run
    except Exception as exc:  # one execution's bug must not stop the job
        logger.exception("upgrading flow execution %s failed", flow_execution.pk)
        _settle(item, Outcome.FAILED, "error", f"{type(exc).__name__}: {exc}")
    else:
        item.stale_tasks = len(result.stale_tasks)
        item.tasks_to_run = len(result.tasks_to_run)
        item.correction = result.correction
        _settle(item, Outcome.UPGRADED, "", "")


def _settle(item: UpgradeJobItem, outcome: str, code: str, message: str) -> None:
    item.outcome, item.code, item.message = outcome, code, message
    item.save()
