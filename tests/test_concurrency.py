"""Concurrent writers on PostgreSQL: row locks and constraints decide, never a lost update."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from executions.models import TaskExecution

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]


def in_parallel(count: int, request: Callable[[APIClient], int], secret: str) -> Counter:
    """Run `request` in `count` threads released at the same moment; count the status codes."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            barrier.wait(timeout=10)
            status = request(client)
            with lock:
                statuses.append(status)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return Counter(statuses)


def test_concurrent_creates_of_one_attempt_give_one_201_and_409s(tenant):
    fe = tenant.flow_execution()
    body = {
        "flow_execution_id": str(fe.id),
        "organization_id": str(tenant.org.id),
        "task_name": "extract",
        "task_execution_idx": 0,
    }
    statuses = in_parallel(
        8,
        lambda client: client.post("/task-executions", body, format="json").status_code,
        tenant.secret,
    )
    assert statuses == Counter({201: 1, 409: 7})
    assert TaskExecution.objects.filter(flow_execution=fe, task_name="extract").count() == 1


def test_concurrent_creates_without_idx_get_distinct_indexes(tenant):
    fe = tenant.flow_execution()
    body = {
        "flow_execution_id": str(fe.id),
        "organization_id": str(tenant.org.id),
        "task_name": "extract",
        "status": "completed",  # recorded attempts of work done elsewhere
    }
    statuses = in_parallel(
        8,
        lambda client: client.post("/task-executions", body, format="json").status_code,
        tenant.secret,
    )
    assert statuses == Counter({201: 8})
    indexes = sorted(
        fe.task_executions.filter(task_name="extract").values_list("task_execution_idx", flat=True)
    )
    assert indexes == list(range(8))


def test_concurrent_puts_with_the_same_updated_at_give_one_200_and_409s(tenant):
    te = tenant.task_execution(status="completed", output={"v": 0})
    read = tenant.client.get(f"/task-executions/{te.id}").json()

    def correct(client: APIClient) -> int:
        body = {**read, "output": {"v": threading.get_ident()}}
        return client.put(f"/task-executions/{te.id}", body, format="json").status_code

    statuses = in_parallel(20, correct, tenant.secret)
    assert statuses == Counter({200: 1, 409: 19})
    te.refresh_from_db()
    assert te.output != {"v": 0}


def test_two_corrections_of_one_flow_execution_at_once_both_apply_and_stay_fresh(tenant):
    import json

    from executions.models import FlowExecution
    from executions.selectors import freshness_violations, is_settled
    from flows.services import create_flow

    tasks = [{"name": "root", "type": "transform", "input": "${{ flow.input }}"}]
    tasks += [
        {"name": f"x{i}", "type": "transform", "input": {"i": i, "r": "${{ tasks.root.output }}"}}
        for i in range(4)
    ]
    tasks.append(
        {
            "name": "join",
            "type": "transform",
            "input": {f"x{i}": f"${{{{ tasks.x{i}.output }}}}" for i in range(4)},
        }
    )
    flow = create_flow(tenant.org, name="fan", definition=json.dumps({"tasks": tasks}), actor="t")
    fe_id = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id), "input": 0}, format="json"
    ).json()["id"]
    targets = {
        name: tenant.client.get(
            f"/task-executions?flow_execution_id={fe_id}&task_name={name}"
        ).json()["results"][0]
        for name in ("x1", "x3")
    }
    turn = iter(["x1", "x3"])
    lock = threading.Lock()

    def correct(client: APIClient) -> int:
        with lock:
            name = next(turn)
        body = {**targets[name], "output": {"fixed": name}}
        url = f"/task-executions/{body['id']}?execute_flow=true"
        return client.put(url, body, format="json").status_code

    assert in_parallel(2, correct, tenant.secret) == Counter({200: 2})
    flow_execution = FlowExecution.objects.get(pk=fe_id)
    assert is_settled(flow_execution)
    assert flow_execution.status == "completed"
    assert freshness_violations(flow_execution) == []
    join = TaskExecution.objects.filter(flow_execution_id=fe_id, task_name="join").latest(
        "task_execution_idx"
    )
    assert join.status == "completed"
    assert (join.input["x1"], join.input["x3"]) == ({"fixed": "x1"}, {"fixed": "x3"})
    pairs = TaskExecution.objects.filter(flow_execution_id=fe_id).values_list(
        "task_name", "task_execution_idx"
    )
    assert len(pairs) == len(set(pairs))
