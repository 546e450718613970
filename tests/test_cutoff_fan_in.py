"""An early-cutoff cascade considers every upstream task of the tasks it reaches.

X -> A (A reads only the flow input: it is reused when X is corrected), X -> D, A -> C, E -> C,
C -> D. Correcting X with execute_flow=true: A is reused; C's inputs (A's and E's outputs) are
unchanged, so C is reused or re-run; D reads X's new output, so it runs. The flow completes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from executions.models import TaskExecution

pytestmark = pytest.mark.django_db(transaction=True)


def task(name: str, reads: list[str], after: list[str] = ()) -> dict[str, Any]:
    up = {p: f"${{{{ tasks.{p}.output }}}}" for p in reads}
    return {
        "name": name,
        "type": "transform",
        "depends_on": list(after),
        "input": {"me": name, "up": up, "flow": "${{ flow.input }}"},
    }


DEFINITION = json.dumps(
    {
        "tasks": [
            task("X", []),
            task("E", []),
            task("A", [], after=["X"]),
            task("C", ["A", "E"]),
            task("D", ["X", "C"]),
        ]
    }
)


def latest(fe_id: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, status in (
        TaskExecution.objects.filter(flow_execution_id=fe_id)
        .order_by("task_name", "task_execution_idx")
        .values_list("task_name", "status")
    ):
        out[name] = status
    return out


def test_a_cutoff_cascade_reaches_a_fan_in_task_whose_other_parent_was_not_read(tenant):
    flow = tenant.client.post("/flows", {"name": "f", "definition": DEFINITION}, format="json")
    assert flow.status_code == 201, flow.json()
    fe = tenant.client.post(
        "/flow-executions", {"flow_id": flow.json()["id"], "input": 1}, format="json"
    ).json()
    assert fe["status"] == "completed"
    x = TaskExecution.objects.get(flow_execution_id=fe["id"], task_name="X")
    body = tenant.client.get(f"/task-executions/{x.id}").json()
    body.update(output={"corrected": True}, status="completed")
    response = tenant.client.put(f"/task-executions/{x.id}?execute_flow=true", body, format="json")
    assert response.status_code == 200, response.json()
    statuses = latest(fe["id"])
    status = tenant.client.get(f"/flow-executions/{fe['id']}").json()["status"]
    assert statuses == dict.fromkeys("ACDEX", "completed"), statuses
    assert status == "completed"
