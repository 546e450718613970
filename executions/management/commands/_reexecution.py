"""One re-execution of a flow execution in its own transaction, for reexecute_flow and
reexecute_stale: it reports the attempts it started, and a dry run rolls it back."""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass

from django.db import transaction

from executions import engine, services
from executions.models import FlowExecution, TaskExecution
from flows.definitions import spec_for


@dataclass(frozen=True)
class Reexecution:
    flow_execution: FlowExecution
    started: list[TaskExecution]  # created by the re-execution's transaction, dependency order
    dry_run: bool
    skipped: bool = False  # `only_if_stale` and the flow execution was no longer stale


def actor(text: str) -> str:
    """An argparse type for --actor: it is stored as `modified_by`."""
    if not 1 <= len(text) <= 200:
        raise argparse.ArgumentTypeError("must be 1 to 200 characters")
    return text


def reexecute(
    flow_execution_id: uuid.UUID,
    *,
    actor: str,
    only_stale: bool = False,
    task: str | None = None,
    dry_run: bool = False,
    only_if_stale: bool = False,
) -> Reexecution:
    """Call `services.reexecute_flow_execution` in a transaction that a dry run rolls back: the
    on-commit hooks of a rolled-back transaction are dropped, so no job starts either."""
    with transaction.atomic():
        # Locked before the snapshot, so the attempts counted as started are exactly this
        # transaction's (a worker finishing an attempt needs the same lock to start others).
        flow_execution = engine.lock_flow_execution(flow_execution_id)
        if only_if_stale and flow_execution.status != FlowExecution.Status.STALE:
            return Reexecution(flow_execution, [], dry_run, skipped=True)
        attempts = TaskExecution.objects.filter(flow_execution_id=flow_execution_id)
        before = set(attempts.values_list("pk", flat=True))
        flow_execution = services.reexecute_flow_execution(
            flow_execution, actor=actor, only_stale=only_stale, task=task
        )
        order = spec_for(flow_execution.flow_version).dag.topological_order()
        position = {name: index for index, name in enumerate(order)}
        started = sorted(
            (
                attempt
                for attempt in attempts.only(
                    "id", "task_name", "task_execution_idx", "status", "reused_from"
                )
                if attempt.pk not in before
            ),
            key=lambda attempt: (position[attempt.task_name], attempt.task_execution_idx),
        )
        if dry_run:
            transaction.set_rollback(True)
    if not dry_run:
        flow_execution.refresh_from_db(fields=["status", "updated_at"])  # jobs ran on commit
    return Reexecution(flow_execution, started, dry_run)


def describe(started: list[TaskExecution]) -> str:
    """`a (idx 1), b (idx 1, reused)`: reused = early cutoff kept its previous output."""
    if not started:
        return "nothing"
    return ", ".join(
        f"{attempt.task_name} (idx {attempt.task_execution_idx}"
        f"{', reused' if attempt.reused_from_id else ''})"
        for attempt in started
    )
