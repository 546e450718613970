"""A worker's handling of one queued attempt (the job's body): claim it, run its executor, record
the outcome and move the flow on; retry a failure while retries remain.

Claiming (queued → running, with this process's lease) and recording the outcome are two
transactions scoped to the attempt's organization (row-level security); the executor runs
between them, outside any transaction, while the heartbeat renews the lease
(executions.leases).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from executions import jobs, leases, locking, selectors, transitions
from executions.engine import (
    advancing,
    planning,
    publishing,
    running,
    staleness,
    status,
    waves,
)
from executions.executors import ExecutorResult
from executions.models import FlowExecution, TaskExecution
from flowplatform import dbretry, logcontext, rls
from flows.definitions import FlowSpec, cached_spec, spec_for

logger = logging.getLogger("flowplatform.engine")

Status = TaskExecution.Status


def run_attempt(attempt_id: uuid.UUID, organization_id: uuid.UUID | None = None) -> None:
    """Claim the attempt if it is still queued, run it, record its outcome.

    If the database goes away while the outcome is recorded, the outcome is held in this
    process (`outcomes`) with its lease kept alive, and the database error is raised for the
    worker to wait for the database (db_worker); `record_held` writes it once it is back.
    """
    if organization_id is None:  # a job enqueued without its organization
        organization_id = rls.organization_of(TaskExecution, attempt_id, actor="worker")
        if organization_id is None:
            return
    record_held()  # what an earlier outage left to record comes first
    owner = leases.worker_identity()
    claim_sent = False
    try:
        with rls.tenant_scope(organization_id):
            attempt = (
                TaskExecution.objects.select_related("flow_execution__flow_version")
                .defer(
                    "flow_execution__task_outputs_summary",
                    *(f"flow_execution__{field}" for field in locking.VERSION_TEXT),
                )
                .filter(pk=attempt_id, status__in=transitions.CLAIM.sources)
                .first()
            )
            if attempt is None:
                return  # cancelled, already run by another worker, or gone
            logcontext.bind(correction_id=attempt.started_by_correction_id)
            now = timezone.now()
            flow_execution = attempt.flow_execution
            if flow_execution.status in transitions.FLOW_START.sources:
                transitions.start_flow(flow_execution.pk, now=now)  # the lock order: flow first
            claim_sent = True
            if not transitions.claim(attempt, owner=owner, expires=leases.expiry(), now=now):
                return  # another worker claimed it between the read and the claim
            spec = cached_spec(flow_execution.flow_version_id)
            if spec is None:
                try:
                    with transaction.atomic():  # reads the version's definition (deferred above)
                        spec = spec_for(flow_execution.flow_version)
                except Exception as exc:  # recorded below, once the claim is committed
                    spec, spec_error = None, exc
    except DATABASE_UNAVAILABLE:
        if claim_sent:  # it may have committed: nobody would run the attempt then
            outcomes.doubt_claim(attempt_id, organization_id, owner)
        raise
    hold = leases.heartbeat.hold(attempt.pk, organization_id, owner)
    result, error = running.execute(spec_error if spec is None else spec, attempt, hold=hold)
    record(attempt, owner, result, error)


DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


def run_wave(
    flow_execution_id: uuid.UUID, attempt_ids: list[uuid.UUID], organization_id: uuid.UUID
) -> None:
    """Run queued attempts of pure tasks of one flow execution, and the pure tasks they make
    ready, as one group of waves (engine.waves) in one transaction scoped to the organization.

    A group that cannot be written for another reason than the database being away (a bug,
    an output the database refuses) has rolled back whole: its attempts are still queued, and
    run one by one as jobs do (run_attempt), so each outcome is recorded on its own attempt.
    """
    record_held()  # what an earlier outage left to record comes first
    try:
        with rls.tenant_scope(organization_id):
            waves.Group(flow_execution_id, settings.FLOWPLATFORM_WAVE_TASKS).run(attempt_ids)
    except DATABASE_UNAVAILABLE:
        raise
    except Exception:
        logger.exception(
            "a wave of %d attempt(s) of flow execution %s could not be recorded; "
            "running them one by one",
            len(attempt_ids),
            flow_execution_id,
        )
        for attempt_id in attempt_ids:
            run_attempt(attempt_id, organization_id)


def record(
    attempt: TaskExecution, owner: str, result: ExecutorResult | None, error: dict | None
) -> None:
    """Record the outcome (`_write`). When the database is away, the outcome is held
    (`outcomes`) and the error raised."""
    item = Held(attempt, owner, result, error)
    try:
        _write(item)
    except DATABASE_UNAVAILABLE:
        outcomes.hold(item)
        logger.warning(
            "attempt %s (%s#%d) ran, but its outcome could not be recorded: the database is "
            "unavailable; it is kept, and recorded once the database is back",
            attempt.pk,
            attempt.task_name,
            attempt.task_execution_idx,
        )
        raise


def _write(item: Held) -> None:
    """Write an outcome: the result, or the failure — also when writing the result failed for
    another reason than the database being away (the item then holds that failure instead).
    Raises the database error while the database is away."""
    if item.result is not None:
        try:
            finish_in_scope(item.attempt, item.result)
            return
        except DATABASE_UNAVAILABLE:
            raise
        except Exception as exc:
            logger.exception("recording attempt %s failed", item.attempt.pk)
            item.result, item.error = None, running.failure(type(exc).__name__, str(exc))
    record_failure(item.attempt, item.error)


def finish_in_scope(
    attempt: TaskExecution, result: ExecutorResult | None = None, error: dict | None = None
) -> bool:
    """finish() in one transaction scoped to the attempt's organization, run again if
    PostgreSQL aborts it for a deadlock (flowplatform.dbretry): a task that succeeded is never
    recorded failed because its bookkeeping collided with another worker's."""

    def record() -> bool:
        with rls.tenant_scope(attempt.organization_id):
            return finish(attempt, result, error)

    return dbretry.retrying(record, what=f"recording attempt {attempt.pk}")


def record_failure(attempt: TaskExecution, error: dict) -> None:
    """Record the failure; if even that fails (e.g. the database refuses the message), record a
    bare one and settle the flow execution's status, so an attempt is never left running with
    nobody to finish it, nor its flow execution running with nothing left to run."""
    try:
        finish_in_scope(attempt, error=error)
    except DATABASE_UNAVAILABLE:
        raise
    except Exception:
        logger.exception("recording the failure of attempt %s failed", attempt.pk)
        with rls.tenant_scope(attempt.organization_id):
            locking.lock_for_worker(attempt.flow_execution_id)  # the lock order: flow first
            transitions.fail(
                attempt.pk,
                error={"type": error["type"], "message": "the error could not be recorded"},
                now=timezone.now(),
            )
        try:  # a separate transaction: the attempt's failure stands even if this fails too
            with rls.tenant_scope(attempt.organization_id):
                flow_execution = locking.lock_for_worker(attempt.flow_execution_id)
                status.refresh_status(flow_execution, spec_for(flow_execution.flow_version))
        except Exception:
            logger.exception("settling flow execution %s failed", attempt.flow_execution_id)


# Outcomes an outage kept from being recorded ------------------------------------------------


@dataclass
class Held:
    """An outcome this process holds for an attempt it ran: the database was away."""

    attempt: TaskExecution
    owner: str
    result: ExecutorResult | None
    error: dict | None
    tries: int = 0


class Outcomes:
    """The outcomes this process could not record, and claims it is unsure landed (the
    database went away as the claim committed). Thread-safe: the worker's loop, its reaper
    thread and the next job all call record_held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[uuid.UUID, Held] = {}
        self._doubted: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}

    def hold(self, item: Held) -> None:
        with self._lock:
            self._held[item.attempt.pk] = item
        leases.heartbeat.keep(item.attempt.pk, item.attempt.organization_id, item.owner)

    def doubt_claim(self, attempt_id: uuid.UUID, organization_id: uuid.UUID, owner: str) -> None:
        with self._lock:
            self._doubted[attempt_id] = (organization_id, owner)

    def __bool__(self) -> bool:
        return bool(self._held or self._doubted)

    def take(self) -> tuple[list[Held], dict[uuid.UUID, tuple[uuid.UUID, str]]]:
        with self._lock:
            held, self._held = list(self._held.values()), {}
            doubted, self._doubted = self._doubted, {}
        return held, doubted

    def put_back(self, items: list[Held], doubted: dict[uuid.UUID, tuple[uuid.UUID, str]]) -> None:
        with self._lock:
            self._held.update({item.attempt.pk: item for item in items})
            self._doubted.update(doubted)


outcomes = Outcomes()
MAX_RECORD_TRIES = 5


def record_held() -> set[uuid.UUID]:
    """Record the outcomes an outage kept from being written; returns the attempts now
    settled (recorded, handed back, or found no longer running: cancelled, or reaped after an
    outage longer than a lease).

    Each outcome is tried up to MAX_RECORD_TRIES times while the database fails; then the
    attempt is handed back (running → queued) to run again. A claim that may have landed
    while nobody ran its attempt is handed back the same way. What still fails stays held for
    the next call. No query when nothing is held.
    """
    if not outcomes:
        return set()
    held, doubted = outcomes.take()
    settled: set[uuid.UUID] = set()
    keep: list[Held] = []
    for item in held:
        try:
            _record_held(item)
        except DATABASE_UNAVAILABLE:
            keep.append(item)
            continue
        leases.heartbeat.release(item.attempt.pk)
        settled.add(item.attempt.pk)
    still_doubted = {}
    for attempt_id, (organization_id, owner) in doubted.items():
        try:
            _hand_back(attempt_id, organization_id, owner)
        except DATABASE_UNAVAILABLE:
            still_doubted[attempt_id] = (organization_id, owner)
    outcomes.put_back(keep, still_doubted)
    return settled


def _record_held(item: Held) -> None:
    """One held outcome, written or (after too many tries) handed back. Raises the database
    error while that is not possible."""
    try:
        _write(item)
        logger.warning("recorded the outcome of attempt %s after the outage", item.attempt.pk)
    except DATABASE_UNAVAILABLE:
        item.tries += 1
        if item.tries < MAX_RECORD_TRIES:
            raise
        _hand_back(item.attempt.pk, item.attempt.organization_id, item.owner)


def _hand_back(attempt_id: uuid.UUID, organization_id: uuid.UUID, owner: str) -> None:
    """HAND_BACK the attempt, with a new job to run it, if this worker still holds it (else
    someone settled it meanwhile: nothing to do)."""
    with rls.tenant_scope(organization_id):
        if transitions.hand_back(attempt_id, owner=owner, now=timezone.now()):
            jobs.enqueue_after_commit(organization_id, [attempt_id])
            logger.warning("handed attempt %s back to run again", attempt_id)


@transaction.atomic(savepoint=False)  # inside a worker's scope: that is the transaction
def finish(
    attempt: TaskExecution, result: ExecutorResult | None = None, error: dict | None = None
) -> bool:
    """Record a running attempt's outcome and move the flow on. False if it was cancelled."""
    flow_execution = locking.lock_for_worker(attempt.flow_execution_id)
    spec = spec_for(flow_execution.flow_version)
    now = timezone.now()
    looped = attempt.task_name in spec.tasks and spec.tasks[attempt.task_name].loop
    if result is None:
        if not transitions.fail(attempt.pk, error=error, now=now):
            return False
        retried = planning.retry(flow_execution, spec, attempt)
        created = [retried] if retried else []
        if looped and not retried:
            created = _loop_on(flow_execution, spec, attempt, failed=True)
    else:
        if not transitions.complete(attempt.pk, output=result.output, now=now):
            return False
        if looped:
            created = _loop_on(flow_execution, spec, attempt, failed=False)
        else:
            publishing.publish_output(
                flow_execution, attempt.task_name, result.output, result.summary
            )
            created = _move_on(flow_execution, spec, attempt, result)
    status.refresh_status(
        flow_execution, spec, live=any(a.status in transitions.LIVE for a in created)
    )
    return True


def _loop_on(
    flow_execution: FlowExecution, spec: FlowSpec, attempt: TaskExecution, *, failed: bool
) -> list[TaskExecution]:
    """After an iteration of a looped task finished: the loop's next step (advancing.advance)
    and, once the loop is done, its dependents as after any completed task."""
    created, output = advancing.advance(flow_execution, spec, attempt, failed=failed)
    if planning.pending(output):
        return created
    return created + _move_on(flow_execution, spec, attempt, ExecutorResult(output))


def _move_on(
    flow_execution: FlowExecution, spec: FlowSpec, attempt: TaskExecution, result: ExecutorResult
) -> list[TaskExecution]:
    """After `attempt` completed: its dependents that are now ready get their attempts."""
    children = spec.dag.downstream[attempt.task_name]
    correction_id = attempt.started_by_correction_id
    done = selectors.Attempt(
        attempt.pk, attempt.task_name, attempt.task_execution_idx, Status.COMPLETED
    )
    # A child still waiting for another of its upstream tasks is not ready: a fan-in of
    # 1,000 does not read its 999 other parents after each one finishes.
    waiting = planning.waiting_on_others(flow_execution, spec, attempt.task_name, children)
    planner = planning.Planner(flow_execution, spec, True, correction_id)
    planner.know(done, result.output)
    planner.load(c for c in children if c not in waiting)
    previous = {c: planner.latest[c] for c in children if c in planner.latest}
    previous.update(selectors.latest_attempts(flow_execution, waiting) if waiting else {})
    if any(a.status != Status.STALE for a in previous.values()):
        # Its dependents ran on its previous output (it ran again outside a correction,
        # e.g. a person marked it stale): what they computed is outdated.
        staleness.mark_stale(
            flow_execution,
            spec,
            spec.dag.descendants(attempt.task_name),
            actor="system",
            cause=staleness.upstream_rerun_cause(correction_id, attempt.task_name),
        )
        planner = planning.Planner(flow_execution, spec, True, correction_id)
        planner.know(done, result.output)
    return planner.run(set(children) - waiting)
