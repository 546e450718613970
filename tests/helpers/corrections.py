"""Corrections driven through the API, and the DAG shapes they are tried on: run a shape,
correct an attempt, drive a sequence of corrections checking the freshness invariant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction
from hypothesis import HealthCheck, settings

from executions.models import FlowExecution, TaskExecution
from executions.selectors import freshness_violations, is_settled
from executions.services import create_flow_execution
from flows.services import create_flow
from outputs.models import TaskOutput
from outputs.summary import recompute_task_outputs_summary
from tests.helpers.flows import get_json, latest

SHAPES: dict[str, dict[str, list[str]]] = {
    "chain": {"a": [], "b": ["a"], "c": ["b"], "d": ["c"]},
    "diamond": {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []},
    "fan": {
        "root": [],
        **{f"x{i}": ["root"] for i in range(5)},
        "join": [f"x{i}" for i in range(5)],
        "side": [],
    },
}

# Property tests over the database: reproducible (derandomized), no example database, no
# per-example deadline (an example runs a flow).
PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def shape_definition(shape: dict[str, list[str]], counted: bool = False) -> str:
    """Each task's output is its input: its name and the outputs of its upstream tasks."""
    tasks = []
    for name, parents in shape.items():
        reads = {p: f"${{{{ tasks.{p}.output }}}}" for p in parents}
        task = {"name": name, "type": "transform", "input": {"me": name, "up": reads}}
        if not parents:
            task["input"]["flow"] = "${{ flow.input }}"
        if counted:
            task.update(type="python", config={"callable": "tests.helpers.callables:counted"})
        tasks.append(task)
    return json.dumps({"tasks": tasks})


def run_shape(tenant: Any, shape: dict[str, list[str]], counted: bool = False) -> str:
    flow = create_flow(
        tenant.org,
        name=f"f-{uuid.uuid4().hex[:8]}",
        definition=shape_definition(shape, counted),
        actor="t",
    )
    response = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id), "input": 1}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "completed"
    return response.json()["id"]


def snapshot_attempts(flow_execution_id: str) -> dict[Any, tuple]:
    """attempt id → (status, updated_at, output as JSON)."""
    return {
        row["id"]: (row["status"], row["updated_at"], json.dumps(row["output"], sort_keys=True))
        for row in TaskExecution.objects.filter(flow_execution_id=flow_execution_id).values()
    }


def correct_as_read(
    tenant: Any, attempt: TaskExecution, output: Any, query: str = "", **changes: Any
):
    """PUT what was read (`modified_by` included), with a new output, status completed."""
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body.update(output=output, status="completed", **changes)
    return tenant.client.put(f"/task-executions/{attempt.id}{query}", body, format="json")


def correct_as_key(
    tenant: Any, attempt: TaskExecution, output: Any, query: str = "", **changes: Any
):
    """PUT what was read, with a new output; `modified_by` left out: the key's identity acts."""
    body = get_json(tenant, f"/task-executions/{attempt.id}")
    del body["modified_by"]
    body.update(output=output, status="completed", **changes)
    return tenant.client.put(f"/task-executions/{attempt.id}{query}", body, format="json")


def drive_corrections(
    tenant: Any,
    fe: str,
    names: list[str],
    steps: list[tuple[int, bool, int]],
    put: Callable[..., Any] = correct_as_read,
) -> FlowExecution:
    """Each step corrects a completed task (picked by index) to {"v": value}, with or without
    execute_flow; the invariant must hold after each, and after re-running what is stale."""
    for index, execute, value in steps:
        completed = [n for n in names if latest(fe, n).status == "completed"]
        if not completed:
            break
        target = latest(fe, completed[index % len(completed)])
        query = "?execute_flow=true" if execute else ""
        assert put(tenant, target, {"v": value}, query).status_code == 200
        flow_execution = FlowExecution.objects.get(pk=fe)
        assert is_settled(flow_execution)
        assert freshness_violations(flow_execution) == []
    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert flow_execution.status == "completed"
    assert freshness_violations(flow_execution) == []
    return flow_execution


def chain_execution(
    tenant: Any, size: int, *, outputs: bool = False
) -> tuple[FlowExecution, TaskExecution]:
    """A chain t0 → … → t{size-1} whose attempts are written directly, all completed; and t0.
    `outputs`: each task's completed output too, and the summary they give."""
    tasks = [{"name": "t0", "type": "transform"}] + [
        {"name": f"t{i}", "type": "transform", "depends_on": [f"t{i - 1}"]} for i in range(1, size)
    ]
    flow = create_flow(
        tenant.org, name=f"chain-{size}", definition=json.dumps({"tasks": tasks}), actor="t"
    )
    fe = create_flow_execution(tenant.org, flow)
    TaskExecution.objects.bulk_create(
        TaskExecution(
            organization=tenant.org,
            flow_execution=fe,
            task_name=f"t{i}",
            status="completed",
            output={"i": i},
        )
        for i in range(size)
    )
    if outputs:
        TaskOutput.objects.bulk_create(
            TaskOutput(
                organization=tenant.org,
                flow_execution=fe,
                task_name=f"t{i}",
                output={"i": i},
                summary={"i": i},
                status="completed",
                flow_version=1,
            )
            for i in range(size)
        )
        with transaction.atomic():
            recompute_task_outputs_summary(fe.pk)
    return fe, TaskExecution.objects.get(flow_execution=fe, task_name="t0")


def counted_task(name: str, upstream: str, **extra: Any) -> dict:
    """Output = input; every run is recorded in CALLS (as its input's JSON)."""
    return {
        "name": name,
        "type": "python",
        "input": {"from": name, "up": f"${{{{ tasks.{upstream}.output }}}}"},
        "config": {"callable": "tests.helpers.callables:counted"},
        **extra,
    }


def lossy_chain(c_extra: dict | None = None) -> list[dict]:
    """a → b → c where b keeps only a's `x`: changing a's `y` leaves b's output as it was."""
    return [
        {"name": "a", "type": "transform", "input": {"x": 1, "y": 1}},
        {
            "name": "b",
            "type": "transform",
            "input": "${{ tasks.a.output }}",
            "config": {"expression": "{x: x}"},
        },
        counted_task("c", "b", **(c_extra or {})),
    ]


def correction(
    tenant: Any, flow_execution: FlowExecution, *, execute_flow: bool, locked: bool = True
) -> Callable[[], Any]:
    """GET → edit → PUT of extract's attempt (of `start_extract_chain`), always with the same
    Idempotency-Key; `locked`: with the `updated_at` read (optimistic locking), else last write
    wins."""
    extract = TaskExecution.objects.get(flow_execution=flow_execution, task_name="extract")
    body = tenant.client.get(f"/task-executions/{extract.pk}").json()
    body.update(status="completed", output={"pages": 7})
    if not locked:
        del body["updated_at"]
    key = str(uuid.uuid4())
    url = f"/task-executions/{extract.pk}?execute_flow={str(execute_flow).lower()}"
    return lambda: tenant.client.put(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
