"""Looped tasks (flows.loops) in the engine: which iterations get an attempt, which keep or reuse
their result, which retire, and what the task's output is once its iterations are done.

Every iteration is an attempt with its own task_execution_idx and its `iteration` (the item's
index, or the until loop's round). Planning a looped task (`plan`) reads its attempts once and
decides each iteration as early cutoff decides a task: an iteration whose current attempt
completed on the same input keeps it; a stale one whose previous result was computed on the
same input gets a completed attempt reusing it (`reused_from`); the others run. A for_each
plans every item at once (at most `max_parallel` run at a time: `window`, `top_up`); an until
loop walks its rounds in order and stops at the first that must run, or where its condition
holds. The task's output, as its dependents read it, is the list of its iterations' outputs
in item order (a tolerated failure's slot holds null), or an until loop's last output.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from executions import iterations, selectors, transitions
from executions.engine.cutoff import (
    PAST_COLUMNS,
    UPSTREAM_CAUSES,
    PastAttempt,
    own_doubt,
    previous_completed,
)
from executions.executors import default_summary, get_executor
from executions.models import FlowExecution, StaleReason, TaskExecution
from executions.transitions import Move
from flowplatform.canonical import same_json
from flows import loops
from flows.definitions import FlowSpec, TaskSpec
from flows.expressions import ExpressionError

Status = TaskExecution.Status
# Causes after which an iteration's earlier result may come back when its input is the same.
REUSABLE_CAUSES = frozenset({*UPSTREAM_CAUSES, StaleReason.ITERATION_REMOVED})


# An attempt of a looped task, as planning looks back at it (the fields early cutoff reads).
Past = PastAttempt
_PAST_COLUMNS = (*PAST_COLUMNS, "iteration", "task_execution_idx", "stale_upstream_iteration")


def read_history(flow_execution: FlowExecution, task: str) -> list[Past]:
    """Every attempt of the task, newest first. One query."""
    rows = (
        TaskExecution.objects.filter(flow_execution=flow_execution, task_name=task)
        .order_by("-task_execution_idx")
        .values_list(*_PAST_COLUMNS)
    )
    return [Past(*row) for row in rows]


@dataclass
class LoopPlan:
    """What planning decided for a looped task: the attempts to create (unsaved), the
    attempts to retire, and — when nothing is left to run — the task's output (`done`)."""

    created: list[TaskExecution] = field(default_factory=list)
    retire: list[uuid.UUID] = field(default_factory=list)
    done: bool = False
    failed: bool = False
    output: Any = None
    summary: dict | None = None


# Pure decisions ------------------------------------------------------------------------------


def by_iteration(history: Iterable[Past]) -> dict[int, list[Past]]:
    """Each iteration's attempts, newest first (history is newest first)."""
    found: dict[int, list[Past]] = {}
    for attempt in history:
        if attempt.iteration is not None:
            found.setdefault(attempt.iteration, []).append(attempt)
    return found


def _may_reuse(current: Past, task: TaskSpec) -> bool:
    return (
        task.rerun == "on_input_change"
        and current.status == Status.STALE
        and current.stale_reason in REUSABLE_CAUSES
        and not own_doubt(current)
    )


def loop_output(task: TaskSpec, members: list[Past]) -> tuple[Any, dict]:
    """A finished loop's output and summary: a for_each's list of outputs in item order (null
    for a tolerated failure), an until loop's last output; the summary counts iterations."""
    done = [m for m in members if m.iteration is not None]
    if task.loop == "until":
        output = done[-1].output if done else None
    else:
        output = [m.output if m.status == Status.COMPLETED else None for m in done]
    counted = iterations.counts(done)
    summary = {
        **default_summary(output),
        "iterations": {
            "total": len(done),
            "completed": counted.get(Status.COMPLETED, 0),
            "failed": counted.get(Status.FAILED, 0),
        },
    }
    return output, summary


# Planning -------------------------------------------------------------------------------------


@dataclass
class _Context:
    flow_execution: FlowExecution
    spec: FlowSpec
    task: TaskSpec
    outputs: Mapping[str, Any]
    correction_id: uuid.UUID | None
    now: datetime
    next_idx: int

    def resolve(self, template: Any, loop: dict[str, Any] | None = None) -> Any:
        """`template` over the flow input, the upstream outputs and `loop`
        (selectors.resolve_task_input)."""
        return selectors.resolve_task_input(
            self.spec, self.task.name, self.flow_execution.input, self.outputs, template, loop=loop
        )

    def new(self, move: Move, iteration: int | None, **fields: Any) -> TaskExecution:
        attempt = transitions.new_attempt(
            move,
            organization_id=self.flow_execution.organization_id,
            flow_execution=self.flow_execution,
            task_name=self.task.name,
            task_execution_idx=self.next_idx,
            iteration=iteration,
            started_by_correction_id=self.correction_id,
            **fields,
        )
        self.next_idx += 1
        return attempt

    def run(self, iteration: int, fresh: Any) -> TaskExecution:
        human = get_executor(self.task.type).waits_for_person
        return self.new(
            transitions.AWAIT_PERSON if human else transitions.QUEUE, iteration, input=fresh
        )

    def reuse(self, iteration: int, fresh: Any, earlier: Past) -> TaskExecution:
        return self.new(
            transitions.REUSE,
            iteration,
            input=fresh,
            output=earlier.output,
            reused_from_id=earlier.id,
            completed_at=self.now,
        )

    def failure(
        self, message: str, kind: str = "LoopError", iteration: int | None = None
    ) -> TaskExecution:
        error = {"type": kind, "message": message}
        return self.new(transitions.UNRESOLVABLE, iteration, error=error)

    def step(
        self, index: int, fresh: Any, own: Past | None, attempts: list[Past]
    ) -> tuple[Past, TaskExecution | None]:
        """Iteration `index` on input `fresh` (`own`: its latest attempt, `attempts`: all of
        them, newest first), as early cutoff decides a task: its completed attempt on the
        same input is kept (no new attempt); else a stale one's earlier result on the same
        input is reused; else it runs. Returns its current attempt and the new one, if any."""
        if own is not None and own.status == Status.COMPLETED and same_json(own.input, fresh):
            return own, None
        earlier = (
            previous_completed(attempts, self.flow_execution.reexecuted_at)
            if own is not None and _may_reuse(own, self.task)
            else None
        )
        if earlier is not None and same_json(earlier.input, fresh):
            attempt = self.reuse(index, fresh, earlier)
        else:
            attempt = self.run(index, fresh)
        return _as_past(attempt), attempt


def plan(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    task_name: str,
    outputs: Mapping[str, Any],
    *,
    next_idx: int,
    correction_id: uuid.UUID | None,
    now: datetime,
    history: list[Past] | None = None,
) -> LoopPlan:
    """Plan a looped task whose upstream tasks are complete (`outputs`: their current
    outputs). `next_idx`: the idx its next attempt takes."""
    task = spec.tasks[task_name]
    context = _Context(flow_execution, spec, task, outputs, correction_id, now, next_idx)
    if history is None:
        history = read_history(flow_execution, task_name)
    if task.loop == "until":
        return _plan_until(context, history)
    return _plan_for_each(context, history)


def current_by_iteration(history: list[Past]) -> dict[int, Past]:
    """Each iteration's latest attempt (retired ones included)."""
    return {i: attempts[0] for i, attempts in by_iteration(history).items()}


def _markers(history: list[Past]) -> list[uuid.UUID]:
    """Attempts that stood for the whole task (no iteration) and are not retired yet."""
    return [a.id for a in history if a.iteration is None and not iterations.retired(a)]


def _plan_for_each(context: _Context, history: list[Past]) -> LoopPlan:
    task = context.task
    result = LoopPlan()
    current = current_by_iteration(history)
    try:
        items = loops.items_of(context.resolve(task.for_each))
    except (ExpressionError, loops.LoopError) as exc:
        result.retire = [a.id for a in current.values() if not iterations.retired(a)]
        result.retire += _markers(history)
        kind = "ExpressionError" if isinstance(exc, ExpressionError) else "LoopError"
        result.created.append(context.failure(str(exc), kind))
        result.failed = True
        return result
    attempts = by_iteration(history)
    members: list[Past] = []
    for index, item in enumerate(items):
        try:
            fresh = context.resolve(task.input, loops.for_each_context(item, index))
        except ExpressionError as exc:
            attempt = context.failure(str(exc), "ExpressionError", index)
            member = _as_past(attempt)
        else:
            member, attempt = context.step(
                index, fresh, current.get(index), attempts.get(index, [])
            )
        members.append(member)
        if attempt is not None:
            result.created.append(attempt)
    result.retire = [
        a.id for i, a in current.items() if i >= len(items) and not iterations.retired(a)
    ] + _markers(history)
    if not items:
        attempt = context.new(
            transitions.EMPTY_LOOP, None, input=[], output=[], completed_at=context.now
        )
        result.created.append(attempt)
    if not any(m.status in transitions.LIVE for m in members):
        failed = any(m.status == Status.FAILED for m in members)
        if failed and not task.tolerate_failures:
            result.failed = True
        else:
            result.done = True
            result.output, result.summary = loop_output(task, members)
    return result


def _plan_until(context: _Context, history: list[Past]) -> LoopPlan:
    task = context.task
    result = LoopPlan(retire=_markers(history))
    current = current_by_iteration(history)
    attempts = by_iteration(history)
    members: list[Past] = []
    previous_output = None
    # The setting may have been lowered since the definition was saved: it holds at run time.
    maximum = min(task.max_iterations or 1, loops.max_iterations_limit())
    limit = "max_iterations" if maximum == task.max_iterations else "FLOWPLATFORM_MAX_ITERATIONS"
    for index in range(maximum):
        try:
            fresh = context.resolve(task.input, loops.until_context(index, previous_output))
        except ExpressionError as exc:
            result.created.append(context.failure(str(exc), "ExpressionError", index))
            result.failed = True
            break
        member, attempt = context.step(index, fresh, current.get(index), attempts.get(index, []))
        if attempt is not None:
            result.created.append(attempt)
        if member.status in transitions.LIVE:
            break  # this round runs; the loop goes on when it completes
        members.append(member)
        if loops.until_holds(task.until or "", member.output, index):
            result.done = True
            result.output, result.summary = loop_output(task, members)
            break
        previous_output = member.output
    else:
        result.created.append(
            context.failure(
                f"the loop ran its {maximum} iterations ({limit}) and its until "
                f"condition {task.until} never held"
            )
        )
        result.failed = True
    if result.done:  # the rounds after the one whose condition held are dropped
        last = members[-1].iteration
        result.retire += [
            a.id for i, a in current.items() if i > last and not iterations.retired(a)
        ]
    return result


def _as_past(attempt: TaskExecution) -> Past:
    return Past(
        attempt.id,
        attempt.task_name,
        attempt.status,
        attempt.input,
        attempt.output,
        attempt.completed_at,
        attempt.stale_reason,
        attempt.stale_upstream_task,
        iteration=attempt.iteration,
        idx=attempt.task_execution_idx,
        stale_upstream_iteration=attempt.stale_upstream_iteration,
    )
