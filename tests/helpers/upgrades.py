"""Flows for the upgrade tests: a small chain of transforms whose middle task's config an
upgrade changes, executions of it started through the API, and new versions of it."""

from __future__ import annotations

from typing import Any

import yaml

from flows.models import Flow
from flows.services import update_flow
from tests.helpers.flows import create_flow


def chain(b_expression: str = "v", **extra: Any) -> list[dict[str, Any]]:
    """a → b → c → d, and a → side."""
    tasks = [
        {"name": "a", "type": "transform", "input": {"v": "${{ flow.input.v }}"}},
        {
            "name": "b",
            "type": "transform",
            "input": {"v": "${{ tasks.a.output.v }}"},
            "config": {"expression": b_expression},
        },
        {"name": "c", "type": "transform", "input": {"b": "${{ tasks.b.output }}"}},
        {"name": "d", "type": "transform", "input": {"c": "${{ tasks.c.output }}"}},
        {"name": "side", "type": "transform", "input": {"a": "${{ tasks.a.output }}"}},
    ]
    for task in tasks:
        task.update(extra.get(task["name"], {}))
    return tasks


def start(tenant: Any, tasks: list[dict], flow_input: Any = None) -> tuple[str, str]:
    flow_id = create_flow(tenant, {"tasks": tasks}, name=f"chain-{len(tasks)}")
    response = tenant.client.post(
        "/flow-executions",
        {"flow_id": flow_id, "input": {"v": 3} if flow_input is None else flow_input},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return flow_id, response.json()["id"]


def new_version(flow_id: str, tasks: list[dict]) -> int:
    flow = update_flow(
        Flow.objects.get(pk=flow_id), actor="t", definition=yaml.safe_dump({"tasks": tasks})
    )
    return flow.current_version.version
