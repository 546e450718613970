"""Row locks, and the one lock order every write follows.

The lock order: a flow execution's row first, then anything of it (its attempts, its outputs,
its summary). Every change to a flow execution's attempts and outputs — a correction, a
re-execution, a new or changed task output, a deletion, a worker recording an outcome, the
reaper — takes that lock first, so changes to one flow execution serialize in the order they
took it and never wait for each other's rows in opposite orders. Reads take no locks.
"""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from executions.models import FlowExecution
from flowplatform.exceptions import FLOW_EXECUTION_NOT_FOUND, NotFound
from flowplatform.tenancy.models import Organization

# A version's definition is read once into the FlowSpec cache (spec_for), not with every row.
VERSION_TEXT = ("flow_version__parsed", "flow_version__definition")


def locked_flow_executions() -> QuerySet[FlowExecution]:
    """Flow executions row-locked until the transaction ends, with their pinned version (its
    text deferred)."""
    return (
        FlowExecution.objects.select_for_update(of=("self",))
        .select_related("flow_version")
        .defer(*VERSION_TEXT)
    )


def lock_flow_execution(flow_execution_id: uuid.UUID) -> FlowExecution:
    return locked_flow_executions().get(pk=flow_execution_id)


def lock_for_worker(flow_execution_id: uuid.UUID) -> FlowExecution:
    """lock_flow_execution without the outputs summary, which only the summary code (reading
    it itself) needs: it grows with the flow, and a worker locks once per task."""
    return locked_flow_executions().defer("task_outputs_summary").get(pk=flow_execution_id)


def flow_execution_for_write(
    organization: Organization, flow_execution_id: uuid.UUID | str
) -> FlowExecution:
    """The organization's flow execution, row-locked until the transaction ends (NotFound if
    it is not the organization's)."""
    flow_execution = (
        locked_flow_executions().filter(organization=organization, pk=flow_execution_id).first()
    )
    if flow_execution is None:
        raise NotFound(FLOW_EXECUTION_NOT_FOUND)
    return flow_execution
