"""Reads that are more than a filter: each task's latest attempt, current outputs, resolved
inputs, and the freshness invariant (inputs and definitions). No writes, no locks."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from executions import iterations
from executions.models import Correction, FlowExecution, TaskExecution
from executions.transitions import LIVE
from flowplatform.canonical import same_json
from flows import loops
from flows.definitions import FlowSpec, cached_spec, spec_for
from flows.expressions import ExpressionError, resolve
from flows.models import FlowVersion
from outputs.models import TaskOutput

Status = TaskExecution.Status
_INPUT = object()  # resolve_task_input: the task's own input template


@dataclass(frozen=True)
class Attempt:
    """The latest attempt of a task, as the engine needs it. For a looped task (`members`
    not empty): what its current iterations add up to (executions.iterations), with the
    highest idx of any of its attempts and the newest member's id."""

    id: uuid.UUID
    task_name: str
    idx: int
    status: str
    stale_reason: str | None = None
    stale_upstream_task: str | None = None
    updated_at: datetime | None = None
    iteration: int | None = None
    members: tuple[Attempt, ...] = ()  # a looped task's current attempts, by iteration


_ATTEMPT_COLUMNS = (
    "id",
    "task_name",
    "task_execution_idx",
    "status",
    "stale_reason",
    "stale_upstream_task",
    "updated_at",
    "iteration",
)


def latest_attempts(
    flow_execution: FlowExecution | uuid.UUID, names: Iterable[str] | None = None
) -> dict[str, Attempt]:
    """Each task's latest attempt: its attempt with the highest idx (whatever its status; a
    task without attempts is absent); for a looped task, its iterations' current attempts and
    what they add up to (`_looped`). One query. The one definition of "a task's latest
    attempt" (`_by_idx`); `has_latest_completed` is the same rule in SQL."""
    last: dict[str, Attempt] = {}
    looped: dict[str, list[Attempt]] = {}
    for row in _by_idx(flow_execution, names, _ATTEMPT_COLUMNS):
        attempt = Attempt(*row)
        if attempt.iteration is not None or attempt.task_name in looped:
            looped.setdefault(attempt.task_name, []).append(attempt)
        last[attempt.task_name] = attempt
    for name, rows in looped.items():
        last[name] = _looped(flow_execution, name, rows)
    return last


def _looped(flow_execution: FlowExecution | uuid.UUID, name: str, rows: list[Attempt]) -> Attempt:
    members = tuple(iterations.current(rows))
    newest = max(rows, key=lambda r: r.idx)
    status = iterations.aggregate(members, tolerate_failures=_tolerates(flow_execution, name))
    if status is None:  # every iteration retired: as a task whose latest attempt is stale
        return replace(newest, members=())
    first_stale = next((m for m in members if m.status == Status.STALE), None)
    return replace(
        newest,
        status=status,
        stale_reason=first_stale.stale_reason if first_stale else None,
        stale_upstream_task=first_stale.stale_upstream_task if first_stale else None,
        members=members,
    )


def _tolerates(flow_execution: FlowExecution | uuid.UUID, name: str) -> bool:
    """Does the task's definition tolerate failed iterations? (No query when the version's
    definition was read before.)"""
    if isinstance(flow_execution, FlowExecution):
        spec = cached_spec(flow_execution.flow_version_id) or spec_for(flow_execution.flow_version)
    else:
        version = FlowExecution.objects.filter(pk=flow_execution).values("flow_version_id")
        spec = spec_for(FlowVersion.objects.get(pk__in=version))
    task = spec.tasks.get(name)
    return task is not None and task.tolerate_failures


def latest_statuses(flow_execution: FlowExecution, names: Iterable[str]) -> dict[str, str]:
    """Each named task's latest attempt's status (what the pure status decisions take): its
    callers name every task of the spec, so the names are kept here rather than sent as a
    10,000-element parameter. One query."""
    wanted = set(names)
    return {
        name: attempt.status
        for name, attempt in latest_attempts(flow_execution).items()
        if name in wanted
    }


def _by_idx(
    flow_execution: FlowExecution | uuid.UUID, names: Iterable[str] | None, columns: Iterable[str]
) -> QuerySet:
    """`columns` of the attempts of `names` (every task: None), each task's in idx order: the
    last row of a task is its latest attempt."""
    rows = TaskExecution.objects.filter(flow_execution=flow_execution)
    if names is not None:
        rows = rows.filter(task_name__any_of=list(names))
    return rows.order_by("task_name", "task_execution_idx").values_list(*columns)


def latest_of_iteration(attempt: TaskExecution) -> Attempt:
    """The latest attempt of `attempt`'s iteration of its looped task. One query."""
    row = (
        TaskExecution.objects.filter(
            flow_execution_id=attempt.flow_execution_id,
            task_name=attempt.task_name,
            iteration=attempt.iteration,
        )
        .order_by("-task_execution_idx")
        .values_list(*_ATTEMPT_COLUMNS)
        .first()
    )
    return Attempt(*row)


def latest_attempt(flow_execution: FlowExecution | uuid.UUID, task_name: str) -> Attempt | None:
    return latest_attempts(flow_execution, [task_name]).get(task_name)


def live_attempts(flow_execution: FlowExecution) -> QuerySet[TaskExecution]:
    """Its queued and running attempts (each is its task's latest; indexed)."""
    return TaskExecution.objects.filter(flow_execution=flow_execution, status__in=LIVE)


def has_latest_completed(flow_execution: FlowExecution) -> bool:
    """Is some task's latest attempt completed? One indexed query."""
    newer = TaskExecution.objects.filter(
        flow_execution=OuterRef("flow_execution"),
        task_name=OuterRef("task_name"),
        task_execution_idx__gt=OuterRef("task_execution_idx"),
    )
    return (
        TaskExecution.objects.filter(flow_execution=flow_execution, status=Status.COMPLETED)
        .exclude(Exists(newer))
        .exists()
    )


def is_settled(flow_execution: FlowExecution) -> bool:
    """Nothing is queued or running (a human task waiting for a person counts as running)."""
    return not live_attempts(flow_execution).exists()


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


def current_task_output(flow_execution: FlowExecution, task_name: str) -> TaskOutput | None:
    """The task's current TaskOutput row. One query."""
    return (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name=task_name)
        .oldest_to_current()
        .only("id", "output", "summary", "status", "tags")
        .last()
    )


def resolve_task_input(
    spec: FlowSpec,
    task: str,
    flow_input: Any,
    outputs: dict[str, Any],
    template: Any = _INPUT,
    *,
    loop: dict[str, Any] | None = None,
) -> Any:
    """What `task`'s input expressions (or `template`'s) give over the flow input and the
    current outputs (and `loop`, in an iteration of a looped task)."""
    context: dict[str, Any] = {
        "flow": {"input": flow_input},
        "tasks": {name: {"output": outputs.get(name)} for name in spec.tasks[task].upstream},
    }
    if loop is not None:
        context["loop"] = loop
    return resolve(spec.tasks[task].input if template is _INPUT else template, context)


@dataclass(frozen=True)
class FreshnessViolation:
    task_name: str
    attempt_id: uuid.UUID
    stored_input: Any
    expected_input: Any
    iteration: int | None = None  # of a looped task
    # A definition violation: the result is from before the upgrade to this version changed
    # (or added) the task; `computed_by` is the attempt that computed it (reused_from's end).
    upgraded_to: int | None = None
    computed_by: uuid.UUID | None = None

    def __str__(self) -> str:
        where = "" if self.iteration is None else f" iteration {self.iteration}"
        if self.upgraded_to is not None:
            return (
                f"task '{self.task_name}'{where} attempt {self.attempt_id}: its result was "
                f"computed by attempt {self.computed_by} before the upgrade to version "
                f"{self.upgraded_to} changed its definition"
            )
        return (
            f"task '{self.task_name}'{where} attempt {self.attempt_id}: input "
            f"{self.stored_input!r} but its upstream outputs now give {self.expected_input!r}"
        )


def freshness_violations(flow_execution: FlowExecution) -> list[FreshnessViolation]:
    """Current completed attempts whose input differs from what their expressions resolve to
    from the current outputs of their upstream tasks, or whose result is from before the
    latest upgrade that changed (or added) their task (`definition_violations`). Empty means
    the invariant holds.

    The invariant is promised once a flow execution settles; call is_settled first.
    """
    spec = spec_for(flow_execution.flow_version)
    latest = {
        name: attempt
        for name, attempt in latest_attempts(flow_execution).items()
        if attempt.status == Status.COMPLETED and name in spec.tasks
    }
    ids = [m.id for a in latest.values() for m in (a.members or (a,))]
    stored = {
        pk: (attempt_input, output)
        for pk, attempt_input, output in TaskExecution.objects.filter(pk__any_of=ids).values_list(
            "id", "input", "output"
        )
    }
    outputs = current_outputs(flow_execution, spec.tasks)
    violations = []
    for name in spec.dag.in_order(latest):
        attempt = latest[name]
        if spec.tasks[name].loop:
            violations += _loop_violations(spec, flow_execution, attempt, stored, outputs)
            continue
        try:
            expected = resolve_task_input(spec, name, flow_execution.input, outputs)
        except ExpressionError as exc:
            expected = f"<{exc}>"
        if not same_json(expected, stored[attempt.id][0]):
            violations.append(FreshnessViolation(name, attempt.id, stored[attempt.id][0], expected))
    return violations + definition_violations(flow_execution, spec, latest, stored)


def _loop_violations(
    spec: FlowSpec,
    flow_execution: FlowExecution,
    attempt: Attempt,
    stored: dict[uuid.UUID, tuple[Any, Any]],
    outputs: dict[str, Any],
) -> list[FreshnessViolation]:
    """A completed looped task's current iterations against what they resolve to now: one per
    item of its for_each list (each on its item), or an until loop's rounds in order (each on
    the previous round's output)."""
    task = spec.tasks[attempt.task_name]
    members = [m for m in attempt.members if m.iteration is not None]
    found: list[FreshnessViolation] = []
    if task.loop == "for_each":
        try:
            items = loops.items_of(
                resolve_task_input(spec, task.name, flow_execution.input, outputs, task.for_each)
            )
        except (ExpressionError, loops.LoopError) as exc:
            items = []
            found.append(FreshnessViolation(task.name, attempt.id, None, f"<{exc}>"))
        if [m.iteration for m in members] != list(range(len(items))):
            found.append(
                FreshnessViolation(
                    task.name,
                    attempt.id,
                    [m.iteration for m in members],
                    f"<iterations 0..{len(items) - 1} for {len(items)} items>",
                )
            )
        contexts = [loops.for_each_context(item, i) for i, item in enumerate(items)]
    else:
        contexts = [
            loops.until_context(i, stored[members[i - 1].id][1] if i else None)
            for i in range(len(members))
        ]
    for member, loop in zip(members, contexts, strict=False):
        try:
            expected = resolve_task_input(spec, task.name, flow_execution.input, outputs, loop=loop)
        except ExpressionError as exc:
            expected = f"<{exc}>"
        if not same_json(expected, stored[member.id][0]):
            found.append(
                FreshnessViolation(
                    task.name, member.id, stored[member.id][0], expected, member.iteration
                )
            )
    return found


# How many `reused_from` links definition_violations follows (a longer chain is reported).
MAX_REUSE_HOPS = 100


def definition_violations(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    latest: dict[str, Attempt],
    stored: dict[uuid.UUID, tuple[Any, Any]],
) -> list[FreshnessViolation]:
    """The definition side of the invariant: each task the execution's upgrades changed or
    added (the latest such upgrade counts) has current completed attempts (a looped task: each
    current iteration) whose result was computed after that upgrade: the attempt at the end of
    their `reused_from` chain completed after it. One query, and one per link followed."""
    since: dict[str, tuple[datetime, Any]] = {}
    upgrades = Correction.objects.filter(
        flow_execution=flow_execution, operation=Correction.Operation.UPGRADE
    ).order_by("created_at", "id")
    for created_at, change, after in upgrades.values_list("created_at", "changes", "after"):
        for name in [*(change or {}).get("changed", {}), *(change or {}).get("added", [])]:
            since[name] = (created_at, (after or {}).get("flow_version"))
    members = {
        m.id: (name, m.iteration)
        for name in spec.dag.in_order(n for n in latest if n in since)
        for m in (latest[name].members or (latest[name],))
    }
    origin = {pk: pk for pk in members}  # a current attempt → the attempt it reuses, so far
    done: dict[uuid.UUID, datetime | None] = {}  # a current attempt → when its origin completed
    for _ in range(MAX_REUSE_HOPS):
        pending = {o for pk, o in origin.items() if pk not in done}
        if not pending:
            break
        rows = TaskExecution.objects.filter(pk__any_of=list(pending))
        links = {
            pk: (r, c) for pk, r, c in rows.values_list("id", "reused_from_id", "completed_at")
        }
        for pk in [pk for pk in origin if pk not in done]:
            reused_from, completed_at = links.get(origin[pk], (None, None))
            if reused_from is None:
                done[pk] = completed_at
            else:
                origin[pk] = reused_from
    found = []
    for pk, (name, iteration) in members.items():
        upgraded_at, version = since[name]
        if pk in done and done[pk] is not None and done[pk] > upgraded_at:
            continue
        found.append(
            FreshnessViolation(
                name,
                pk,
                stored[pk][0],
                f"<result from before the upgrade to version {version} changed its definition>"
                if pk in done
                else f"<a reuse chain longer than {MAX_REUSE_HOPS} links>",
                iteration,
                upgraded_to=version,
                computed_by=origin[pk],
            )
        )
    return found
