"""One organization's key never reads, changes, lists or writes into another organization's rows.

Another organization's object is answered exactly like a missing one (404, same error body), so
a key cannot even learn that an id exists elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.db.models import Model
from django.utils import timezone

from executions.models import FlowExecution, TaskExecution
from flows.models import Flow, FlowVersion
from outputs.models import TaskOutput
from tests.helpers.tenants import Tenant, random_uuid

TENANT_MODELS: list[type[Model]] = [Flow, FlowVersion, FlowExecution, TaskExecution, TaskOutput]

CHANGED_DEFINITION = """\
name: hijacked
tasks:
  - name: only
    type: transform
"""


@dataclass
class Objects:
    """One organization's rows, one of each kind, plus a soft-deleted one of each kind."""

    flow: Flow
    flow_execution: FlowExecution
    task_execution: TaskExecution
    task_output: TaskOutput
    deleted_flow: Flow
    deleted_flow_execution: FlowExecution
    deleted_task_execution: TaskExecution
    deleted_task_output: TaskOutput

    def ids(self) -> set[str]:
        return {str(getattr(self, name).pk) for name in self.__dataclass_fields__}


def populate(tenant: Tenant, prefix: str) -> Objects:
    flow = tenant.flow(name=f"{prefix}-flow")
    flow_execution = tenant.flow_execution(flow, input={"document": prefix})
    deleted_flow = tenant.flow(name=f"{prefix}-deleted-flow")
    deleted_flow_execution = tenant.flow_execution(flow)
    FlowExecution.objects.filter(pk=deleted_flow_execution.pk).update(status="deleted")
    Flow.objects.filter(pk=deleted_flow.pk).update(deleted_at=timezone.now())
    return Objects(
        flow=flow,
        flow_execution=flow_execution,
        task_execution=tenant.task_execution(flow_execution, status="completed"),
        task_output=tenant.task_output(flow_execution, status="completed"),
        deleted_flow=deleted_flow,
        deleted_flow_execution=deleted_flow_execution,
        deleted_task_execution=tenant.task_execution(
            flow_execution, task_name="review", status="deleted"
        ),
        deleted_task_output=tenant.task_output(
            flow_execution, task_name="review", status="deleted"
        ),
    )


@pytest.fixture
def mine(tenant: Tenant) -> Objects:
    return populate(tenant, "acme")


@pytest.fixture
def theirs(other_tenant: Tenant) -> Objects:
    return populate(other_tenant, "globex")


def snapshot(tenant: Tenant) -> dict[str, list[dict[str, Any]]]:
    """Every column of every row the organization owns, as stored."""
    return {
        model.__name__: list(model.objects.filter(organization=tenant.org).order_by("pk").values())
        for model in TENANT_MODELS
    }


def update_body(kind: str, obj: Model) -> dict[str, Any]:
    """A body that would be a valid change of `obj` if the caller owned it."""
    if kind == "flow":
        return {"name": "hijacked", "description": "mine now", "definition": CHANGED_DEFINITION}
    if kind == "flow_execution":
        return {"status": "failed"}
    if kind == "task_execution":
        return {
            "id": str(obj.pk),
            "flow_execution_id": str(obj.flow_execution_id),
            "organization_id": str(obj.organization_id),
            "task_name": obj.task_name,
            "task_execution_idx": obj.task_execution_idx,
            "status": "stale",
            "output": {"hijacked": True},
        }
    if kind == "task_output":
        return {
            "id": str(obj.pk),
            "flow_execution_id": str(obj.flow_execution_id),
            "organization_id": str(obj.organization_id),
            "task_name": obj.task_name,
            "summary": {"hijacked": True},
            "status": "stale",
        }
    return {}


# kind → (path template, the object it names, methods the route supports)
ROUTES: dict[str, tuple[str, str, set[str]]] = {
    "flow": ("/flows/{id}", "flow", {"get", "put", "patch", "delete"}),
    "flow_execution": ("/flow-executions/{id}", "flow_execution", {"get", "delete"}),
    "task_execution": (
        "/task-executions/{id}",
        "task_execution",
        {"get", "put", "patch", "delete"},
    ),
    "task_output": ("/task-outputs/{id}", "task_output", {"get", "put", "patch", "delete"}),
    "flow_versions": ("/flows/{id}/versions", "flow", {"get"}),
}


def send(client, method: str, url: str, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    if method in {"put", "patch"}:
        return getattr(client, method)(url, body, format="json")
    return getattr(client, method)(url)


@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
@pytest.mark.parametrize("kind", list(ROUTES))
def test_other_organizations_object_is_answered_like_a_missing_one_and_left_unchanged(
    tenant: Tenant,
    other_tenant: Tenant,
    mine: Objects,
    theirs: Objects,
    kind: str,
    method: str,
    slash: str,
) -> None:
    template, attribute, supported = ROUTES[kind]
    target = getattr(theirs, attribute)
    body = update_body(kind, target)
    before = snapshot(other_tenant)

    foreign = send(tenant.client, method, template.format(id=target.pk) + slash, body)
    missing = send(tenant.client, method, template.format(id=random_uuid()) + slash, body)

    expected_status = 404 if method in supported else 405
    assert foreign.status_code == expected_status, foreign.content
    assert missing.status_code == expected_status, missing.content
    assert foreign.json()["error"] == missing.json()["error"]
    assert set(foreign.json()) == set(missing.json())
    assert snapshot(other_tenant) == before


@pytest.mark.parametrize("kind", ["flow", "flow_execution", "task_execution", "task_output"])
def test_other_organizations_soft_deleted_object_is_a_404_too(
    tenant: Tenant, theirs: Objects, kind: str
) -> None:
    template = ROUTES[kind][0]
    target = getattr(theirs, f"deleted_{kind}")

    response = tenant.client.get(template.format(id=target.pk))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_owner_still_reaches_its_objects_after_a_foreign_attempt(
    tenant: Tenant, other_tenant: Tenant, theirs: Objects, method: str
) -> None:
    url = f"/task-executions/{theirs.task_execution.pk}"
    send(tenant.client, method, url, update_body("task_execution", theirs.task_execution))

    response = other_tenant.client.get(url)

    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert response.json()["organization_id"] == str(other_tenant.org.id)


LIST_QUERIES: dict[str, list[dict[str, str]]] = {
    "/flows": [
        {},
        {"include_deleted": "true"},
        {"name": "globex-flow"},
        {"name": "globex-deleted-flow", "include_deleted": "true"},
    ],
    "/flow-executions": [
        {},
        {"include_deleted": "true"},
        {"status": "deleted"},
        {"status": "queued,deleted,completed"},
        {"flow_id": "{theirs.flow}"},
        {"flow_id": "{theirs.flow}", "include_deleted": "true"},
        {"modified_by": "system"},
    ],
    "/task-executions": [
        {},
        {"include_deleted": "true"},
        {"status": "deleted"},
        {"status": "completed,deleted"},
        {"flow_execution_id": "{theirs.flow_execution}"},
        {"flow_execution_id": "{theirs.flow_execution}", "include_deleted": "true"},
        {"flow_execution_id": "{theirs.flow_execution}", "status": "deleted"},
        {"task_name": "extract", "include_deleted": "true"},
    ],
    "/task-outputs": [
        {},
        {"include_deleted": "true"},
        {"status": "deleted"},
        {"status": "completed,deleted"},
        {"flow_execution_id": "{theirs.flow_execution}"},
        {"flow_execution_id": "{theirs.flow_execution}", "include_deleted": "true"},
        {"task_name": "review", "status": "deleted"},
    ],
}


def resolve(query: dict[str, str], theirs: Objects) -> dict[str, str]:
    names = {"{theirs.flow}": theirs.flow.pk, "{theirs.flow_execution}": theirs.flow_execution.pk}
    return {key: str(names.get(value, value)) for key, value in query.items()} | {"limit": "1000"}


@pytest.mark.parametrize(
    ("path", "query"),
    [(path, query) for path, queries in LIST_QUERIES.items() for query in queries],
)
def test_lists_never_contain_other_organizations_rows(
    tenant: Tenant, mine: Objects, theirs: Objects, path: str, query: dict[str, str]
) -> None:
    response = tenant.client.get(path, resolve(query, theirs))

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert response.json()["count"] == len(results)
    assert not {row["id"] for row in results} & theirs.ids()
    assert {row["organization_id"] for row in results} <= {str(tenant.org.id)}


@pytest.mark.parametrize(
    "path", ["/flow-executions", "/task-executions", "/task-outputs", "/flows"]
)
def test_list_with_everything_included_shows_exactly_own_rows(
    tenant: Tenant, mine: Objects, theirs: Objects, path: str
) -> None:
    response = tenant.client.get(path, {"include_deleted": "true", "limit": "1000"})

    model = {
        "/flows": Flow,
        "/flow-executions": FlowExecution,
        "/task-executions": TaskExecution,
        "/task-outputs": TaskOutput,
    }[path]
    own = model.objects.filter(organization=tenant.org).values_list("pk", flat=True)
    assert response.status_code == 200
    assert {row["id"] for row in response.json()["results"]} == {str(pk) for pk in own}


def test_list_filtered_by_other_organizations_flow_execution_is_empty(
    tenant: Tenant, mine: Objects, theirs: Objects
) -> None:
    for path in ("/task-executions", "/task-outputs"):
        response = tenant.client.get(
            path, {"flow_execution_id": str(theirs.flow_execution.pk), "include_deleted": "true"}
        )

        assert response.status_code == 200
        assert response.json()["count"] == 0
        assert response.json()["results"] == []


def test_versions_of_other_organizations_flow_are_a_404(tenant: Tenant, theirs: Objects) -> None:
    response = tenant.client.get(f"/flows/{theirs.flow.pk}/versions")

    assert response.status_code == 404
    assert FlowVersion.objects.filter(flow=theirs.flow).count() == 1


def create_body(kind: str, flow_execution_id: Any, organization_id: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flow_execution_id": str(flow_execution_id),
        "organization_id": str(organization_id),
        "task_name": "extract",
        "status": "completed",
        "output": {"pages": 3},
    }
    if kind == "/task-outputs":
        body["summary"] = {"pages": 3}
    return body


@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize(
    "naming",
    [
        "their_flow_execution_my_organization",
        "their_flow_execution_their_organization",
        "my_flow_execution_their_organization",
    ],
)
@pytest.mark.parametrize("path", ["/task-executions", "/task-outputs"])
def test_create_naming_another_organization_is_a_404_and_writes_nothing(
    tenant: Tenant,
    other_tenant: Tenant,
    mine: Objects,
    theirs: Objects,
    path: str,
    naming: str,
    slash: str,
) -> None:
    flow_execution_id, organization_id = {
        "their_flow_execution_my_organization": (theirs.flow_execution.pk, tenant.org.id),
        "their_flow_execution_their_organization": (theirs.flow_execution.pk, other_tenant.org.id),
        "my_flow_execution_their_organization": (mine.flow_execution.pk, other_tenant.org.id),
    }[naming]
    model = TaskExecution if path == "/task-executions" else TaskOutput
    rows_before = model.objects.count()
    theirs_before = snapshot(other_tenant)
    mine_before = snapshot(tenant)

    response = tenant.client.post(
        path + slash, create_body(path, flow_execution_id, organization_id), format="json"
    )
    missing = tenant.client.post(
        path + slash, create_body(path, random_uuid(), tenant.org.id), format="json"
    )

    assert response.status_code == 404, response.content
    assert response.json()["error"] == missing.json()["error"]
    assert model.objects.count() == rows_before
    assert snapshot(other_tenant) == theirs_before
    assert snapshot(tenant) == mine_before


@pytest.mark.parametrize("path", ["/task-executions", "/task-outputs"])
def test_create_in_own_flow_execution_is_written_to_own_organization(
    tenant: Tenant, mine: Objects, path: str
) -> None:
    response = tenant.client.post(
        path, create_body(path, mine.flow_execution.pk, tenant.org.id), format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["organization_id"] == str(tenant.org.id)
    model = TaskExecution if path == "/task-executions" else TaskOutput
    assert model.objects.get(pk=response.json()["id"]).organization_id == tenant.org.id


def test_flow_names_are_scoped_to_the_organization(tenant: Tenant, theirs: Objects) -> None:
    response = tenant.client.post(
        "/flows", {"name": theirs.flow.name, "definition": CHANGED_DEFINITION}, format="json"
    )

    assert response.status_code == 201, response.content
    assert Flow.objects.get(pk=theirs.flow.pk).organization_id != tenant.org.id
