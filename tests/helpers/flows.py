"""Flows created and run through the API (the embedded backend runs their jobs before the
request answers), and reads of what ran."""

from __future__ import annotations

import json
import uuid
from typing import Any

import yaml

from executions.models import FlowExecution, TaskExecution
from flows.services import create_flow as create_flow_in_service


def create_flow(tenant: Any, definition: dict | str, name: str = "flow") -> str:
    """POST /flows; the new flow's id."""
    text = definition if isinstance(definition, str) else yaml.safe_dump(definition)
    response = tenant.client.post("/flows", {"name": name, "definition": text}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def start_execution(tenant: Any, tasks: list[dict], flow_input: Any = None) -> str:
    """A new flow of `tasks`, and an execution of it started through the API; its id."""
    flow_id = create_flow(tenant, {"tasks": tasks}, name=f"f-{uuid.uuid4().hex[:8]}")
    response = tenant.client.post(
        "/flow-executions", {"flow_id": flow_id, "input": flow_input}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def attempts(flow_execution_id: str) -> dict[str, list[TaskExecution]]:
    """task → its attempts, in task_execution_idx order."""
    by_task: dict[str, list[TaskExecution]] = {}
    for attempt in TaskExecution.objects.filter(flow_execution_id=flow_execution_id).order_by(
        "task_name", "task_execution_idx"
    ):
        by_task.setdefault(attempt.task_name, []).append(attempt)
    return by_task


def latest(flow_execution_id: str, task: str) -> TaskExecution:
    return attempts(flow_execution_id)[task][-1]


def get_json(tenant: Any, path: str) -> dict:
    """GET `path` as the tenant; it must answer 200."""
    response = tenant.client.get(path)
    assert response.status_code == 200, response.content
    return response.json()


def extract_chain_definition(extract_retries: int = 0, side: bool = True) -> str:
    """extract → count → report, and `side`, which nothing upstream of it can make stale."""
    return json.dumps(
        {
            "tasks": [
                {
                    "name": "extract",
                    "type": "transform",
                    "input": {"pages": "${{ flow.input.pages }}"},
                    "retries": extract_retries,
                },
                {
                    "name": "count",
                    "type": "transform",
                    "input": {"pages": "${{ tasks.extract.output.pages }}"},
                },
                {
                    "name": "report",
                    "type": "transform",
                    "input": {"count": "${{ tasks.count.output }}"},
                },
                {"name": "side", "type": "transform", "input": {"x": "${{ flow.input.pages }}"}},
            ][: 4 if side else 3]
        }
    )


def start_extract_chain(tenant: Any, extract_retries: int = 0, side: bool = True) -> FlowExecution:
    """An execution of `extract_chain_definition`, started through the API with 1 page."""
    flow = create_flow_in_service(
        tenant.org,
        name=f"chain-{uuid.uuid4().hex[:8]}",
        definition=extract_chain_definition(extract_retries, side),
        actor="t",
    )
    response = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id), "input": {"pages": 1}}, format="json"
    )
    assert response.status_code == 201, response.json()
    return FlowExecution.objects.get(pk=response.json()["id"])
