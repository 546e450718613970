"""A worker's handling of one queued attempt (the job's body): claim it, run its executor, record
the outcome and move the flow on; retry a failure while retries remain.

Claiming (queued → running, with this process's lease) and recording the outcome are two
transactions scoped to the attempt's organization (row-level security); the executor runs
between them, outside any transaction, while the heartbeat renews the lease
(executions.leases).
"""

from __future__ import annotations

import json
import logging
import uuid

from django.db import transaction
from django.utils import timezone

from executions import leases, locking, selectors, transitions
from executions.engine import planning, publishing, staleness, status
from executions.executors import ExecutorResult, TaskFailed, get_executor
from executions.models import FlowExecution, TaskExecution
from flowplatform import dbretry, rls
from flows.definitions import FlowSpec, cached_spec, spec_for

logger = logging.getLogger("flowplatform.engine")

Status = TaskExecution.Status


def run_attempt(attempt_id: uuid.UUID, organization_id: uuid.UUID | None = None) -> None:
    """Claim the attempt if it is still queued, run it, record its outcome."""
    if organization_id is None:  # a job enqueued without its organization
        organization_id = rls.organization_of(TaskExecution, attempt_id, actor="worker")
        if organization_id is None:
            return
    owner = leases.worker_identity()
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
        now = timezone.now()
        flow_execution = attempt.flow_execution
        if flow_execution.status in transitions.FLOW_START.sources:
            transitions.start_flow(flow_execution.pk, now=now)  # the lock order: flow first
        if not transitions.claim(attempt, owner=owner, expires=leases.expiry(), now=now):
            return  # another worker claimed it between the read and the claim
        spec = cached_spec(flow_execution.flow_version_id)
        if spec is None:
            try:
                with transaction.atomic():  # reads the version's definition (deferred above)
                    spec = spec_for(flow_execution.flow_version)
            except Exception as exc:  # recorded below, once the claim is committed
                spec, spec_error = None, exc
    try:
        if spec is None:
            raise spec_error
        task = spec.tasks[attempt.task_name]
        with leases.heartbeat.hold(attempt.pk, organization_id, owner):
            result = get_executor(task.type).run(attempt.input, task.config)
        output = json.loads(json.dumps(result.output))
        finish_in_scope(attempt, ExecutorResult(output, result.summary))
    except TaskFailed as exc:
        record_failure(attempt, exc.error_type, str(exc))
    except leases.WorkerStopped as exc:  # the worker is stopping: another one retries it
        record_failure(attempt, "WorkerStopped", str(exc))
    except Exception as exc:
        if not isinstance(exc, TypeError | ValueError):
            logger.exception("task %s attempt %s raised", attempt.task_name, attempt_id)
        record_failure(attempt, type(exc).__name__, str(exc))


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


def record_failure(attempt: TaskExecution, error_type: str, message: str) -> None:
    """Record the failure; if even that fails (e.g. the database refuses the message), record a
    bare one and settle the flow execution's status, so an attempt is never left running with
    nobody to finish it, nor its flow execution running with nothing left to run."""
    error = {"type": error_type, "message": message.replace("\x00", "\\0")[:10_000]}
    try:
        finish_in_scope(attempt, error=error)
    except Exception:
        logger.exception("recording the failure of attempt %s failed", attempt.pk)
        with rls.tenant_scope(attempt.organization_id):
            locking.lock_for_worker(attempt.flow_execution_id)  # the lock order: flow first
            transitions.fail(
                attempt.pk,
                error={"type": error_type, "message": "the error could not be recorded"},
                now=timezone.now(),
            )
        try:  # a separate transaction: the attempt's failure stands even if this fails too
            with rls.tenant_scope(attempt.organization_id):
                flow_execution = locking.lock_for_worker(attempt.flow_execution_id)
                status.refresh_status(flow_execution, spec_for(flow_execution.flow_version))
        except Exception:
            logger.exception("settling flow execution %s failed", attempt.flow_execution_id)


@transaction.atomic(savepoint=False)  # inside a worker's scope: that is the transaction
def finish(
    attempt: TaskExecution, result: ExecutorResult | None = None, error: dict | None = None
) -> bool:
    """Record a running attempt's outcome and move the flow on. False if it was cancelled."""
    flow_execution = locking.lock_for_worker(attempt.flow_execution_id)
    spec = spec_for(flow_execution.flow_version)
    now = timezone.now()
    if result is None:
        if not transitions.fail(attempt.pk, error=error, now=now):
            return False
        retried = planning.retry(flow_execution, spec, attempt)
        created = [retried] if retried else []
    else:
        if not transitions.complete(attempt.pk, output=result.output, now=now):
            return False
        publishing.publish_output(flow_execution, attempt.task_name, result.output, result.summary)
        created = _move_on(flow_execution, spec, attempt, result)
    status.refresh_status(
        flow_execution, spec, live=any(a.status in transitions.LIVE for a in created)
    )
    return True


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
