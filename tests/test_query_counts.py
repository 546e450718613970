"""Every list endpoint runs a constant number of SQL queries, whatever the number of rows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.models import FlowExecution, TaskExecution
from flows.models import Flow, FlowVersion
from outputs.models import TaskOutput
from tests.helpers.tenants import DEFINITION, Tenant

ROWS = 100


def add_flows(tenant: Tenant, count: int) -> str:
    flows = Flow.objects.bulk_create(
        Flow(organization=tenant.org, name=f"bulk-{i}", modified_by="system") for i in range(count)
    )
    versions = FlowVersion.objects.bulk_create(
        FlowVersion(
            organization=tenant.org,
            flow=flow,
            version=1,
            definition=DEFINITION,
            parsed={"name": flow.name},
        )
        for flow in flows
    )
    for flow, version in zip(flows, versions, strict=True):
        flow.current_version = version
    Flow.objects.bulk_update(flows, ["current_version"])
    return "/flows"


def add_flow_versions(tenant: Tenant, count: int) -> str:
    flow = Flow.objects.get(organization=tenant.org)
    start = flow.current_version.version + 1
    FlowVersion.objects.bulk_create(
        FlowVersion(
            organization=tenant.org,
            flow=flow,
            version=number,
            definition=f"# version {number}\n{DEFINITION}",
            parsed={"name": "document-review"},
        )
        for number in range(start, start + count)
    )
    return f"/flows/{flow.pk}/versions"


def add_flow_executions(tenant: Tenant, count: int) -> str:
    flow = Flow.objects.get(organization=tenant.org)
    FlowExecution.objects.bulk_create(
        FlowExecution(
            organization=tenant.org,
            flow=flow,
            flow_version=flow.current_version,
            input={"n": i},
        )
        for i in range(count)
    )
    return "/flow-executions"


def add_task_executions(tenant: Tenant, count: int) -> str:
    flow_execution = FlowExecution.objects.get(organization=tenant.org)
    TaskExecution.objects.bulk_create(
        TaskExecution(
            organization=tenant.org,
            flow_execution=flow_execution,
            task_name=f"task-{i}",
            status="completed",
            output={"n": i},
        )
        for i in range(count)
    )
    return "/task-executions"


def add_task_outputs(tenant: Tenant, count: int) -> str:
    flow_execution = FlowExecution.objects.get(organization=tenant.org)
    TaskOutput.objects.bulk_create(
        TaskOutput(
            organization=tenant.org,
            flow_execution=flow_execution,
            task_name=f"task-{i}",
            summary={"pages": i},
            status="completed",
            flow_version=1,
        )
        for i in range(count)
    )
    return "/task-outputs"


def first_flow(tenant: Tenant) -> None:
    tenant.flow()


def first_flow_execution(tenant: Tenant) -> None:
    tenant.flow_execution()


def first_task_execution(tenant: Tenant) -> None:
    tenant.task_execution(status="completed")


def first_task_output(tenant: Tenant) -> None:
    tenant.task_output(status="completed")


# endpoint → (create the first row of the listed kind, add more rows of that kind in bulk)
ENDPOINTS: dict[str, tuple[Callable[[Tenant], None], Callable[[Tenant, int], str]]] = {
    "flows": (first_flow, add_flows),
    "flow-versions": (first_flow, add_flow_versions),
    "flow-executions": (first_flow_execution, add_flow_executions),
    "task-executions": (first_task_execution, add_task_executions),
    "task-outputs": (first_task_output, add_task_outputs),
}


def count_queries(tenant: Tenant, path: str, query: dict[str, str]) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as context:
        response = tenant.client.get(path, query)
    assert response.status_code == 200, response.content
    return len(response.json()["results"]), [q["sql"] for q in context.captured_queries]


@pytest.mark.parametrize(
    "query",
    [{"limit": "1000"}, {"limit": "1000", "ordering": "-created_at"}],
    ids=["default-order", "ordered"],
)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_list_runs_the_same_number_of_queries_for_one_row_and_a_hundred(
    tenant: Tenant, endpoint: str, query: dict[str, str], django_assert_num_queries
) -> None:
    create_first, add_rows = ENDPOINTS[endpoint]
    create_first(tenant)
    path = add_rows(tenant, 0)
    if endpoint == "flow-versions":
        query = {"limit": query["limit"]}  # versions are always listed oldest first
    tenant.client.get(path)  # the key's first use also records last_used_at; keep it out

    rows, queries_for_one = count_queries(tenant, path, query)
    assert rows == 1

    add_rows(tenant, ROWS - 1)
    with django_assert_num_queries(len(queries_for_one)):
        response = tenant.client.get(path, query)

    assert response.status_code == 200
    assert response.json()["count"] == ROWS
    assert len(response.json()["results"]) == ROWS


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/task-executions", {"status": "completed,failed", "modified_by": "system"}),
        ("/task-executions", {"include_deleted": "true", "created_at_after": "2000-01-01T00:00Z"}),
        ("/task-outputs", {"status": "completed", "include_deleted": "true"}),
    ],
)
def test_filtered_list_runs_the_same_number_of_queries_for_one_row_and_a_hundred(
    tenant: Tenant, path: str, query: dict[str, str], django_assert_num_queries
) -> None:
    create_first, add_rows = ENDPOINTS[path.strip("/")]
    create_first(tenant)
    tenant.client.get(path)
    rows, queries_for_one = count_queries(tenant, path, query | {"limit": "1000"})
    assert rows == 1

    add_rows(tenant, ROWS - 1)

    with django_assert_num_queries(len(queries_for_one)):
        response = tenant.client.get(path, query | {"limit": "1000"})
    assert response.status_code == 200
    assert len(response.json()["results"]) == ROWS
