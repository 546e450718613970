"""Attempts a lost worker left behind, and one-task python flows run in-process: what the
lease, reaper and worker-fault tests start from."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from django.utils import timezone

from executions import jobs
from executions.models import FlowExecution, TaskExecution
from executions.services import start_flow_execution
from flowplatform import rls
from flows.services import create_flow


def chain_of_two(retries: int = 1) -> str:
    """a (with `retries`) → b, a reading the flow's input."""
    return yaml.safe_dump(
        {
            "tasks": [
                {
                    "name": "a",
                    "type": "transform",
                    "retries": retries,
                    "input": "${{ flow.input }}",
                },
                {"name": "b", "type": "transform", "input": "${{ tasks.a.output }}"},
            ]
        }
    )


def stranded(tenant: Any, retries: int = 1, expired: bool = True) -> FlowExecution:
    """A flow execution whose task `a` a worker claimed and then vanished: running, with a
    lease that ran out a second ago (or still runs for a minute)."""
    flow = create_flow(tenant.org, name="f", definition=chain_of_two(retries), actor="t")
    enqueue = jobs.enqueue_after_commit
    dropped: list[Any] = []
    jobs.enqueue_after_commit = lambda *args: dropped.append(args)  # nobody runs the job
    try:
        with rls.tenant_scope(tenant.org.pk):
            fe = start_flow_execution(tenant.org, flow_id=flow.id, input="x", actor="t")
    finally:
        jobs.enqueue_after_commit = enqueue
    assert dropped, "no job was dropped: the worker that died would have run it"
    offset = timedelta(seconds=-1 if expired else 60)
    TaskExecution.objects.filter(flow_execution=fe, task_name="a").update(
        status="running", lease_owner="lost-host:4242", lease_expires_at=timezone.now() + offset
    )
    return fe


def run_python_task(tenant: Any, callable_path: str) -> FlowExecution:
    """Start a one-task flow whose task `a` runs `callable_path` (embedded: it has run)."""
    task = {"name": "a", "type": "python", "config": {"callable": callable_path}}
    flow = create_flow(
        tenant.org, name="f", definition=yaml.safe_dump({"tasks": [task]}), actor="t"
    )
    with rls.tenant_scope(tenant.org.pk):
        return start_flow_execution(tenant.org, flow_id=flow.id, input=1, actor="t")
