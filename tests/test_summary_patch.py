"""The incrementally maintained task_outputs_summary (the database patches it in place)
equals a full recompute after every kind of write (engine runs, corrections, task-output
POST/PUT/DELETE, stale marking, re-executions), with task names that need quoting in a JSON
path."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from executions.models import FlowExecution, TaskExecution
from outputs.models import TaskOutput

pytestmark = pytest.mark.django_db(transaction=True)

# name -> upstream names
NAMES = {
    "root": [],
    "x.y": ["root"],
    "é": ["root"],
    "q'j$[0]": ["x.y", "é"],
    "😀": ["root"],
    'a"b': ["é"],
    "back\\slash": ["q'j$[0]"],
}


def quoted(name: str) -> str:
    return json.dumps(name)  # a JMESPath quoted identifier


def definition() -> str:
    tasks = []
    for name, parents in NAMES.items():
        up = {f"p{i}": f"${{{{ tasks.{quoted(p)}.output }}}}" for i, p in enumerate(parents)}
        tasks.append(
            {
                "name": name,
                "type": "transform",
                "input": {"me": name, "up": up, "flow": "${{ flow.input }}"},
            }
        )
    return json.dumps({"tasks": tasks})


def expected_summary(fe_id: Any) -> dict:
    """recompute_task_outputs_summary's result, without writing it."""
    current: dict[str, tuple] = {}
    for name, summary, status in (
        TaskOutput.objects.filter(flow_execution_id=fe_id)
        .oldest_to_current()
        .values_list("task_name", "summary", "status")
    ):
        current[name] = (summary, status)
    return {
        "tasks": {n: s for n, (s, _) in current.items()},
        "status_counts": dict(Counter(st for _, st in current.values())),
    }


def check(fe_id: Any, step: str) -> None:
    stored = FlowExecution.objects.get(pk=fe_id).task_outputs_summary
    assert stored == expected_summary(fe_id), step


def latest(fe_id: Any, name: str) -> TaskExecution:
    return (
        TaskExecution.objects.filter(flow_execution_id=fe_id, task_name=name)
        .order_by("-task_execution_idx")
        .first()
    )


def put_attempt(tenant: Any, fe_id: Any, name: str, query: str = "", **changes: Any) -> None:
    attempt = latest(fe_id, name)
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body.update(changes)
    response = tenant.client.put(f"/task-executions/{attempt.id}{query}", body, format="json")
    assert response.status_code == 200, response.json()


def test_incremental_summary_equals_a_recompute_after_every_kind_of_write(tenant):
    flow = tenant.client.post(
        "/flows", {"name": "specials", "definition": definition()}, format="json"
    )
    assert flow.status_code == 201, flow.json()
    response = tenant.client.post(
        "/flow-executions", {"flow_id": flow.json()["id"], "input": 1}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "completed"
    fe_id = response.json()["id"]
    check(fe_id, "first run")

    put_attempt(tenant, fe_id, "root", output={"new": 1}, status="completed")
    check(fe_id, "correction of root, no execution")
    assert tenant.client.post(f"/flow-executions/{fe_id}/execute?only=stale").status_code == 202
    check(fe_id, "re-execution of the stale tasks")

    put_attempt(tenant, fe_id, "é", "?execute_flow=true", output={"é": 2}, status="completed")
    check(fe_id, "correction of é with execution")

    put_attempt(tenant, fe_id, "x.y", "?execute_flow=true", output={"me": "x.y"})
    check(fe_id, "correction that early cutoff may reuse")

    for name in ("q'j$[0]", "😀", 'a"b', "back\\slash", "é"):
        response = tenant.client.post(
            "/task-outputs",
            {
                "flow_execution_id": fe_id,
                "organization_id": str(tenant.org.id),
                "task_name": name,
                "summary": {"posted": name},
                "status": "failed",
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        check(fe_id, f"POST /task-outputs {name!r}")
        posted = response.json()
        posted["status"] = "completed"
        posted["summary"] = {"put": name}
        response = tenant.client.put(f"/task-outputs/{posted['id']}", posted, format="json")
        assert response.status_code == 200, response.json()
        check(fe_id, f"PUT /task-outputs {name!r}")
    assert tenant.client.delete(f"/task-outputs/{posted['id']}").status_code == 204
    check(fe_id, "DELETE /task-outputs")

    put_attempt(tenant, fe_id, "x.y", status="stale")
    check(fe_id, "a person marks x.y stale")
    assert tenant.client.post(f"/flow-executions/{fe_id}/execute?task=é").status_code == 202
    check(fe_id, "re-execution of é and its dependents")
    assert tenant.client.post(f"/flow-executions/{fe_id}/execute").status_code == 202
    check(fe_id, "whole re-execution")
    put_attempt(tenant, fe_id, "root", output={"again": 3}, status="completed")
    check(fe_id, "second correction of root")
