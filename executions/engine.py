"""The engine: which task attempts exist, when they run, and what a flow execution's status is.

Rules, in the product's words:
- a task gets an attempt when all its upstream tasks are completed and it has no live attempt
  (queued, running, completed, or failed for good); its input is resolved at that moment from
  the flow input and the upstream tasks' current outputs, and stored on the attempt;
- one job per queued attempt, enqueued only after the transaction that created it commits;
- a worker claims an attempt by moving it queued → running, and finishes it only where it is
  still running (compare-and-set), so a cancelled or duplicated job changes nothing;
- a failed attempt is retried as a new attempt (idx + 1) while retries remain;
- `human` attempts are created running and wait for a person (PUT /task-executions/{id}).

Every write to a flow execution's attempts happens with its row locked (lock order: flow
execution first), so concurrent workers finishing sibling tasks never schedule a task twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from executions.executors import ExecutorResult, TaskFailed, default_summary, get_executor
from executions.models import FlowExecution, TaskExecution
from flows.definitions import FlowSpec, spec_for
from flows.expressions import ExpressionError, resolve
from outputs.models import TaskOutput

logger = logging.getLogger("flowplatform.engine")

Status = TaskExecution.Status
FlowStatus = FlowExecution.Status
LIVE = (Status.QUEUED, Status.RUNNING)


@dataclass(frozen=True)
class Attempt:
    """The latest attempt of a task, as the scheduler needs it."""

    id: uuid.UUID
    task_name: str
    idx: int
    status: str
    output: Any


def latest_attempts(
    flow_execution: FlowExecution, names: Iterable[str] | None = None
) -> dict[str, Attempt]:
    """Each task's attempt with the highest idx. One query."""
    rows = TaskExecution.objects.filter(flow_execution=flow_execution)
    if names is not None:
        rows = rows.filter(task_name__in=list(names))
    latest: dict[str, Attempt] = {}
    for row in rows.order_by("task_name", "task_execution_idx").values_list(
        "id", "task_name", "task_execution_idx", "status", "output"
    ):
        latest[row[1]] = Attempt(*row)
    return latest


def enqueue_after_commit(attempt_ids: list[uuid.UUID]) -> None:
    from executions.jobs import run_task_attempt

    for attempt_id in attempt_ids:
        transaction.on_commit(lambda a=attempt_id: run_task_attempt.enqueue(str(a)))


def _resolve_input(spec: FlowSpec, task: str, flow_input: Any, latest: dict[str, Attempt]) -> Any:
    context = {
        "flow": {"input": flow_input},
        "tasks": {name: {"output": latest[name].output} for name in spec.tasks[task].upstream},
    }
    return resolve(spec.tasks[task].input, context)


def schedule(
    flow_execution: FlowExecution, spec: FlowSpec, candidates: Iterable[str]
) -> list[TaskExecution]:
    """Create attempts for the `candidates` that are ready; enqueue their jobs after commit.

    A candidate is ready when every upstream task's latest attempt is completed and its own
    latest attempt is absent or stale. Call with the flow execution row locked.
    """
    candidates = spec.dag.in_order(set(candidates))
    if not candidates:
        return []
    needed = set(candidates).union(*(spec.tasks[t].upstream for t in candidates))
    latest = latest_attempts(flow_execution, needed)
    created: list[TaskExecution] = []
    for task in candidates:
        current = latest.get(task)
        if current is not None and current.status not in (Status.STALE, Status.DELETED):
            continue
        if not all(
            p in latest and latest[p].status == Status.COMPLETED for p in spec.tasks[task].upstream
        ):
            continue
        attempt = TaskExecution(
            organization_id=flow_execution.organization_id,
            flow_execution=flow_execution,
            task_name=task,
            task_execution_idx=0 if current is None else current.idx + 1,
        )
        try:
            attempt.input = _resolve_input(spec, task, flow_execution.input, latest)
            human = get_executor(spec.tasks[task].type).waits_for_person
            attempt.status = Status.RUNNING if human else Status.QUEUED
        except ExpressionError as exc:
            attempt.status = Status.FAILED
            attempt.error = {"type": "ExpressionError", "message": str(exc)}
        created.append(attempt)
    TaskExecution.objects.bulk_create(created)
    enqueue_after_commit([a.id for a in created if a.status == Status.QUEUED])
    return created


def refresh_status(flow_execution: FlowExecution, spec: FlowSpec) -> str:
    """Derive the flow execution's status from its attempts and save it if it changed.

    queued → running (an attempt exists) → in_progress (a task completed, or a person is
    awaited) → completed (every task's latest attempt completed) | failed (nothing can run and
    a task failed for good) | stale (nothing runs and stale tasks remain). Never backwards
    within a run; a re-execution starts a new run at `running`.
    """
    counts = TaskExecution.objects.filter(flow_execution=flow_execution).aggregate(
        live=Count("id", filter=Q(status__in=LIVE)),
        completed_tasks=Count("task_name", filter=Q(status=Status.COMPLETED), distinct=True),
    )
    current = flow_execution.status
    if counts["completed_tasks"] == len(spec.tasks):
        status = FlowStatus.COMPLETED
    elif counts["live"]:
        progressed = (
            current == FlowStatus.IN_PROGRESS
            or counts["completed_tasks"] > 0
            or _awaits_person(flow_execution, spec)
        )
        status = FlowStatus.IN_PROGRESS if progressed else FlowStatus.RUNNING
    else:
        latest = {a.status for a in latest_attempts(flow_execution).values()}
        status = FlowStatus.FAILED if Status.FAILED in latest else FlowStatus.STALE
    if status != current:
        FlowExecution.objects.filter(pk=flow_execution.pk).update(
            status=status, updated_at=timezone.now()
        )
        flow_execution.status = status
    return status


def _awaits_person(flow_execution: FlowExecution, spec: FlowSpec) -> bool:
    human = [name for name, task in spec.tasks.items() if get_executor(task.type).waits_for_person]
    return bool(human) and (
        TaskExecution.objects.filter(
            flow_execution=flow_execution, task_name__in=human, status=Status.RUNNING
        ).exists()
    )


# A version's definition is read once into the FlowSpec cache (spec_for), not with every row.
_VERSION_TEXT = ("flow_version__parsed", "flow_version__definition")


def lock_flow_execution(flow_execution_id: uuid.UUID) -> FlowExecution:
    return (
        FlowExecution.objects.select_for_update(of=("self",))
        .select_related("flow_version")
        .defer(*_VERSION_TEXT)
        .get(pk=flow_execution_id)
    )


@transaction.atomic
def start(flow_execution: FlowExecution) -> FlowExecution:
    """Give the flow execution's root tasks their first attempts."""
    flow_execution = lock_flow_execution(flow_execution.pk)
    spec = spec_for(flow_execution.flow_version)
    schedule(flow_execution, spec, [t for t, task in spec.tasks.items() if not task.upstream])
    refresh_status(flow_execution, spec)
    return flow_execution


@transaction.atomic
def reexecute(flow_execution: FlowExecution, *, actor: str) -> FlowExecution:
    """Run the whole flow again: every task's latest attempt goes stale (a live one is
    cancelled) and each task gets a new attempt, in dependency order. History is kept."""
    flow_execution = lock_flow_execution(flow_execution.pk)
    spec = spec_for(flow_execution.flow_version)
    latest = latest_attempts(flow_execution)
    TaskExecution.objects.filter(pk__in=[a.id for a in latest.values()]).exclude(
        status=Status.STALE
    ).update(status=Status.STALE, modified_by=actor, updated_at=timezone.now())
    FlowExecution.objects.filter(pk=flow_execution.pk).update(
        status=FlowStatus.RUNNING, modified_by=actor, updated_at=timezone.now()
    )
    flow_execution.status = FlowStatus.RUNNING
    schedule(flow_execution, spec, spec.tasks)
    refresh_status(flow_execution, spec)
    return flow_execution


def run_attempt(attempt_id: uuid.UUID) -> None:
    """A worker's whole handling of one queued attempt (the body of the job)."""
    claimed = TaskExecution.objects.filter(pk=attempt_id, status=Status.QUEUED).update(
        status=Status.RUNNING, updated_at=timezone.now()
    )
    if not claimed:
        return  # cancelled, already run by another worker, or gone
    attempt = (
        TaskExecution.objects.select_related("flow_execution__flow_version")
        .defer(*(f"flow_execution__{field}" for field in _VERSION_TEXT))
        .get(pk=attempt_id)
    )
    flow_execution = attempt.flow_execution
    FlowExecution.objects.filter(pk=flow_execution.pk, status=FlowStatus.QUEUED).update(
        status=FlowStatus.RUNNING, updated_at=timezone.now()
    )
    spec = spec_for(flow_execution.flow_version)
    task = spec.tasks[attempt.task_name]
    try:
        result = get_executor(task.type).run(attempt.input, task.config)
        output = json.loads(json.dumps(result.output))
        finish(attempt, ExecutorResult(output, result.summary))
    except TaskFailed as exc:
        finish(attempt, error={"type": exc.error_type, "message": str(exc)})
    except (TypeError, ValueError) as exc:
        finish(attempt, error={"type": type(exc).__name__, "message": str(exc)})
    except Exception as exc:
        logger.exception("task %s attempt %s raised", attempt.task_name, attempt_id)
        finish(attempt, error={"type": type(exc).__name__, "message": str(exc)})


@transaction.atomic
def finish(
    attempt: TaskExecution, result: ExecutorResult | None = None, error: dict | None = None
) -> bool:
    """Record a running attempt's outcome and move the flow on. False if it was cancelled."""
    flow_execution = lock_flow_execution(attempt.flow_execution_id)
    spec = spec_for(flow_execution.flow_version)
    now = timezone.now()
    running = TaskExecution.objects.filter(pk=attempt.pk, status=Status.RUNNING)
    if result is not None:
        if not running.update(status=Status.COMPLETED, output=result.output, updated_at=now):
            return False
        publish_output(flow_execution, attempt.task_name, result.output, result.summary)
        schedule(flow_execution, spec, spec.dag.downstream[attempt.task_name])
    else:
        if not running.update(status=Status.FAILED, error=error, updated_at=now):
            return False
        retry(flow_execution, spec, attempt)
    refresh_status(flow_execution, spec)
    return True


def retry(
    flow_execution: FlowExecution, spec: FlowSpec, failed: TaskExecution
) -> TaskExecution | None:
    """A new attempt (idx + 1, same input) if the task has retries left after this failure."""
    statuses = (
        TaskExecution.objects.filter(flow_execution=flow_execution, task_name=failed.task_name)
        .order_by("-task_execution_idx")
        .values_list("status", flat=True)
    )
    failures_in_a_row = 0
    for status in statuses:
        if status != Status.FAILED:
            break
        failures_in_a_row += 1
    if failures_in_a_row > spec.tasks[failed.task_name].retries:
        return None
    attempt = TaskExecution.objects.create(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=failed.task_name,
        task_execution_idx=failed.task_execution_idx + 1,
        input=failed.input,
    )
    enqueue_after_commit([attempt.id])
    return attempt


def publish_output(
    flow_execution: FlowExecution,
    task_name: str,
    output: Any,
    summary: dict | None,
    actor: str = "system",
) -> TaskOutput:
    """The task's new current TaskOutput; its save signal recomputes the summaries."""
    return TaskOutput.objects.create(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=task_name,
        output=output,
        summary=summary if summary is not None else default_summary(output),
        status=TaskOutput.Status.COMPLETED,
        flow_version=flow_execution.flow_version.version,
        modified_by=actor,
    )


def release_dependents(task_execution: TaskExecution, *, actor: str) -> None:
    """A person completed an attempt (a human task, or a failed one given a correct output):
    publish its output and schedule what now has all its inputs. Call inside the transaction
    that saved it, with the flow execution locked."""
    flow_execution = lock_flow_execution(task_execution.flow_execution_id)
    spec = spec_for(flow_execution.flow_version)
    publish_output(flow_execution, task_execution.task_name, task_execution.output, None, actor)
    if task_execution.task_name in spec.tasks:
        schedule(flow_execution, spec, spec.dag.downstream[task_execution.task_name])
    refresh_status(flow_execution, spec)
