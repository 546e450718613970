"""Planning: which tasks get a new attempt now, on which input, and retries. Every attempt it
creates gets its job enqueued after commit (executions.jobs). Call with the flow execution's row
locked."""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.utils import timezone

from executions import jobs, selectors, transitions
from executions.engine import cutoff, iterating, loop_steps, publishing
from executions.engine.cutoff import Reusable
from executions.executors import get_executor
from executions.models import FlowExecution, TaskExecution
from executions.selectors import Attempt
from flowplatform import bulksql
from flowplatform.webhooks import events
from flows.definitions import FlowSpec
from flows.expressions import ExpressionError

Status = TaskExecution.Status


# Pure decisions ------------------------------------------------------------------------------


def ready(
    upstream: Iterable[str],
    own: Attempt | None,
    latest: Mapping[str, Attempt],
    runnable: frozenset[str],
) -> bool:
    """May a task get a new attempt? Its own latest attempt (`own`) is absent or in `runnable`
    (it needs one), and every upstream task's latest attempt is completed."""
    return (own is None or own.status in runnable) and all(
        p in latest and latest[p].status == Status.COMPLETED for p in upstream
    )


def failures_in_a_row(statuses_newest_first: Sequence[str]) -> int:
    """How many of a task's latest attempts failed, counting back from the newest."""
    count = 0
    for status in statuses_newest_first:
        if status != Status.FAILED:
            break
        count += 1
    return count


# Scheduling ----------------------------------------------------------------------------------


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
    few per task). `correction_id`: the correction whose re-execution this is. Returns every
    attempt created.
    """
    return Planner(flow_execution, spec, rerun_stale, correction_id).run(set(candidates))


class Planner:
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
        self.runnable = transitions.NEEDS_ATTEMPT if rerun_stale else frozenset({Status.DELETED})
        self.loaded: set[str] = set()  # tasks whose latest attempt was read
        self.latest: dict[str, Attempt] = {}
        self.outputs: dict[str, Any] = {}
        self.outputs_known: set[str] = set()  # tasks whose current output was read
        self.reusable: dict[str, Reusable] = {}
        # Looped tasks (engine.iterating) this pass finished: their outputs to publish, and
        # iterations to retire.
        self.loop_results: list[Any] = []
        self.retiring: list[uuid.UUID] = []

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
            latest = selectors.latest_attempts(self.flow_execution, wanted)
            self.latest.update(latest)
            self.reusable.update(
                cutoff.reusable_attempts(self.flow_execution, self.spec, latest.values())
            )
            self.loaded |= wanted
        needed = upstream - self.outputs_known
        if needed:
            self.outputs.update(selectors.current_outputs(self.flow_execution, needed))
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
        return ready(
            self.spec.tasks[task].upstream, self.latest.get(task), self.latest, self.runnable
        )

    def run(self, candidates: set[str]) -> list[TaskExecution]:
        """Plan (`plan`) and save (`save`) the attempts of the ready `candidates`."""
        created, reused = self.plan(candidates)
        self.save(created, reused)
        return created

    def plan(self, candidates: set[str]) -> tuple[list[TaskExecution], list[TaskExecution]]:
        """The attempts the ready `candidates` get, unsaved, in dependency order (with the
        dependents a reused result makes ready in turn), and which of them are reused."""
        if not candidates:
            return [], []
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
            if self.spec.tasks[task].loop:
                output = self.loop(task, created, now)
                if output is PENDING:
                    continue
            else:
                attempt = self.attempt(task, now)
                created.append(attempt)
                self.latest[task] = Attempt(
                    attempt.id, task, attempt.task_execution_idx, attempt.status
                )
                if attempt.reused_from_id is None:
                    continue
                reused.append(attempt)
                output = attempt.output
            self.outputs[task] = output
            self.outputs_known.add(task)
            children = self.spec.dag.downstream[task]
            if any(self._unread(child) for child in children):
                self.load(self.spec.dag.descendants(task))
            for child in children:
                if child not in queued:
                    queued.add(child)
                    # Topological rank keeps parents before children across the whole pass.
                    heapq.heappush(heap, (rank(child), child))
        return created, reused

    def loop(self, task: str, created: list[TaskExecution], now: Any) -> Any:
        """Plan a looped task's iterations (engine.iterating): their attempts join `created`;
        returns the task's output when nothing of it is left to run, else PENDING."""
        current = self.latest.get(task)
        planned = iterating.plan(
            self.flow_execution,
            self.spec,
            task,
            self.outputs,
            next_idx=0 if current is None else current.idx + 1,
            correction_id=self.correction_id,
            now=now,
        )
        created += planned.created
        self.retiring += planned.retire
        newest = planned.created[-1] if planned.created else None
        status = Status.COMPLETED if planned.done else Status.FAILED if planned.failed else None
        if status is None:  # its iterations are queued, or wait for a person (running)
            live = {a.status for a in planned.created} & transitions.LIVE
            status = Status.RUNNING if Status.RUNNING in live else Status.QUEUED
        self.latest[task] = Attempt(
            newest.id if newest else current.id,
            task,
            newest.task_execution_idx if newest else current.idx,
            status,
        )
        if not planned.done:
            return PENDING
        self.loop_results.append(
            publishing.new_result(self.flow_execution, task, planned.output, planned.summary)
        )
        return planned.output

    def save(self, created: list[TaskExecution], reused: list[TaskExecution]) -> None:
        """Insert the planned attempts, republish the reused results (and publish the
        outputs of looped tasks that finished), retire what loops dropped, and enqueue the
        queued attempts' jobs after commit (`enqueue`)."""
        results, self.loop_results = self.loop_results, []
        retiring, self.retiring = self.retiring, []
        if retiring:
            loop_steps.retire(retiring, now=timezone.now())
        if created:
            bulksql.insert_many(created, now=timezone.now())
        if reused or results:
            publishing.publish_many(self.flow_execution, results, reused, self.reusable)
        queued = [a for a in created if a.status == Status.QUEUED]
        enqueue(self.flow_execution, self.spec, loop_steps.window(self.spec, queued))
        announce_waiting(self.flow_execution, self.spec, created)

    def attempt(self, task: str, now: Any) -> TaskExecution:
        """The task's next attempt: its input resolved now; reused (early cutoff), waiting for
        a person, or queued to run."""
        current = self.latest.get(task)
        fields = {
            "organization_id": self.flow_execution.organization_id,
            "flow_execution": self.flow_execution,
            "task_name": task,
            "task_execution_idx": 0 if current is None else current.idx + 1,
            "started_by_correction_id": self.correction_id,
        }
        try:
            fields["input"] = selectors.resolve_task_input(
                self.spec, task, self.flow_execution.input, self.outputs
            )
        except ExpressionError as exc:
            error = {"type": "ExpressionError", "message": str(exc)}
            return transitions.new_attempt(transitions.UNRESOLVABLE, error=error, **fields)
        earlier = self.reusable.get(task) if current is not None else None
        if cutoff.reuses(earlier, fields["input"]):
            return transitions.new_attempt(
                transitions.REUSE,
                output=earlier.output,
                reused_from_id=earlier.attempt_id,
                completed_at=now,
                **fields,
            )
        human = get_executor(self.spec.tasks[task].type).waits_for_person
        move = transitions.AWAIT_PERSON if human else transitions.QUEUE
        return transitions.new_attempt(move, **fields)


def announce_waiting(flow_execution: FlowExecution, spec: FlowSpec, created: list) -> None:
    """task_execution.waiting for the attempts of human tasks among those just inserted."""
    waiting = [a for a in created if a.status == Status.RUNNING]  # AWAIT_PERSON's target
    human = [a.pk for a in waiting if get_executor(spec.tasks[a.task_name].type).waits_for_person]
    events.attempts_waiting(flow_execution.organization_id, human)


# Retries and fan-in --------------------------------------------------------------------------


def retry(
    flow_execution: FlowExecution, spec: FlowSpec, failed: TaskExecution
) -> TaskExecution | None:
    """A new attempt (idx + 1, same input) if the task has retries left after this failure."""
    statuses = list(
        TaskExecution.objects.filter(
            flow_execution=flow_execution, task_name=failed.task_name, iteration=failed.iteration
        )
        .order_by("-task_execution_idx")
        .values_list("status", "task_execution_idx")
    )
    if statuses[0][1] != failed.task_execution_idx:
        return None  # a newer attempt exists: this failure is history, not the task's state
    if failures_in_a_row([s for s, _ in statuses]) > spec.tasks[failed.task_name].retries:
        return None
    attempt = next_try(flow_execution, failed)
    attempt.save(force_insert=True)
    enqueue(flow_execution, spec, [attempt])
    return attempt


def pending(output: Any) -> bool:
    """Is this answer (Planner.loop, advancing.advance) that the looped task is not done?"""
    return output is PENDING


def next_try(
    flow_execution: FlowExecution, failed: TaskExecution, idx: int | None = None
) -> TaskExecution:
    """A failed attempt's retry, unsaved: idx + 1 (or `idx`), the same input, queued."""
    return transitions.new_attempt(
        transitions.QUEUE,
        organization_id=flow_execution.organization_id,
        flow_execution=flow_execution,
        task_name=failed.task_name,
        task_execution_idx=next_idx(flow_execution, failed) if idx is None else idx,
        iteration=failed.iteration,
        input=failed.input,
        started_by_correction_id=failed.started_by_correction_id,
    )


def next_idx(flow_execution: FlowExecution, failed: TaskExecution) -> int:
    """idx + 1; for an iteration of a looped task, after the task's newest attempt (its
    iterations share one sequence of indexes)."""
    if failed.iteration is None:
        return failed.task_execution_idx + 1
    newest = (
        TaskExecution.objects.filter(flow_execution=flow_execution, task_name=failed.task_name)
        .order_by("-task_execution_idx")
        .values_list("task_execution_idx", flat=True)
        .first()
    )
    return max(newest or 0, failed.task_execution_idx) + 1


def runs_inline(spec: FlowSpec, task: str) -> bool:
    """Does `task` run in a wave (engine.waves: many pure tasks per job and per transaction)
    instead of as a job of its own? When its type is pure (side-effect free), unless
    FLOWPLATFORM_INLINE_PURE_TASKS is off."""
    return (
        settings.FLOWPLATFORM_INLINE_PURE_TASKS
        and get_executor(spec.tasks[task].type).pure
        # A for_each's iterations run in a wave too (engine.waves), unless max_parallel
        # bounds them; an until loop's rounds are jobs.
        and (spec.tasks[task].loop is None or _loops_inline(spec.tasks[task]))
    )


def _loops_inline(task: Any) -> bool:
    return task.loop == "for_each" and task.max_parallel is None


def enqueue(flow_execution: FlowExecution, spec: FlowSpec, queued: list[TaskExecution]) -> None:
    """After commit: one wave (engine.waves) for the queued attempts that run inline, one job
    each for the others."""
    inline = [a.id for a in queued if runs_inline(spec, a.task_name)]
    if inline:
        jobs.enqueue_wave_after_commit(flow_execution.organization_id, flow_execution.pk, inline)
    if len(inline) < len(queued):
        taken = set(inline)
        jobs.enqueue_after_commit(
            flow_execution.organization_id, [a.id for a in queued if a.id not in taken]
        )


PENDING = object()  # a looped task with iterations still to run
_LIVE_SAMPLE = 64


def waiting_on_others(
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
    live = selectors.live_attempts(flow_execution)
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
