"""The reaper: running attempts whose worker stopped renewing its lease are failed as lost and
retried; jobs a lost worker left behind are repaired. Every db_worker runs it periodically
(db_worker's reaper thread), and `manage.py reap_expired` by hand."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from executions import jobs, leases, locking, transitions
from executions.engine import advancing, planning, status
from executions.models import TaskExecution
from flowplatform import logcontext, rls
from flowplatform.webhooks import delivering
from flows.definitions import spec_for

logger = logging.getLogger("flowplatform.engine")


@dataclass(frozen=True)
class Reaped:
    attempt_id: uuid.UUID
    flow_execution_id: uuid.UUID
    task_name: str
    idx: int
    lease_owner: str
    retry_id: uuid.UUID | None  # the next attempt, if retries remained


def _expired() -> QuerySet[TaskExecution]:
    return TaskExecution.objects.filter(
        status__in=transitions.REAP.sources, lease_expires_at__lt=Now()
    )


def expired_leases(limit: int = 1000) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """(organization, flow execution, attempt) of running attempts whose lease expired, oldest
    expiry first. Ids only, read across organizations (rls.lookup: the reaper is the system's,
    and what it then changes happens in each organization's own scope, and is logged)."""
    with rls.lookup():
        return list(
            _expired()
            .order_by("lease_expires_at")
            .values_list("organization_id", "flow_execution_id", "id")[:limit]
        )


def reap_expired(limit: int = 1000) -> list[Reaped]:
    """Fail every running attempt whose worker stopped renewing its lease, and retry it.

    Per flow execution, with its row locked (the lock order): the attempt moves running →
    failed only where it is still running with an expired lease (compare-and-set), so two
    reapers, or a worker that was only slow and finishes now, never both win. The failure says
    the worker was lost; a new attempt (idx + 1, same input) is queued if the task has
    retries left, else the flow execution settles as failed as for any failure.
    """
    groups: dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]] = {}
    for organization_id, flow_execution_id, attempt_id in expired_leases(limit):
        groups.setdefault((organization_id, flow_execution_id), []).append(attempt_id)
    try:
        jobs.requeue_stranded_jobs(limit)
        jobs.requeue_stalled_upgrades()
        delivering.requeue_lost_deliveries()
    except Exception:
        logger.exception("re-queueing stranded jobs failed")
    reaped: list[Reaped] = []
    for (organization_id, flow_execution_id), ids in groups.items():
        try:  # one flow execution that cannot be reaped must not stop the others' reaping
            with (
                rls.tenant_scope(organization_id),
                logcontext.scope(organization_id=organization_id),
            ):
                reaped += _reap(flow_execution_id, ids)
        except Exception:
            logger.exception("reaping flow execution %s failed", flow_execution_id)
    return reaped


def _reap(flow_execution_id: uuid.UUID, ids: list[uuid.UUID]) -> list[Reaped]:
    flow_execution = locking.lock_for_worker(flow_execution_id)
    try:
        spec = spec_for(flow_execution.flow_version)
    except Exception:  # its definition no longer loads: fail the attempts, retry none
        logger.exception("flow execution %s: its definition does not load", flow_execution_id)
        spec = None
    candidates = list(_expired().filter(pk__in=ids).order_by("task_name"))
    now = timezone.now()
    expired = []
    for attempt in candidates:
        attempt.error = {
            "type": leases.WORKER_LOST,
            "message": f"The worker running this attempt ({attempt.lease_owner or 'unknown'}) "
            f"was lost: its lease expired at {attempt.lease_expires_at.isoformat()} without "
            "being renewed.",
        }
        if transitions.reap(attempt.pk, error=attempt.error, now=now):
            expired.append(attempt)
    if not expired:
        return []
    reaped = []
    for attempt in expired:
        next_attempt = planning.retry(flow_execution, spec, attempt) if spec is not None else None
        if next_attempt is None and spec is not None and attempt.iteration is not None:
            _loop_on(flow_execution, spec, attempt)
        logger.warning(
            "reaped attempt %s (%s#%d of flow execution %s): worker %s lost; %s",
            attempt.pk,
            attempt.task_name,
            attempt.task_execution_idx,
            flow_execution_id,
            attempt.lease_owner or "unknown",
            f"retrying as #{next_attempt.task_execution_idx}"
            if next_attempt
            else "no retries left",
        )
        reaped.append(
            Reaped(
                attempt.pk,
                flow_execution_id,
                attempt.task_name,
                attempt.task_execution_idx,
                attempt.lease_owner,
                next_attempt.pk if next_attempt else None,
            )
        )
    jobs.fail_lost_jobs([a.pk for a in expired])
    if spec is not None:
        status.refresh_status(flow_execution, spec)
    return reaped


def _loop_on(flow_execution: Any, spec: Any, attempt: TaskExecution) -> None:
    """A reaped iteration with no retry left: its loop takes its step (the next iteration of a
    for_each with max_parallel; a for_each that tolerates failures may be done: its
    dependents start)."""
    _, output = advancing.advance(flow_execution, spec, attempt, failed=True)
    if not planning.pending(output):
        planning.schedule(
            flow_execution,
            spec,
            spec.dag.downstream[attempt.task_name],
            correction_id=attempt.started_by_correction_id,
        )
