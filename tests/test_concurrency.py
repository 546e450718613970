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
    assert TaskExecution.objects.filter(flow_execution=fe).count() == 1


def test_concurrent_creates_without_idx_get_distinct_indexes(tenant):
    fe = tenant.flow_execution()
    body = {
        "flow_execution_id": str(fe.id),
        "organization_id": str(tenant.org.id),
        "task_name": "a",
    }
    statuses = in_parallel(
        8,
        lambda client: client.post("/task-executions", body, format="json").status_code,
        tenant.secret,
    )
    assert statuses == Counter({201: 8})
    indexes = sorted(fe.task_executions.values_list("task_execution_idx", flat=True))
    assert indexes == list(range(8))


def test_concurrent_puts_with_the_same_updated_at_give_one_200_and_409s(tenant):
    te = tenant.task_execution(status="completed", output={"v": 0})
    read = tenant.client.get(f"/task-executions/{te.id}").json()

    def correct(client: APIClient) -> int:
        body = {**read, "output": {"v": threading.get_ident()}}
        return client.put(f"/task-executions/{te.id}", body, format="json").status_code

    statuses = in_parallel(12, correct, tenant.secret)
    assert statuses == Counter({200: 1, 409: 11})
    te.refresh_from_db()
    assert te.output != {"v": 0}
