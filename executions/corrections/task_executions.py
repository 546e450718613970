"""Correcting a task execution: PUT/PATCH /task-executions/{id}, the admin's change form and
`manage.py correct_task` all call `correct_task_execution` (or its dry run, `preview_correction`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from executions import locking, selectors, transitions
from executions.corrections import preview, records
from executions.engine import lifecycle, predicting, staleness
from executions.executors import get_executor
from executions.models import Correction, FlowExecution, StaleReason, TaskExecution
from flowplatform.canonical import same_json
from flowplatform.exceptions import Conflict, InvalidInput
from flowplatform.history import ensure_baseline
from flowplatform.records import apply_changes, lock_for_update
from flows.definitions import FlowSpec, spec_for

# Fields of a task execution a client may change; everything else is identity or server-set.
TASK_EXECUTION_MUTABLE_FIELDS = ("status", "input", "output", "error")
# Of those, what is saved as it is sent (the status moves through executions.transitions).
_SAVED_AS_SENT = tuple(name for name in TASK_EXECUTION_MUTABLE_FIELDS if name != "status")
Status = TaskExecution.Status


@dataclass(frozen=True)
class CorrectionResult:
    task_execution: TaskExecution
    stale_tasks: list[str] = field(default_factory=list)  # dependency order
    started: list[TaskExecution] = field(default_factory=list)  # attempts created now
    dry_run: bool = False
    preview_token: str | None = None  # what the request saw; see preview.correction_fingerprint
    correction: Correction | None = None
    stale_iterations: dict[str, list[int]] = field(default_factory=dict)  # of looped tasks
    # Dry runs: what each affected task would do, task name -> {"action", "input", "output"}
    # (executions.engine.predicting); empty for a saved correction.
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)


@transaction.atomic
def correct_task_execution(
    task_execution: TaskExecution,
    *,
    changes: dict[str, Any],
    identity: dict[str, Any],
    expected_updated_at: datetime | None,
    actor: str,
    execute_flow: bool = False,
    reason: str | None = None,
    source: str = Correction.Source.API,
    preview_token: str | None = None,
    issue_token: bool = False,
    summary: dict[str, Any] | None = None,
    predict: bool = False,
) -> CorrectionResult:
    """The correction path, in one transaction with the flow execution's row locked first, so
    corrections to one flow execution serialize (executions/README.md lists it step by step):

    1. validate (`_validate`): identity fields unchanged, the optimistic lock, that this is
       the task's current attempt, an allowed status transition (executions.transitions);
    2. with `preview_token`, check that nothing the preview saw has changed (else
       PreviewOutdated, 409);
    3. open the Correction (who, why, before) that stale causes and new attempts point to;
    4. save the attempt (`_apply`: status through transitions.move_by_person, `modified_by` =
       the actor, a history row);
    5. when it ends completed with an output other than the task's current one:
       lifecycle.propagate_new_output publishes it as the current TaskOutput (the summary
       follows), marks every transitive dependent's latest attempt stale and, with
       `execute_flow`, starts the stale tasks again (jobs enqueued after commit; early cutoff
       reuses what did not change); otherwise lifecycle.settle derives the flow's status;
    6. close the Correction: after, the stale set.

    `summary`: the corrected output's summary; without one it is derived as the task type
    derives it (`Executor.summarize`). `predict` (a dry run's, in its rolled-back
    transaction): also run the stale set's pure tasks, for the predictions
    (engine.predicting).
    """
    flow_execution = locking.flow_execution_for_write(
        task_execution.organization, task_execution.flow_execution_id
    )
    if flow_execution.status == FlowExecution.Status.DELETED:
        raise Conflict("the flow execution is deleted; its task executions cannot change")
    spec = spec_for(flow_execution.flow_version)
    locked = lock_for_update(
        task_execution, identity=identity, expected_updated_at=expected_updated_at
    )
    requested, human, known = _validate(spec, locked, changes)
    before = records.attempt_state(locked)
    result = {**before, **{k: v for k, v in changes.items() if k in before}}
    if summary is not None:
        result["summary"] = summary
    looped = locked.iteration is not None and bool(
        locked.task_name in spec.tasks and spec.tasks[locked.task_name].loop
    )
    current_output = selectors.current_task_output(flow_execution, locked.task_name)
    token = None
    if issue_token or preview_token is not None:
        token = preview.correction_fingerprint(flow_execution, spec, locked, result, execute_flow)
        if preview_token is not None and preview_token != token:
            raise preview.PreviewOutdated()
    # Finishing pending work (a person completing a waiting human task) carries the flow on,
    # as a worker finishing an attempt does; re-running what a changed output made stale is
    # the caller's choice (execute_flow) only when an already finished output is corrected.
    was_live = locked.status in transitions.LIVE
    execute_flow = execute_flow or was_live
    correction = records.open_correction(
        flow_execution,
        task_name=locked.task_name,
        task_execution_id=locked.pk,
        iteration=locked.iteration,
        task_output=current_output,
        operation=Correction.Operation.TASK_EXECUTION_UPDATE,
        source=source,
        actor=actor,
        reason=reason,
        before=records.attempt_state(locked, flow_execution.task_outputs_summary),
        execute_flow=execute_flow,
    )
    _apply(locked, requested, changes, human=human, actor=actor, correction=correction)
    unchanged_output = locked.status == before["status"] == Status.COMPLETED and (
        same_json(before["output"], locked.output)
        if looped  # an iteration's result is its attempt's output
        else current_output is not None and same_json(current_output.output, locked.output)
    )
    publishes = locked.status == Status.COMPLETED and known and not unchanged_output
    if summary is not None and not publishes:
        raise InvalidInput.field(
            "summary",
            "describes a new output: only a correction that completes the task with an output "
            "other than its current one takes a summary",
        )
    if not publishes:
        if locked.status != Status.COMPLETED or not known:
            lifecycle.settle(flow_execution, spec)
        # Else the task's current output stays what its dependents read: nothing is outdated.
        propagation = lifecycle.NOTHING_PROPAGATED
    elif looped:
        if summary is not None:
            raise InvalidInput.field(
                "summary",
                "an iteration has no summary of its own: the looped task's summary counts "
                "its iterations",
            )
        propagation = lifecycle.propagate_iteration(
            flow_execution,
            spec,
            locked,
            was_live=was_live,
            actor=actor,
            execute_flow=execute_flow,
            correction_id=correction.pk,
        )
        current_output = selectors.current_task_output(flow_execution, locked.task_name)
    else:
        propagation = lifecycle.propagate_new_output(
            flow_execution,
            spec,
            locked.task_name,
            locked.output,
            actor=actor,
            execute_flow=execute_flow,
            correction_id=correction.pk,
            summary=_summary(spec, locked, summary),
        )
        current_output = selectors.current_task_output(flow_execution, locked.task_name)
    flow_execution.refresh_from_db(fields=["task_outputs_summary"])
    stale_tasks = propagation.stale_tasks
    if locked.stale_correction_id == correction.pk:
        stale_tasks = [locked.task_name]  # a person marked this task itself stale
    records.close_correction(
        correction,
        after=records.attempt_state(locked, flow_execution.task_outputs_summary),
        stale_tasks=stale_tasks,
        stale_iterations=propagation.stale_iterations,
        task_output=current_output,
    )
    predictions: dict[str, dict[str, Any]] = {}
    if predict and publishes:
        predictions = predicting.predict(
            flow_execution,
            spec,
            spec.dag.in_order(spec.dag.descendants(locked.task_name)),
            correction_id=correction.pk,
            executed=execute_flow,
            continuing=(locked.task_name,) if looped else (),
        )
    return CorrectionResult(
        locked,
        propagation.stale_tasks,
        propagation.started,
        preview_token=token,
        correction=correction,
        stale_iterations=propagation.stale_iterations,
        predictions=predictions,
    )


def _validate(
    spec: FlowSpec, locked: TaskExecution, changes: dict[str, Any]
) -> tuple[str, bool, bool]:
    """Step 1 (after the identity and optimistic-lock checks of lock_for_update): may this
    change be made? Returns the requested status, whether the task waits for a person, and
    whether the pinned version knows the task."""
    requested = changes.get("status", locked.status)
    if requested != Status.DELETED:
        _check_current_attempt(locked)
    if "input" in changes and not same_json(changes["input"], locked.input):
        # The input is what the task's expressions resolved to from its upstream outputs;
        # editing it would make the attempt claim it ran on something it did not.
        raise InvalidInput.field(
            "input",
            "is resolved from the flow input and upstream outputs and cannot be edited; "
            "correct the upstream task's output instead",
            "immutable",
        )
    task = spec.tasks.get(locked.task_name)
    human = task is not None and get_executor(task.type).waits_for_person
    transitions.check_person_move(locked.status, requested, human_task=human)
    return requested, human, task is not None


def _summary(spec: FlowSpec, attempt: TaskExecution, sent: dict[str, Any] | None) -> dict:
    """The published output's summary: the one sent, else what the task type derives."""
    if sent is not None:
        return sent
    task = spec.tasks[attempt.task_name]
    try:
        return get_executor(task.type).summarize(attempt.output, task.config)
    except Exception as exc:  # the task's own summary function failed on this output
        raise InvalidInput.field(
            "summary",
            f"the task's summary could not be derived from this output ({exc}); send it",
            "summary_failed",
        ) from None


def _check_current_attempt(attempt: TaskExecution) -> None:
    if attempt.iteration is not None:  # an iteration: the iteration's latest attempt
        latest = selectors.latest_of_iteration(attempt)
        if latest.stale_reason == StaleReason.ITERATION_REMOVED:
            raise InvalidInput.field(
                "iteration",
                f"iteration {attempt.iteration} of task '{attempt.task_name}' is retired (its "
                "item left the for_each list, or its loop ended before it)",
                "not_current_attempt",
            )
    else:
        latest = selectors.latest_attempt(attempt.flow_execution_id, attempt.task_name)
    if latest is not None and latest.id != attempt.pk:
        raise InvalidInput.field(
            "task_execution_idx",
            f"attempt {attempt.task_execution_idx} of task '{attempt.task_name}' "
            f"is not its current attempt; correct the current one: task_execution_idx "
            f"{latest.idx}, id {latest.id}",
            "not_current_attempt",
        )


def _apply(
    locked: TaskExecution,
    requested: str,
    changes: dict[str, Any],
    *,
    human: bool,
    actor: str,
    correction: Correction,
) -> None:
    """Step 4: save the attempt as corrected, as one history row (after a baseline row, so its
    history shows what this changed)."""
    now = timezone.now()
    locked._change_reason = records.history_reason(correction.reason, correction.source)
    if requested == Status.STALE and locked.status != requested:
        # A person says this task's own result is wrong: it is its own stale cause.
        staleness.record_own_cause(locked, correction.pk, actor=actor, now=now)
    transitions.move_by_person(locked, requested, human_task=human, now=now)
    ensure_baseline(TaskExecution, locked.pk)
    apply_changes(
        locked,
        mutable_fields=_SAVED_AS_SENT,
        changes={k: v for k, v in changes.items() if k != "status"},
        actor=actor,
    )


def preview_correction(task_execution: TaskExecution, **kwargs: Any) -> CorrectionResult:
    """`dry_run`: the same correction, computed in a transaction that is rolled back.

    Nothing is written and no job is enqueued (on-commit hooks of a rolled-back transaction are
    dropped); the answer shows the record as it would be, with its stored `updated_at`, the
    preview token that binds a later PUT to what this preview saw, and the predictions of what
    each downstream task would do (engine.predicting).
    """
    stored_updated_at = task_execution.updated_at
    with transaction.atomic():
        result = correct_task_execution(task_execution, issue_token=True, predict=True, **kwargs)
        transaction.set_rollback(True)
    result.task_execution.updated_at = stored_updated_at
    return replace(result, dry_run=True, correction=None)
