"""django.tasks entry points and the queue: one job per queued attempt, enqueued only after the
transaction that created the attempt commits, and the repairs of django-tasks-db's job rows that
lost workers leave behind."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.tasks import task
from django.tasks.base import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from executions import leases
from executions.models import TaskExecution, UpgradeJob
from flowplatform import logcontext, rls

logger = logging.getLogger("flowplatform.engine")


@task()
def run_task_attempt(task_execution_id: str, organization_id: str | None = None) -> None:
    """Run one queued attempt, in transactions scoped to its organization (row-level
    security). Jobs enqueued before the organization was passed find it themselves."""
    # The job is an edge that calls up into the engine (the usual Django job pattern); imported
    # here because the engine enqueues this job, so a module-level import would be a cycle.
    from executions.engine import worker

    with logcontext.scope(organization_id=organization_id):
        worker.run_attempt(
            uuid.UUID(task_execution_id), uuid.UUID(organization_id) if organization_id else None
        )


@task()
def run_pure_wave(flow_execution_id: str, attempt_ids: list[str], organization_id: str) -> None:
    """Run queued attempts of pure task types of one flow execution, and the pure tasks they
    make ready, in the scheduling loop (engine.waves)."""
    from executions.engine import worker  # an edge calling up into the engine, as above

    with logcontext.scope(organization_id=organization_id):
        worker.run_wave(
            uuid.UUID(flow_execution_id),
            [uuid.UUID(a) for a in attempt_ids],
            uuid.UUID(organization_id),
        )


def with_commit(enqueue: Callable[[], Any]) -> None:
    """Enqueue a job so that it exists exactly when the current transaction's work does.

    With django-tasks-db (job rows in the same database) the row is inserted now, inside the
    transaction: it commits with the work or rolls back with it, so no process dying between
    the commit and an on-commit hook can leave committed work without its job. With another
    backend (the embedded one runs the job at once) it is enqueued once the transaction
    commits, as a robust hook: one that fails is logged and the others still run."""
    if uses_job_rows():
        enqueue()
    else:
        transaction.on_commit(enqueue, robust=True)


def enqueue_wave_after_commit(
    organization_id: uuid.UUID, flow_execution_id: uuid.UUID, attempt_ids: list[uuid.UUID]
) -> None:
    """One run_pure_wave job for these attempts, with the current transaction (with_commit)."""
    ids = [str(a) for a in attempt_ids]
    with_commit(lambda: run_pure_wave.enqueue(str(flow_execution_id), ids, str(organization_id)))


def enqueue_after_commit(organization_id: uuid.UUID, attempt_ids: list[uuid.UUID]) -> None:
    """A job for each attempt, with the current transaction (with_commit): none if it rolls
    back."""
    org = str(organization_id)
    for attempt_id in attempt_ids:
        with_commit(lambda a=attempt_id: run_task_attempt.enqueue(str(a), org))


# Repairs of django-tasks-db's job rows ---------------------------------------------------------


def uses_job_rows() -> bool:
    return settings.TASKS["default"]["BACKEND"].startswith("django_tasks_db.")


def _running_jobs(limit: int | None = None, **conditions: Any) -> dict[Any, list[str]]:
    """django-tasks-db's RUNNING jobs of ours matching `conditions`: job id → the ids of the
    attempts it runs (run_task_attempt's first argument, run_pure_wave's second)."""
    jobs = DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING,
        task_path__in=[run_task_attempt.module_path, run_pure_wave.module_path],
        **conditions,
    ).values_list("id", "task_path", "args_kwargs")
    running = {}
    for job_id, path, arguments in jobs[:limit]:
        args = arguments.get("args") or [None, []]
        ids = args[1] if path == run_pure_wave.module_path else args[:1]
        running[job_id] = [a for a in ids if a]
    return running


def requeue_stranded_jobs(limit: int = 1000) -> int:
    """django-tasks-db jobs a worker claimed but died before claiming their attempt (a window
    of milliseconds; SIGKILL, a lost machine), or in the middle of a wave (whose transaction
    then rolled back): RUNNING for longer than a lease while an attempt of theirs is still
    queued. Nothing would ever run that attempt: the job goes back to READY
    for another worker (running it twice is harmless: the attempt's claim is a
    compare-and-set). Returns how many."""
    if not uses_job_rows():
        return 0
    cutoff = timezone.now() - timedelta(seconds=leases.lease_seconds())
    jobs = _running_jobs(limit, started_at__lt=cutoff)
    if not jobs:
        return 0
    with rls.lookup():  # ids only: is each job's attempt still waiting?
        waiting = {
            str(pk)
            for pk in TaskExecution.objects.filter(
                pk__any_of=[a for ids in jobs.values() for a in ids],
                status=TaskExecution.Status.QUEUED,
            ).values_list("pk", flat=True)
        }
    stranded = [job_id for job_id, ids in jobs.items() if waiting.intersection(ids)]
    if stranded:
        requeue(stranded)
        logger.warning("re-queued %d job(s) whose worker died before claiming", len(stranded))
    return len(stranded)


# The upgrade job's body (executions.corrections.upgrade_jobs), named here without importing
# it: the use case is a layer above this module.
RUN_UPGRADE_JOB_PATH = "executions.corrections.upgrade_jobs.run_upgrade_job"


def requeue_stalled_upgrades(limit: int = 100) -> int:
    """Upgrade jobs whose runner stopped renewing their lease (its worker died mid-job): their
    django-tasks-db job rows go back to READY, and another worker resumes them where the last
    committed batch ended. Returns how many."""
    if not uses_job_rows():
        return 0
    with rls.lookup():
        stalled = {
            str(pk)
            for pk in UpgradeJob.objects.filter(
                status=UpgradeJob.Status.RUNNING, lease_expires_at__lt=timezone.now()
            ).values_list("pk", flat=True)[:limit]
        }
    if not stalled:
        return 0
    rows = DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING, task_path=RUN_UPGRADE_JOB_PATH
    ).values_list("id", "args_kwargs")
    lost = [pk for pk, arguments in rows if (arguments.get("args") or [None])[0] in stalled]
    if lost:
        requeue(lost)
        logger.warning("re-queued %d upgrade job(s) whose worker was lost", len(lost))
    return len(lost)


def requeue(job_ids: list[Any]) -> int:
    """Put RUNNING job rows back to READY for any worker to take."""
    return DBTaskResult.objects.filter(pk__in=job_ids, status=TaskResultStatus.RUNNING).update(
        status=TaskResultStatus.READY
    )


def mark_successful(job_ids: list[Any]) -> int:
    """RUNNING job rows whose attempt's outcome was recorded after all (a worker held it through
    a database outage): they are done."""
    return DBTaskResult.objects.filter(pk__in=job_ids, status=TaskResultStatus.RUNNING).update(
        status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now()
    )


def fail_lost_jobs(attempt_ids: list[uuid.UUID]) -> None:
    """The lost worker's django-tasks-db job rows stay RUNNING forever otherwise: mark them
    failed too, so the queue's own view (its admin, prune_db_task_results) agrees."""
    if not uses_job_rows():
        return
    ids = {str(a) for a in attempt_ids}
    lost = [job_id for job_id, attempts in _running_jobs().items() if ids.intersection(attempts)]
    if lost:
        DBTaskResult.objects.filter(pk__in=lost, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            exception_class_path=leases.WORKER_LOST_PATH,
            traceback="The worker running this job was lost (its lease expired).",
        )
