"""One re-execution of a flow execution in its own transaction, for reexecute_flow and
reexecute_stale: it reports the attempts it started, and a dry run rolls it back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db import transaction

from executions import locking, services
from executions.models import FlowExecution, TaskExecution
from flowplatform import rls
from flowplatform.commands import command_error
from flowplatform.exceptions import InvalidInput
from flowplatform.tenancy.services import valid_actor


@dataclass(frozen=True)
class Reexecution:
    flow_execution: FlowExecution
    started: list[TaskExecution]  # created by the re-execution's transaction, dependency order
    dry_run: bool
    skipped: bool = False  # `only_if_stale` and the flow execution was no longer stale
    # Tasks that run later, as their upstream tasks complete (after the transaction's own).
    later: list[str] = field(default_factory=list)


def check_actor(text: str) -> str:
    """--actor is stored as `modified_by`, so it follows the API's rule for it."""
    try:
        return valid_actor(text, "actor")
    except InvalidInput as exc:
        raise command_error(exc) from None


def reexecute(
    flow_execution_id: uuid.UUID,
    organization_id: uuid.UUID,
    *,
    actor: str,
    only_stale: bool = False,
    task: str | None = None,
    dry_run: bool = False,
    only_if_stale: bool = False,
) -> Reexecution:
    """Call `services.start_reexecution` in a transaction that a dry run rolls back: the
    on-commit hooks of a rolled-back transaction are dropped, so no job starts either. The
    transaction is scoped to the flow execution's organization (row-level security)."""
    with rls.tenant_scope(organization_id):
        flow_execution = locking.lock_flow_execution(flow_execution_id)
        if only_if_stale and flow_execution.status != FlowExecution.Status.STALE:
            return Reexecution(flow_execution, [], dry_run, skipped=True)
        started = services.start_reexecution(
            flow_execution, actor=actor, only_stale=only_stale, task=task
        )
        now = {attempt.task_name for attempt in started}
        later = [name for name in services.outstanding_tasks(flow_execution) if name not in now]
        if dry_run:
            flow_execution.refresh_from_db(fields=["status", "updated_at"])  # as it would be
            transaction.set_rollback(True)
    if not dry_run:
        with rls.tenant_scope(organization_id):  # jobs ran on commit
            flow_execution.refresh_from_db(fields=["status", "updated_at"])
    return Reexecution(flow_execution, started, dry_run, later=later)


def describe(result: Reexecution) -> str:
    """`a (idx 1), b (idx 1, reused); then, as their upstream tasks complete: c, d`: reused =
    early cutoff kept its previous output. What runs later is named too, so a dry run shows
    the whole set that will run (those of them early cutoff will reuse can only be known as
    they come)."""
    now = ", ".join(
        f"{attempt.task_name} (idx {attempt.task_execution_idx}"
        f"{', reused' if attempt.reused_from_id else ''})"
        for attempt in result.started
    )
    later = ", ".join(result.later)
    if now and later:
        return f"{now}; then, as their upstream tasks complete: {later}"
    return now or (f"as their upstream tasks complete: {later}" if later else "nothing")
