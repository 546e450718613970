"""What-if predictions for a dry run: what each task downstream of a correction (or an upgrade)
would do once its stale set runs again, and with what values where they can be known without
side effects.

A dry run (corrections.task_executions.preview_correction, corrections.upgrades.preview_upgrade)
applies the correction in a transaction that is rolled back. Inside it, after the correction
propagated, `predict` runs the cascade on the engine's own code: the queued attempts of the
affected tasks whose type is pure (`transform`, and any executor declaring `pure = True`) run
as a wave group (engine.waves), exactly as the job that follows the real correction runs them:
same inputs, same early cutoff, same loops, same retries. What that produced is then read
back; the rollback drops it with the correction, and the jobs it would have enqueued
(on-commit hooks of a rolled-back transaction are never run). So a prediction is the real
engine's answer, not a second implementation of it.

A task of a type with side effects (`python`, `http`, `human`) is never run here: it is
reported "unknown" (with its input, when that resolved), and so is every task that needs its
output.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings

from executions import selectors, transitions
from executions.engine import planning, waves
from executions.executors import get_executor
from executions.models import FlowExecution, TaskExecution
from flows.definitions import FlowSpec

Status = TaskExecution.Status
RUN, REUSE, UNKNOWN = "run", "reuse", "unknown"
_COLUMNS = ("id", "input", "output", "error", "reused_from_id", "started_by_correction_id")


def predict(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    affected: list[str],
    *,
    correction_id: uuid.UUID,
    executed: bool,
    continuing: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """Predictions for the `affected` tasks (in dependency order: a corrected task's
    dependents, or what an upgrade made stale or added), after the correction `correction_id`
    propagated (with `executed`: its stale set was scheduled to run again; without, the
    prediction is of running it: `?only=stale`). `continuing`: looped tasks that carry on too
    without being predicted (one corrected at an iteration: its later rounds, its output). Call
    inside the dry run's rolled-back transaction, with the flow execution's row locked.

    Task name → `{"action": "run" | "reuse" | "unknown", "input", "output"}` in dependency
    order; "input" and "output" only where known (a failure predicted for a pure task has
    "error" instead of "output"; a looped task's input is its iterations' inputs, in order).
    A few queries per wave group, whatever the number of tasks.
    """
    if not affected:
        return {}
    if not executed:  # what running the stale set would do: lifecycle.reexecute(only_stale)
        latest = selectors.latest_attempts(flow_execution)
        stale = [n for n, a in latest.items() if a.status in transitions.NEEDS_ATTEMPT]
        planning.schedule(
            flow_execution,
            spec,
            [n for n in stale if n in spec.tasks],
            correction_id=correction_id,
        )
    simulated = [*continuing, *affected]
    _simulate(flow_execution, spec, [t for t in simulated if get_executor(spec.tasks[t].type).pure])
    return _read(flow_execution, spec, affected, correction_id)


def _simulate(flow_execution: FlowExecution, spec: FlowSpec, pure: list[str]) -> None:
    """Run the queued attempts of the `pure` tasks, group after group (a group runs what they
    make ready in memory; an until loop's next round, or a task that FLOWPLATFORM_INLINE_PURE_
    TASKS keeps out of waves, is left queued for the next), until none is left or
    FLOWPLATFORM_PREDICTION_TASKS attempts have been started."""
    budget = settings.FLOWPLATFORM_PREDICTION_TASKS
    while pure and budget > 0:
        queued = list(
            TaskExecution.objects.filter(
                flow_execution=flow_execution, task_name__in=pure, status=Status.QUEUED
            )
            .order_by("task_execution_idx")
            .values_list("id", flat=True)[:budget]
        )
        if not queued:
            return
        group = waves.Group(flow_execution.pk, min(budget, settings.FLOWPLATFORM_WAVE_TASKS))
        group.run(queued)
        if not group.ran:
            return
        budget -= group.ran


def _read(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    affected: list[str],
    correction_id: uuid.UUID,
) -> dict[str, dict[str, Any]]:
    """Each affected task's prediction, from its latest attempt now (three queries)."""
    latest = selectors.latest_attempts(flow_execution, affected)
    ids = [m.id for a in latest.values() for m in (a.members or (a,))]
    rows = {
        row["id"]: row
        for row in TaskExecution.objects.filter(pk__in=ids).values(*_COLUMNS).iterator()
    }
    looped = [t for t in affected if spec.tasks[t].loop and t in latest]
    outputs = selectors.current_outputs(flow_execution, looped) if looped else {}
    predictions: dict[str, dict[str, Any]] = {}
    for name in affected:
        attempt = latest.get(name)
        own = attempt is not None and rows[attempt.id]["started_by_correction_id"] == correction_id
        if not own:  # never planned: something it needs is not known
            predictions[name] = {"action": UNKNOWN}
        elif spec.tasks[name].loop:  # an empty for_each has no iterations
            members = [rows[m.id] for m in attempt.members if m.iteration is not None]
            predictions[name] = _looped(attempt.status, members, outputs.get(name))
        else:
            predictions[name] = _single(attempt.status, rows[attempt.id])
    return predictions


def _single(status: str, row: dict[str, Any]) -> dict[str, Any]:
    if status == Status.COMPLETED:
        action = RUN if row["reused_from_id"] is None else REUSE
        return {"action": action, "input": row["input"], "output": row["output"]}
    if status == Status.FAILED:
        return {"action": RUN, "input": row["input"], "error": row["error"]}
    return {"action": UNKNOWN, "input": row["input"]}  # queued for a job, or waiting


def _looped(status: str, members: list[dict[str, Any]], output: Any) -> dict[str, Any]:
    inputs = [m["input"] for m in members]
    if status == Status.FAILED:
        error = next((m["error"] for m in members if m["error"] is not None), None)
        return {"action": RUN, "input": inputs, "error": error}
    if status != Status.COMPLETED:
        return {"action": UNKNOWN, "input": inputs}
    reused = members and all(m["reused_from_id"] is not None for m in members)
    action = REUSE if reused else RUN
    return {"action": action, "input": inputs, "output": output}
