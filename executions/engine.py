"""The engine: which task attempts exist, when they run, and what a flow execution's status is.

Rules, in the product's words:
- a task gets an attempt when all its upstream tasks are completed and it has no live attempt
  (queued, running, completed, or failed for good); its input is resolved at that moment from
  the flow input and the upstream tasks' current outputs, and stored on the attempt;
- one job per queued attempt, enqueued only after the transaction that created it commits;
- a worker claims an attempt by moving it queued → running, and finishes it only where it is
  still running (compare-and-set), so a cancelled or duplicated job changes nothing;
- a failed attempt is retried as a new attempt (idx + 1) while retries remain;
- `human` attempts are created running and wait for a person (PUT /task-executions/{id});
- an attempt that goes stale records why (StaleCause: the correction and the corrected task
  nearest to it, or a re-execution);
- early cutoff: a task that is stale only because something upstream changed, and whose freshly
  resolved input equals its previous completed attempt's input, is not run again; it gets a
  completed attempt that reuses that attempt's output (`reused_from`), and its dependents are
  considered in turn. `rerun: always` in the task's definition opts out.

Every write to a flow execution's attempts happens with its row locked (lock order: flow
execution first), so concurrent workers finishing sibling tasks never schedule a task twice.
"""

from __future__ import annotations

import heapq
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import Now
from django.tasks.base import TaskResultStatus
from django.utils import timezone

from executions import leases
from executions.executors import ExecutorResult, TaskFailed, default_summary, get_executor
from executions.models import FlowExecution, StaleReason, TaskExecution
from flowplatform import dbretry, rls
from flowplatform.canonical import same_json
from flowplatform.history import record_history
from flows.definitions import FlowSpec, cached_spec, spec_for
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
    stale_reason: str | None = None
    stale_upstream_task: str | None = None


@dataclass(frozen=True)
class StaleCause:
    """Why attempts go stale: what the task execution representation shows as `stale_cause`."""

    reason: str
    correction_id: uuid.UUID | None = None
    upstream_task: str | None = None  # the corrected task (nearest corrected ancestor)

    def fields(self, actor: str, now: Any) -> dict[str, Any]:
        """The TaskExecution columns that record this cause (with who and when)."""
        return {
            "stale_reason": self.reason,
            "stale_correction_id": self.correction_id,
            "stale_upstream_task": self.upstream_task or "",
            "stale_at": now,
            "stale_by": actor,
        }


REEXECUTION = StaleCause(StaleReason.REEXECUTION)


def latest_attempts(
    flow_execution: FlowExecution, names: Iterable[str] | None = None
) -> dict[str, Attempt]:
    """Each task's attempt with the highest idx. One query."""
    rows = TaskExecution.objects.filter(flow_execution=flow_execution)
    if names is not None:
        rows = rows.filter(task_name__any_of=list(names))
    latest: dict[str, Attempt] = {}
    for row in rows.order_by("task_name", "task_execution_idx").values_list(
        "id", "task_name", "task_execution_idx", "status", "stale_reason", "stale_upstream_task"
    ):
        latest[row[1]] = Attempt(*row)
    return latest


def current_outputs(flow_execution: FlowExecution, names: Iterable[str]) -> dict[str, Any]:
    """Each named task's current output: its newest non-deleted TaskOutput. One query.

    Inputs are resolved from these, so an output published by a correction (PUT of an attempt
    or POST /task-outputs) is what re-executed tasks read.
    """
    rows = (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name__any_of=list(names))
        .oldest_to_current()
        .values_list("task_name", "output")
    )
    return dict(rows)


def resolve_task_input(spec: FlowSpec, task: str, flow_input: Any, outputs: dict[str, Any]) -> Any:
    """What `task`'s input expressions give over the flow input and the current outputs."""
    context = {
        "flow": {"input": flow_input},
        "tasks": {name: {"output": outputs.get(name)} for name in spec.tasks[task].upstream},
    }
    return resolve(spec.tasks[task].input, context)


def enqueue_after_commit(organization_id: uuid.UUID, attempt_ids: list[uuid.UUID]) -> None:
    """Robust hooks: one that fails (say the queue's insert) is logged and the others still
    run; the committed work is not reported as failed."""
    from executions.jobs import run_task_attempt

    org = str(organization_id)
    for attempt_id in attempt_ids:
        transaction.on_commit(
            lambda a=attempt_id: run_task_attempt.enqueue(str(a), org), robust=True
        )


def schedule(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    candidates: Iterable[str],
    *,
    rerun_stale: bool = True,
    correction_id: uuid.UUID | None = None,
) -> list[TaskExecution]:
    """Create attempts for the `candidates` that are ready; enqueue their jobs after commit.

    A candidate is ready when every upstream task's latest attempt is completed and its own
    latest attempt is absent (or deleted), or stale when `rerun_stale`. A stale one that early
    cutoff applies to gets a completed attempt reusing its previous result, and its dependents
    become candidates in turn, in the same pass (a cut-off cascade costs a few queries, not a
    few per task). `correction_id`: the correction whose re-execution this is. Call with the
    flow execution row locked. Returns every attempt created.
    """
    return _Planner(flow_execution, spec, rerun_stale, correction_id).run(set(candidates))


class _Planner:
    """One scheduling pass, in dependency order, over what it has read of the flow execution."""

    def __init__(
        self,
        flow_execution: FlowExecution,
        spec: FlowSpec,
        rerun_stale: bool,
        correction_id: uuid.UUID | None,
    ) -> None:
        self.flow_execution = flow_execution
        self.spec = spec
        self.correction_id = correction_id
        self.runnable = {Status.STALE, Status.DELETED} if rerun_stale else {Status.DELETED}
        self.loaded: set[str] = set()  # tasks whose latest attempt was read
        self.latest: dict[str, Attempt] = {}
        self.outputs: dict[str, Any] = {}
        self.outputs_known: set[str] = set()  # tasks whose current output was read
        self.reusable: dict[str, Reusable] = {}

    def know(self, attempt: Attempt, output: Any) -> None:
        """What the caller just wrote: `attempt` is its task's latest, `output` its current
        output (a worker that finished a task need not read them back)."""
        self.latest[attempt.task_name] = attempt
        self.loaded.add(attempt.task_name)
        self.outputs[attempt.task_name] = output
        self.outputs_known.add(attempt.task_name)

    def load(self, names: Iterable[str]) -> None:
        """Read the latest attempts of `names` and their upstream tasks, and the current
        outputs of those upstream tasks (what the inputs of `names` resolve from)."""
        names = set(names)
        upstream = set().union(*(self.spec.tasks[t].upstream for t in names))
        wanted = (names | upstream) - self.loaded
        if wanted:
            latest = latest_attempts(self.flow_execution, wanted)
            self.latest.update(latest)
            self.reusable.update(
                _reusable_attempts(self.flow_execution, self.spec, list(latest.values()))
            )
            self.loaded |= wanted
        needed = upstream - self.outputs_known
        if needed:
            self.outputs.update(current_outputs(self.flow_execution, needed))
            self.outputs_known |= needed

    def _unread(self, task: str) -> bool:
        """Is anything `ready(task)` and its input need not read yet? (A task read only as
        another's upstream has its own upstream tasks unread.)"""
        upstream = self.spec.tasks[task].upstream
        return (
            task not in self.loaded
            or not self.loaded.issuperset(upstream)
            or not self.outputs_known.issuperset(upstream)
        )

    def ready(self, task: str) -> bool:
        current = self.latest.get(task)
        return (current is None or current.status in self.runnable) and all(
            p in self.latest and self.latest[p].status == Status.COMPLETED
            for p in self.spec.tasks[task].upstream
        )

    def run(self, candidates: set[str]) -> list[TaskExecution]:
        if not candidates:
            return []
        self.load(candidates)
        rank = self.spec.dag.rank
        heap = [(rank(t), t) for t in candidates]
        heapq.heapify(heap)
        queued = set(candidates)
        created: list[TaskExecution] = []
        reused: list[TaskExecution] = []
        now = timezone.now()
        while heap:
            _, task = heapq.heappop(heap)
            if not self.ready(task):
                continue
            attempt = self.attempt(task, now)
            created.append(attempt)
            self.latest[task] = Attempt(
                attempt.id, task, attempt.task_execution_idx, attempt.status
            )
            if attempt.reused_from_id is None:
                continue
            reused.append(attempt)
            self.outputs[task] = attempt.output
            self.outputs_known.add(task)
            children = self.spec.dag.downstream[task]
            if any(self._unread(child) for child in children):
                self.load(self.spec.dag.descendants(task))
            for child in children:
                if child not in queued:
                    queued.add(child)
                    # Topological rank keeps parents before children across the whole pass.
                    heapq.heappush(heap, (rank(child), child))
        TaskExecution.objects.bulk_create(created)
        if reused:
            _republish_reused(self.flow_execution, reused, self.reusable)
        enqueue_after_commit(
            self.flow_execution.organization_id,
            [a.id for a in created if a.status == Status.QUEUED],
        )
        return created

    def attempt(self, task: str, now: Any) -> TaskExecution:
        current = self.latest.get(task)
        attempt = TaskExecution(
            organization_id=self.flow_execution.organization_id,
            flow_execution=self.flow_execution,
            task_name=task,
            task_execution_idx=0 if current is None else current.idx + 1,
            started_by_correction_id=self.correction_id,
        )
        try:
            attempt.input = resolve_task_input(
                self.spec, task, self.flow_execution.input, self.outputs
            )
        except ExpressionError as exc:
            attempt.status = Status.FAILED
            attempt.error = {"type": "ExpressionError", "message": str(exc)}
            return attempt
        earlier = self.reusable.get(task) if current is not None else None
        if earlier is not None and same_json(earlier.input, attempt.input):
            attempt.status = Status.COMPLETED
            attempt.output = earlier.output
            attempt.reused_from_id = earlier.attempt_id
            attempt.completed_at = now
        else:
            human = get_executor(self.spec.tasks[task].type).waits_for_person
            attempt.status = Status.RUNNING if human else Status.QUEUED
        return attempt


@dataclass(frozen=True)
class Reusable:
    """A stale task's previous completed attempt, and the result its reuse would keep."""

    attempt_id: uuid.UUID
    input: Any
    output: Any
    summary: Any
    tags: Any = None
    modified_by: str = "system"


def _doubted(attempt: TaskExecution, flow_execution: FlowExecution) -> bool:
    """Was this attempt's own result thrown away (not merely outdated by a change upstream)?

    A person marked it stale, or deleted it, or the whole flow was re-executed after it
    completed: early cutoff never brings such a result back, nor one from before it.
    """
    if attempt.status == Status.DELETED:
        return True
    if attempt.status == Status.STALE and (
        attempt.stale_reason in (StaleReason.REEXECUTION, StaleReason.FLOW_EXECUTION_DELETED)
        or attempt.stale_upstream_task == attempt.task_name
    ):
        return True
    reexecuted_at = flow_execution.reexecuted_at
    return (
        reexecuted_at is not None
        and attempt.completed_at is not None
        and attempt.completed_at < reexecuted_at
    )


def _reusable_attempts(
    flow_execution: FlowExecution, spec: FlowSpec, latest: list[Attempt]
) -> dict[str, Reusable]:
    """For each stale task early cutoff may apply to, its previous completed attempt. Two
    queries.

    It applies when the task went stale only because something upstream changed (a correction
    of an ancestor, or an ancestor that ran again); not to `rerun: always` tasks. The previous
    completed attempt is the newest with a result, looking back no further than an attempt
    whose own result was thrown away (_doubted). The result kept is the task's current output
    when it was published after that attempt completed (the attempt's own, or a person's
    replacement of it), else the attempt's output.
    """
    eligible = [
        a.task_name
        for a in latest
        if a.status == Status.STALE
        and a.stale_reason in (StaleReason.CORRECTION, StaleReason.UPSTREAM_RERUN)
        and a.stale_upstream_task != a.task_name
        and spec.tasks[a.task_name].rerun == "on_input_change"
    ]
    if not eligible:
        return {}
    history: dict[str, list[TaskExecution]] = {}
    for row in (
        TaskExecution.objects.filter(flow_execution=flow_execution, task_name__any_of=eligible)
        .order_by("task_name", "-task_execution_idx")
        .only(
            "id",
            "task_name",
            "status",
            "input",
            "output",
            "completed_at",
            "stale_reason",
            "stale_upstream_task",
        )
    ):
        history.setdefault(row.task_name, []).append(row)
    previous: dict[str, TaskExecution] = {}
    for name, attempts in history.items():
        for attempt in attempts:  # newest first
            if _doubted(attempt, flow_execution):
                break
            if attempt.completed_at is not None:
                previous[name] = attempt
                break
    if not previous:
        return {}
    current: dict[str, tuple] = {}
    for row in (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name__any_of=list(previous))
        .oldest_to_current()
        .values_list("task_name", "output", "summary", "tags", "modified_by", "created_at")
    ):
        current[row[0]] = row[1:]
    reusable = {}
    for name, attempt in previous.items():
        published = current.get(name)
        if published is not None and published[4] >= attempt.completed_at:
            output, summary, tags, modified_by, _ = published
            reusable[name] = Reusable(attempt.id, attempt.input, output, summary, tags, modified_by)
        else:
            reusable[name] = Reusable(
                attempt.id, attempt.input, attempt.output, default_summary(attempt.output)
            )
    return reusable


def _republish_reused(
    flow_execution: FlowExecution, attempts: list[TaskExecution], reusable: dict[str, Reusable]
) -> None:
    """Reused results become their tasks' current outputs again (completed), with the summary,
    tags and author they had. Set-based: a few queries for any number of tasks."""
    from outputs.services import recompute_task_outputs_summary

    TaskOutput.objects.bulk_create(
        TaskOutput(
            organization_id=flow_execution.organization_id,
            flow_execution=flow_execution,
            task_name=attempt.task_name,
            output=attempt.output,
            summary=reusable[attempt.task_name].summary,
            tags=reusable[attempt.task_name].tags,
            status=TaskOutput.Status.COMPLETED,
            flow_version=flow_execution.flow_version.version,
            modified_by=reusable[attempt.task_name].modified_by,
        )
        for attempt in attempts
    )
    recompute_task_outputs_summary(flow_execution.pk)


def refresh_status(flow_execution: FlowExecution, spec: FlowSpec, *, live: bool = False) -> str:
    """Derive the flow execution's status from its attempts and save it if it changed.

    queued → running (an attempt exists) → in_progress (a task completed, or a person is
    awaited) → completed (every task's latest attempt completed) | failed (nothing can run and
    a task failed for good) | stale (nothing runs and stale tasks remain, which a re-execution
    would refresh). Never backwards within a run; a re-execution starts a new run at `running`.

    Called after every finished task, so its cost is per task: while anything is queued or
    running, one indexed EXISTS (none at all once in_progress); only when the flow execution
    comes to rest does it read every task's latest attempt. `live`: the caller has just queued
    an attempt (no need to ask).
    """
    current = flow_execution.status
    if current == FlowStatus.DELETED:
        return current  # a deleted flow execution stays deleted
    attempts = TaskExecution.objects.filter(flow_execution=flow_execution)
    if live or attempts.filter(status__in=LIVE).exists():
        if current == FlowStatus.IN_PROGRESS:
            return current
        newer = TaskExecution.objects.filter(
            flow_execution=OuterRef("flow_execution"),
            task_name=OuterRef("task_name"),
            task_execution_idx__gt=OuterRef("task_execution_idx"),
        )
        progressed = attempts.filter(status=Status.COMPLETED).exclude(
            Exists(newer)
        ).exists() or _awaits_person(flow_execution, spec)
        status = FlowStatus.IN_PROGRESS if progressed else FlowStatus.RUNNING
    else:
        status = _settled_status(flow_execution, spec)
    if status != current:
        FlowExecution.objects.filter(pk=flow_execution.pk).update(
            status=status, updated_at=timezone.now()
        )
        flow_execution.status = status
    return status


def _settled_status(flow_execution: FlowExecution, spec: FlowSpec) -> str:
    """Nothing runs: `completed` if every task's latest attempt is completed, else `stale` if a
    re-execution of the stale tasks could make progress, else `failed` (what remains is
    blocked by a failed task)."""
    latest = {n: a.status for n, a in latest_attempts(flow_execution, spec.tasks).items()}
    if len(latest) == len(spec.tasks) and all(s == Status.COMPLETED for s in latest.values()):
        return FlowStatus.COMPLETED
    failed = [name for name, status in latest.items() if status == Status.FAILED]
    blocked = spec.dag.descendants(*failed) if failed else set()
    needs_run = [
        name
        for name in spec.tasks
        if latest.get(name, Status.STALE) in (Status.STALE, Status.DELETED) and name not in blocked
    ]
    if needs_run:
        return FlowStatus.STALE
    return FlowStatus.FAILED if failed else flow_execution.status


def _awaits_person(flow_execution: FlowExecution, spec: FlowSpec) -> bool:
    human = [name for name, task in spec.tasks.items() if get_executor(task.type).waits_for_person]
    return bool(human) and (
        TaskExecution.objects.filter(
            flow_execution=flow_execution, task_name__in=human, status=Status.RUNNING
        ).exists()
    )


# A version's definition is read once into the FlowSpec cache (spec_for), not with every row.
_VERSION_TEXT = ("flow_version__parsed", "flow_version__definition")


def locked_flow_executions() -> QuerySet[FlowExecution]:
    """Flow executions row-locked until the transaction ends, with their pinned version (its
    text deferred). Locking the flow execution first is the lock order for every write to
    its attempts and outputs."""
    return (
        FlowExecution.objects.select_for_update(of=("self",))
        .select_related("flow_version")
        .defer(*_VERSION_TEXT)
    )


def lock_flow_execution(flow_execution_id: uuid.UUID) -> FlowExecution:
    return locked_flow_executions().get(pk=flow_execution_id)


def _lock_for_worker(flow_execution_id: uuid.UUID) -> FlowExecution:
    """lock_flow_execution without the outputs summary, which only the summary code (reading
    it itself) needs: it grows with the flow, and a worker locks once per task."""
    return locked_flow_executions().defer("task_outputs_summary").get(pk=flow_execution_id)


@transaction.atomic
def start(flow_execution: FlowExecution) -> FlowExecution:
    """Give the flow execution's root tasks their first attempts."""
    flow_execution = lock_flow_execution(flow_execution.pk)
    spec = spec_for(flow_execution.flow_version)
    schedule(flow_execution, spec, [t for t, task in spec.tasks.items() if not task.upstream])
    refresh_status(flow_execution, spec)
    return flow_execution


@dataclass(frozen=True)
class Marked:
    stale: list[str]  # tasks whose latest attempt became stale now, in dependency order
    moved: list[str]  # already-stale tasks whose cause is now this one (a nearer correction)


def mark_stale(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    tasks: Iterable[str],
    *,
    actor: str,
    cause: StaleCause,
) -> Marked:
    """Make the latest attempt of each of `tasks` stale for `cause`.

    A queued or running attempt is cancelled this way: its job finds it no longer queued, its
    worker finds it no longer running, and neither changes anything. Tasks that never ran stay
    unrun. Their current outputs are marked stale too. An attempt a correction already made
    stale takes this correction as its cause when this one's task is its nearest corrected
    ancestor (see _nearer_cause). Set-based: the same few queries for 10 tasks or 10,000.
    """
    tasks = list(tasks)
    if not tasks:
        return Marked([], [])
    latest = latest_attempts(flow_execution, tasks)
    marked = {
        name: attempt.id
        for name, attempt in latest.items()
        if attempt.status in (*LIVE, Status.COMPLETED, Status.FAILED)
    }
    nearer = _nearer_cause(spec, latest.values(), cause)
    if not marked and not nearer:
        return Marked([], [])
    now = timezone.now()
    cause_fields = {**cause.fields(actor, now), "modified_by": actor, "updated_at": now}
    reason = f"stale: {cause.reason}" + (
        f" of {cause.upstream_task}" if cause.upstream_task else ""
    )
    if nearer:
        TaskExecution.objects.filter(pk__any_of=[a.id for a in nearer]).update(**cause_fields)
        record_history(TaskExecution, [a.id for a in nearer], reason=reason)
    moved = spec.dag.in_order(a.task_name for a in nearer)
    if not marked:
        return Marked([], moved)
    TaskExecution.objects.filter(pk__any_of=list(marked.values())).update(
        status=Status.STALE, **cause_fields
    )
    record_history(TaskExecution, marked.values(), reason=reason)
    _mark_outputs_stale(flow_execution, list(marked), actor=actor, now=now, reason=reason)
    return Marked(spec.dag.in_order(marked), moved)


def _mark_outputs_stale(
    flow_execution: FlowExecution, tasks: list[str], *, actor: str, now: Any, reason: str
) -> None:
    """The completed outputs of `tasks` become stale, and the flow execution's summary counts
    follow: the tasks whose current output was completed move from `completed` to `stale`
    (their entries are unchanged). Four queries, whatever the number of tasks; the summary is
    patched, not rebuilt from every output."""
    from outputs.services import move_status_counts

    rows = (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name__any_of=tasks)
        .oldest_to_current()
        .values_list("pk", "task_name", "status")
    )
    current: dict[str, str] = {}
    outputs = []
    for pk, task_name, status in rows:
        current[task_name] = status
        if status == TaskOutput.Status.COMPLETED:
            outputs.append(pk)
    if not outputs:
        return
    TaskOutput.objects.filter(pk__any_of=outputs).update(
        status=TaskOutput.Status.STALE, modified_by=actor, updated_at=now
    )
    record_history(TaskOutput, outputs, reason=reason)
    moved = sum(1 for status in current.values() if status == TaskOutput.Status.COMPLETED)
    move_status_counts(
        flow_execution.pk, TaskOutput.Status.COMPLETED, TaskOutput.Status.STALE, moved
    )


def _nearer_cause(spec: FlowSpec, attempts: Iterable[Attempt], cause: StaleCause) -> list:
    """Already-stale attempts (of tasks downstream of `cause`'s corrected task) whose cause
    becomes `cause`: every one a correction made stale, unless the task that correction
    corrected lies downstream of this one's — then it is the nearer corrected ancestor. Between
    unrelated corrected tasks (or the same task corrected again) the newer correction wins.
    One walk of the DAG, whatever the number of earlier corrections.
    """
    if cause.reason != StaleReason.CORRECTION or cause.upstream_task not in spec.tasks:
        return []
    previous = [
        a
        for a in attempts
        if a.status == Status.STALE
        and a.stale_reason == StaleReason.CORRECTION
        and a.stale_upstream_task != a.task_name  # marked stale itself: nothing is nearer
    ]
    if not previous:
        return []
    downstream = spec.dag.descendants(cause.upstream_task)
    return [a for a in previous if a.stale_upstream_task not in downstream]


@transaction.atomic
def reexecute(
    flow_execution: FlowExecution,
    *,
    actor: str,
    only_stale: bool = False,
    task: str | None = None,
) -> list[TaskExecution]:
    """Run the whole flow again, only its stale tasks, or one task and its dependents; history
    is kept.

    Whole flow: every task's latest attempt goes stale (a live one is cancelled) and each task
    gets a new attempt, in dependency order. `only_stale`: the stale tasks get new attempts as
    their upstream tasks complete; nothing else runs again. `task`: that task and every task
    downstream of it, as for the whole flow. Returns the attempts started now.
    """
    flow_execution = lock_flow_execution(flow_execution.pk)
    spec = spec_for(flow_execution.flow_version)
    latest = latest_attempts(flow_execution)
    if task is not None:
        subset = {task} | spec.dag.descendants(task)
        mark_stale(flow_execution, spec, subset, actor=actor, cause=REEXECUTION)
        candidates = [task]
    elif only_stale:
        candidates = [
            name for name, a in latest.items() if a.status in (Status.STALE, Status.DELETED)
        ]
    else:
        # Everything runs again: no result from before now is reused (see _doubted).
        now = timezone.now()
        FlowExecution.objects.filter(pk=flow_execution.pk).update(reexecuted_at=now)
        flow_execution.reexecuted_at = now
        mark_stale(flow_execution, spec, latest, actor=actor, cause=REEXECUTION)
        candidates = list(spec.tasks)
    if candidates:
        FlowExecution.objects.filter(pk=flow_execution.pk).update(
            status=FlowStatus.RUNNING, modified_by=actor, updated_at=timezone.now()
        )
        flow_execution.status = FlowStatus.RUNNING
    started = schedule(flow_execution, spec, [c for c in candidates if c in spec.tasks])
    refresh_status(flow_execution, spec)
    return started


def run_attempt(attempt_id: uuid.UUID, organization_id: uuid.UUID | None = None) -> None:
    """A worker's whole handling of one queued attempt (the body of the job).

    Claiming it (queued → running, with this process's lease) and recording its outcome are
    two transactions scoped to its organization (row-level security); the executor runs
    between them, outside any transaction, while the heartbeat renews the lease
    (executions.leases).
    """
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
                *(f"flow_execution__{field}" for field in _VERSION_TEXT),
            )
            .filter(pk=attempt_id, status=Status.QUEUED)
            .first()
        )
        if attempt is None:
            return  # cancelled, already run by another worker, or gone
        now = timezone.now()
        flow_execution = attempt.flow_execution
        if flow_execution.status == FlowStatus.QUEUED:  # the lock order: flow execution first
            FlowExecution.objects.filter(pk=flow_execution.pk, status=FlowStatus.QUEUED).update(
                status=FlowStatus.RUNNING, updated_at=now
            )
        claimed = TaskExecution.objects.filter(pk=attempt_id, status=Status.QUEUED).update(
            status=Status.RUNNING,
            lease_owner=owner,
            lease_expires_at=leases.expiry(),
            updated_at=now,
        )
        if not claimed:
            return  # another worker claimed it between the read and the claim
        attempt.status = Status.RUNNING
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
        _finish_in_scope(attempt, ExecutorResult(output, result.summary))
    except TaskFailed as exc:
        _record_failure(attempt, exc.error_type, str(exc))
    except leases.WorkerStopped as exc:  # the worker is stopping: another one retries it
        _record_failure(attempt, "WorkerStopped", str(exc))
    except Exception as exc:
        if not isinstance(exc, TypeError | ValueError):
            logger.exception("task %s attempt %s raised", attempt.task_name, attempt_id)
        _record_failure(attempt, type(exc).__name__, str(exc))


@dataclass(frozen=True)
class Reaped:
    attempt_id: uuid.UUID
    flow_execution_id: uuid.UUID
    task_name: str
    idx: int
    lease_owner: str
    retry_id: uuid.UUID | None  # the next attempt, if retries remained


WORKER_LOST = "WorkerLost"


def expired_leases(limit: int = 1000) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """(organization, flow execution, attempt) of running attempts whose lease expired, oldest
    expiry first. Ids only, read across organizations (rls.lookup: the reaper is the system's,
    and what it then changes happens in each organization's own scope, and is logged)."""
    with rls.lookup():
        return list(
            TaskExecution.objects.filter(status=Status.RUNNING, lease_expires_at__lt=Now())
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
        requeue_stranded_jobs(limit)
    except Exception:
        logger.exception("re-queueing stranded jobs failed")
    reaped: list[Reaped] = []
    for (organization_id, flow_execution_id), ids in groups.items():
        try:  # one flow execution that cannot be reaped must not stop the others' reaping
            with rls.tenant_scope(organization_id):
                reaped += _reap(flow_execution_id, ids)
        except Exception:
            logger.exception("reaping flow execution %s failed", flow_execution_id)
    return reaped


def _reap(flow_execution_id: uuid.UUID, ids: list[uuid.UUID]) -> list[Reaped]:
    flow_execution = _lock_for_worker(flow_execution_id)
    try:
        spec = spec_for(flow_execution.flow_version)
    except Exception:  # its definition no longer loads: fail the attempts, retry none
        logger.exception("flow execution %s: its definition does not load", flow_execution_id)
        spec = None
    candidates = list(
        TaskExecution.objects.filter(
            pk__in=ids, status=Status.RUNNING, lease_expires_at__lt=Now()
        ).order_by("task_name")
    )
    now = timezone.now()
    expired = []
    for attempt in candidates:
        attempt.error = {
            "type": WORKER_LOST,
            "message": f"The worker running this attempt ({attempt.lease_owner or 'unknown'}) "
            f"was lost: its lease expired at {attempt.lease_expires_at.isoformat()} without "
            "being renewed.",
        }
        # Compare-and-set on the expired lease too: a heartbeat that renewed it since the
        # read above belongs to a worker that is alive, and wins.
        if TaskExecution.objects.filter(
            pk=attempt.pk, status=Status.RUNNING, lease_expires_at__lt=Now()
        ).update(status=Status.FAILED, error=attempt.error, updated_at=now):
            expired.append(attempt)
    if not expired:
        return []
    reaped = []
    for attempt in expired:
        next_attempt = retry(flow_execution, spec, attempt) if spec is not None else None
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
    _fail_lost_jobs([a.pk for a in expired])
    if spec is not None:
        refresh_status(flow_execution, spec)
    return reaped


def _uses_job_rows() -> bool:
    return settings.TASKS["default"]["BACKEND"].startswith("django_tasks_db.")


def _running_jobs(limit: int | None = None, **conditions: Any) -> dict[Any, str | None]:
    """django-tasks-db's RUNNING run_task_attempt jobs matching `conditions`: job id → the id
    of the attempt it runs (its first argument)."""
    from django_tasks_db.models import DBTaskResult

    from executions.jobs import run_task_attempt

    jobs = DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING, task_path=run_task_attempt.module_path, **conditions
    ).values_list("id", "args_kwargs")
    return {job_id: (args.get("args") or [None])[0] for job_id, args in jobs[:limit]}


def requeue_stranded_jobs(limit: int = 1000) -> int:
    """django-tasks-db jobs a worker claimed but died before claiming their attempt (a window
    of milliseconds; SIGKILL, a lost machine): RUNNING for longer than a lease while their
    attempt is still queued. Nothing would ever run that attempt: the job goes back to READY
    for another worker (running it twice is harmless: the attempt's claim is a
    compare-and-set). Returns how many."""
    if not _uses_job_rows():
        return 0
    from django_tasks_db.models import DBTaskResult

    cutoff = timezone.now() - timedelta(seconds=leases.lease_seconds())
    jobs = _running_jobs(limit, started_at__lt=cutoff)
    if not jobs:
        return 0
    with rls.lookup():  # ids only: is each job's attempt still waiting?
        waiting = {
            str(pk)
            for pk in TaskExecution.objects.filter(
                pk__any_of=[a for a in jobs.values() if a], status=Status.QUEUED
            ).values_list("pk", flat=True)
        }
    stranded = [job_id for job_id, attempt_id in jobs.items() if attempt_id in waiting]
    if stranded:
        DBTaskResult.objects.filter(pk__in=stranded, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.READY
        )
        logger.warning("re-queued %d job(s) whose worker died before claiming", len(stranded))
    return len(stranded)


def _fail_lost_jobs(attempt_ids: list[uuid.UUID]) -> None:
    """The lost worker's django-tasks-db job rows stay RUNNING forever otherwise: mark them
    failed too, so the queue's own view (its admin, prune_db_task_results) agrees."""
    if not _uses_job_rows():
        return
    from django_tasks_db.models import DBTaskResult

    ids = {str(a) for a in attempt_ids}
    lost = [job_id for job_id, attempt_id in _running_jobs().items() if attempt_id in ids]
    if lost:
        DBTaskResult.objects.filter(pk__in=lost, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            exception_class_path=f"executions.leases.{WORKER_LOST}",
            traceback="The worker running this job was lost (its lease expired).",
        )


def _finish_in_scope(
    attempt: TaskExecution, result: ExecutorResult | None = None, error: dict | None = None
) -> bool:
    """finish() in one transaction scoped to the attempt's organization, run again if
    PostgreSQL aborts it for a deadlock (flowplatform.dbretry): a task that succeeded is never
    recorded failed because its bookkeeping collided with another worker's."""

    def record() -> bool:
        with rls.tenant_scope(attempt.organization_id):
            return finish(attempt, result, error)

    return dbretry.retrying(record, what=f"recording attempt {attempt.pk}")


def _record_failure(attempt: TaskExecution, error_type: str, message: str) -> None:
    """Record the failure; if even that fails (e.g. the database refuses the message), record a
    bare one and settle the flow execution's status, so an attempt is never left running with
    nobody to finish it, nor its flow execution running with nothing left to run."""
    error = {"type": error_type, "message": message.replace("\x00", "\\0")[:10_000]}
    try:
        _finish_in_scope(attempt, error=error)
    except Exception:
        logger.exception("recording the failure of attempt %s failed", attempt.pk)
        with rls.tenant_scope(attempt.organization_id):
            _lock_for_worker(attempt.flow_execution_id)  # the lock order: flow execution first
            TaskExecution.objects.filter(pk=attempt.pk, status=Status.RUNNING).update(
                status=Status.FAILED,
                error={"type": error_type, "message": "the error could not be recorded"},
                updated_at=timezone.now(),
                lease_owner="",
                lease_expires_at=None,
            )
        try:  # a separate transaction: the attempt's failure stands even if this fails too
            with rls.tenant_scope(attempt.organization_id):
                flow_execution = _lock_for_worker(attempt.flow_execution_id)
                refresh_status(flow_execution, spec_for(flow_execution.flow_version))
        except Exception:
            logger.exception("settling flow execution %s failed", attempt.flow_execution_id)


@transaction.atomic(savepoint=False)  # inside a worker's scope: that is the transaction
def finish(
    attempt: TaskExecution, result: ExecutorResult | None = None, error: dict | None = None
) -> bool:
    """Record a running attempt's outcome and move the flow on. False if it was cancelled."""
    flow_execution = _lock_for_worker(attempt.flow_execution_id)
    spec = spec_for(flow_execution.flow_version)
    now = timezone.now()
    running = TaskExecution.objects.filter(pk=attempt.pk, status=Status.RUNNING)
    ended = {"updated_at": now, "lease_owner": "", "lease_expires_at": None}
    if result is not None:
        if not running.update(
            status=Status.COMPLETED, output=result.output, completed_at=now, **ended
        ):
            return False
        publish_output(flow_execution, attempt.task_name, result.output, result.summary)
        children = spec.dag.downstream[attempt.task_name]
        correction_id = attempt.started_by_correction_id
        done = Attempt(attempt.pk, attempt.task_name, attempt.task_execution_idx, Status.COMPLETED)
        # A child still waiting for another of its upstream tasks is not ready: a fan-in of
        # 1,000 does not read its 999 other parents after each one finishes.
        waiting = _waiting_on_others(flow_execution, spec, attempt.task_name, children)
        planner = _Planner(flow_execution, spec, True, correction_id)
        planner.know(done, result.output)
        planner.load(c for c in children if c not in waiting)
        previous = {c: planner.latest[c] for c in children if c in planner.latest}
        previous.update(latest_attempts(flow_execution, waiting) if waiting else {})
        if any(a.status != Status.STALE for a in previous.values()):
            # Its dependents ran on its previous output (it ran again outside a correction,
            # e.g. a person marked it stale): what they computed is outdated.
            mark_stale(
                flow_execution,
                spec,
                spec.dag.descendants(attempt.task_name),
                actor="system",
                cause=StaleCause(StaleReason.UPSTREAM_RERUN, correction_id, attempt.task_name),
            )
            planner = _Planner(flow_execution, spec, True, correction_id)
            planner.know(done, result.output)
        created = planner.run(set(children) - waiting)
    else:
        if not running.update(status=Status.FAILED, error=error, **ended):
            return False
        created = [retried] if (retried := retry(flow_execution, spec, attempt)) else []
    refresh_status(flow_execution, spec, live=any(a.status in LIVE for a in created))
    return True


_LIVE_SAMPLE = 64


def _waiting_on_others(
    flow_execution: FlowExecution, spec: FlowSpec, task: str, children: Iterable[str]
) -> set[str]:
    """The `children` of `task` that another of their upstream tasks keeps from being ready:
    it has a queued or running attempt (that attempt's finish will consider them).

    No query when no child has other parents. Otherwise one query reads a few of the flow
    execution's live attempts (indexed, stops early): in a fan-in of 10,000 the first of
    them is almost always another parent. Only children none of those decide are checked
    against their own parents' names.
    """
    others = {c: set(spec.tasks[c].upstream) - {task} for c in children}
    if not any(others.values()):
        return set()
    # A live attempt is its task's latest (a task gets a new attempt only once its latest is
    # stale, deleted or failed); no anti-join here, whose plan depends on fresh statistics.
    live = TaskExecution.objects.filter(flow_execution=flow_execution, status__in=LIVE)
    sample = set(live.values_list("task_name", flat=True)[: _LIVE_SAMPLE + 1])
    waiting = {c for c, parents in others.items() if parents & sample}
    if len(sample) <= _LIVE_SAMPLE:
        return waiting  # that was every live attempt
    undecided = [c for c, parents in others.items() if parents and c not in waiting]
    if undecided:
        names = set().union(*(others[c] for c in undecided))
        busy = set(live.filter(task_name__any_of=list(names)).values_list("task_name", flat=True))
        waiting |= {c for c in undecided if others[c] & busy}
    return waiting


def retry(
    flow_execution: FlowExecution, spec: FlowSpec, failed: TaskExecution
) -> TaskExecution | None:
    """A new attempt (idx + 1, same input) if the task has retries left after this failure."""
    statuses = list(
        TaskExecution.objects.filter(flow_execution=flow_execution, task_name=failed.task_name)
        .order_by("-task_execution_idx")
        .values_list("status", "task_execution_idx")
    )
    if statuses[0][1] != failed.task_execution_idx:
        return None  # a newer attempt exists: this failure is history, not the task's state
    failures_in_a_row = 0
    for status, _ in statuses:
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
        started_by_correction_id=failed.started_by_correction_id,
    )
    enqueue_after_commit(flow_execution.organization_id, [attempt.id])
    return attempt


def publish_output(
    flow_execution: FlowExecution,
    task_name: str,
    output: Any,
    summary: dict | None,
    actor: str = "system",
) -> TaskOutput:
    """The task's new current TaskOutput; its save signal recomputes the summaries.

    A worker's output gets no history row of its own, as the attempts the engine creates in
    bulk do not: history records what people change, and the first manual change of such a
    row adds a baseline row first (flowplatform.history.ensure_baseline). A person's output
    (a correction) is history at once.
    """
    task_output = TaskOutput(
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=task_name,
        output=output,
        summary=summary if summary is not None else default_summary(output),
        status=TaskOutput.Status.COMPLETED,
        flow_version=flow_execution.flow_version.version,
        modified_by=actor,
    )
    if actor == "system":
        task_output.skip_history_when_saving = True
    task_output.save(force_insert=True)
    return task_output


@dataclass(frozen=True)
class Propagation:
    stale_tasks: list[str]  # in dependency order
    started: list[TaskExecution]  # attempts created now (their jobs run after commit)


def propagate_new_output(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    task_name: str,
    output: Any,
    *,
    actor: str,
    execute_flow: bool,
    correction_id: uuid.UUID | None = None,
) -> Propagation:
    """A person gave `task_name` a new output (a correction, or completing a human or failed
    task). Publish it; every transitive dependent's latest attempt goes stale; with
    `execute_flow` the stale tasks run again in dependency order with inputs resolved from the
    current outputs (early cutoff reuses what did not change). Tasks downstream that never ran
    start when their inputs are complete (a completed human task releases its dependents
    either way). Call with the row locked.
    """
    publish_output(flow_execution, task_name, output, None, actor)
    cause = StaleCause(StaleReason.CORRECTION, correction_id, task_name)
    stale = mark_stale(
        flow_execution, spec, spec.dag.descendants(task_name), actor=actor, cause=cause
    ).stale
    started = schedule(
        flow_execution,
        spec,
        spec.dag.downstream[task_name],
        rerun_stale=execute_flow,
        correction_id=correction_id,
    )
    refresh_status(flow_execution, spec)
    return Propagation(stale_tasks=stale, started=started)
