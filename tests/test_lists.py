"""List endpoints: pagination, ordering, filters, soft-delete visibility; every path with or
without a trailing slash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import Model

from executions.models import FlowExecution, TaskExecution
from flows.models import Flow, FlowVersion
from outputs.models import TaskOutput
from tests.helpers.tenants import DEFINITION, Tenant

LIST_MODELS: dict[str, type[Model]] = {
    "/flows": Flow,
    "/flow-executions": FlowExecution,
    "/task-executions": TaskExecution,
    "/task-outputs": TaskOutput,
}
ORDERABLE = list(LIST_MODELS)
PAGINATED = [*ORDERABLE, "versions"]

BASE_TIME = datetime(2030, 1, 1, tzinfo=UTC)


def at(hour: int) -> datetime:
    return BASE_TIME + timedelta(hours=hour)


def iso(hour: int) -> str:
    return at(hour).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_rows(tenant: Tenant, endpoint: str, count: int) -> tuple[str, list[str]]:
    """`count` rows listed by `endpoint`, in creation order; returns (path, ids)."""
    if endpoint == "/flows":
        return endpoint, [str(tenant.flow(name=f"flow-{i}").pk) for i in range(count)]
    if endpoint == "versions":
        flow = tenant.flow()
        added = [
            FlowVersion.objects.create(
                organization=tenant.org,
                flow=flow,
                version=number,
                definition=f"# v{number}\n{DEFINITION}",
                parsed={"name": "document-review"},
            )
            for number in range(2, count + 1)
        ]
        return f"/flows/{flow.pk}/versions", [str(v.pk) for v in [flow.current_version, *added]]
    if endpoint == "/flow-executions":
        flow = tenant.flow()
        return endpoint, [str(tenant.flow_execution(flow).pk) for _ in range(count)]
    flow_execution = tenant.flow_execution()
    factory = tenant.task_execution if endpoint == "/task-executions" else tenant.task_output
    return endpoint, [str(factory(flow_execution, task_name=f"task-{i}").pk) for i in range(count)]


def set_created_at(endpoint: str, ids: list[str], hours: list[int]) -> None:
    for pk, hour in zip(ids, hours, strict=True):
        LIST_MODELS[endpoint].objects.filter(pk=pk).update(created_at=at(hour))


def listed_ids(tenant: Tenant, path: str, query: dict[str, Any] | None = None) -> list[str]:
    response = tenant.client.get(path, {"limit": "1000", **(query or {})})
    assert response.status_code == 200, response.content
    assert response.json()["count"] == len(response.json()["results"])
    return [row["id"] for row in response.json()["results"]]


def assert_query_error(response, parameter: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert body["request_id"] == response["X-Request-ID"]
    assert ["query", parameter] in [item["loc"] for item in body["detail"]], body["detail"]


# --- pagination -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", PAGINATED)
def test_list_answers_count_next_previous_results(tenant: Tenant, endpoint: str) -> None:
    path, ids = make_rows(tenant, endpoint, 3)

    response = tenant.client.get(path)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert body["next"] is None
    assert body["previous"] is None
    assert [row["id"] for row in body["results"]] == ids


@pytest.mark.parametrize("endpoint", PAGINATED)
def test_following_next_links_returns_every_row_once_in_order(
    tenant: Tenant, endpoint: str
) -> None:
    path, ids = make_rows(tenant, endpoint, 5)
    seen: list[str] = []
    url: str | None = f"{path}?limit=2"
    pages = 0

    while url:
        body = tenant.client.get(url).json()
        assert body["count"] == 5
        assert len(body["results"]) <= 2
        seen += [row["id"] for row in body["results"]]
        assert (body["previous"] is None) == (pages == 0)
        url = body["next"]
        pages += 1

    assert pages == 3
    assert seen == ids


@pytest.mark.parametrize("endpoint", PAGINATED)
def test_offset_skips_rows(tenant: Tenant, endpoint: str) -> None:
    path, ids = make_rows(tenant, endpoint, 4)

    response = tenant.client.get(path, {"limit": "2", "offset": "1"})

    assert [row["id"] for row in response.json()["results"]] == ids[1:3]
    assert response.json()["count"] == 4


@pytest.mark.parametrize("endpoint", PAGINATED)
def test_offset_past_the_end_is_an_empty_page(tenant: Tenant, endpoint: str) -> None:
    path, _ = make_rows(tenant, endpoint, 2)

    response = tenant.client.get(path, {"offset": "10"})

    assert response.status_code == 200
    assert response.json()["results"] == []
    assert response.json()["count"] == 2


@pytest.mark.parametrize("limit", ["1", "1000"])
@pytest.mark.parametrize("endpoint", PAGINATED)
def test_limit_from_1_to_1000_is_accepted(tenant: Tenant, endpoint: str, limit: str) -> None:
    path, _ = make_rows(tenant, endpoint, 2)

    response = tenant.client.get(path, {"limit": limit})

    assert response.status_code == 200
    assert len(response.json()["results"]) == min(2, int(limit))


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", "10000000000000000000"])
@pytest.mark.parametrize("endpoint", PAGINATED)
def test_limit_outside_1_to_1000_is_422(tenant: Tenant, endpoint: str, limit: str) -> None:
    path, _ = make_rows(tenant, endpoint, 1)

    assert_query_error(tenant.client.get(path, {"limit": limit}), "limit")


@pytest.mark.parametrize("offset", ["-1", "x"])
@pytest.mark.parametrize("endpoint", PAGINATED)
def test_invalid_offset_is_422(tenant: Tenant, endpoint: str, offset: str) -> None:
    path, _ = make_rows(tenant, endpoint, 1)

    assert_query_error(tenant.client.get(path, {"offset": offset}), "offset")


# --- ordering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ORDERABLE)
def test_default_order_is_created_at_then_id(tenant: Tenant, endpoint: str) -> None:
    path, ids = make_rows(tenant, endpoint, 6)
    hours = [5, 1, 3, 1, 3, 1]  # ties on purpose: id decides between them
    set_created_at(endpoint, ids, hours)

    expected = [pk for _, pk in sorted(zip(hours, ids, strict=True))]
    assert listed_ids(tenant, path) == expected


@pytest.mark.parametrize("endpoint", ORDERABLE)
def test_ordering_by_descending_created_at_breaks_ties_by_id(tenant: Tenant, endpoint: str) -> None:
    path, ids = make_rows(tenant, endpoint, 6)
    hours = [5, 1, 3, 1, 3, 1]
    set_created_at(endpoint, ids, hours)

    expected = [pk for _, pk in sorted(zip([-h for h in hours], ids, strict=True))]
    assert listed_ids(tenant, path, {"ordering": "-created_at"}) == expected


@pytest.mark.parametrize("ordering", ["created_at", "-created_at"])
@pytest.mark.parametrize("endpoint", ORDERABLE)
def test_pages_are_stable_when_every_sort_key_ties(
    tenant: Tenant, endpoint: str, ordering: str
) -> None:
    path, ids = make_rows(tenant, endpoint, 5)
    set_created_at(endpoint, ids, [0] * 5)

    pages = [
        tenant.client.get(path, {"limit": "1", "offset": str(i), "ordering": ordering}).json()
        for i in range(5)
    ]

    assert sorted(page["results"][0]["id"] for page in pages) == sorted(ids)


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("/flows", "name"),
        ("/flows", "-name"),
        ("/flows", "updated_at"),
        ("/flow-executions", "status"),
        ("/flow-executions", "-updated_at"),
        ("/task-executions", "task_name"),
        ("/task-executions", "-task_name"),
        ("/task-executions", "status"),
        ("/task-outputs", "task_name"),
        ("/task-outputs", "-status"),
    ],
)
def test_ordering_by_a_field_sorts_by_it(tenant: Tenant, endpoint: str, field: str) -> None:
    path, ids = make_rows(tenant, endpoint, 4)
    model = LIST_MODELS[endpoint]
    if endpoint in {"/flow-executions", "/task-executions", "/task-outputs"}:
        for pk, status in zip(ids, ["failed", "completed", "running", "completed"], strict=True):
            model.objects.filter(pk=pk).update(status=status)
    for pk, hour in zip(ids, [2, 0, 3, 1], strict=True):
        model.objects.filter(pk=pk).update(updated_at=at(hour))
    name = field.lstrip("-")
    rows = model.objects.filter(pk__in=ids).values("pk", name)
    ascending = sorted(rows, key=lambda row: (row[name], str(row["pk"])))
    if field.startswith("-"):
        ascending = sorted(rows, key=lambda row: str(row["pk"]))
        ascending = sorted(ascending, key=lambda row: row[name], reverse=True)
    expected = [str(row["pk"]) for row in ascending]

    assert listed_ids(tenant, path, {"ordering": field}) == expected


@pytest.mark.parametrize("ordering", ["nope", "-nope", "created_at,nope", "organization", "id"])
@pytest.mark.parametrize("endpoint", ORDERABLE)
def test_unknown_ordering_is_422(tenant: Tenant, endpoint: str, ordering: str) -> None:
    path, _ = make_rows(tenant, endpoint, 1)

    assert_query_error(tenant.client.get(path, {"ordering": ordering}), "ordering")


# --- filters ----------------------------------------------------------------------------------

# Task executions and task outputs share these rows: (flow execution #, task, idx, status,
# modified_by, created hour, updated hour).
RECORD_ROWS = [
    (0, "extract", 0, "completed", "system", 0, 4),
    (0, "review", 0, "failed", "alice", 1, 5),
    (0, "extract", 1, "running", "system", 2, 6),
    (0, "review", 1, "deleted", "alice", 3, 7),
    (1, "extract", 0, "completed", "bob", 1, 8),
    (1, "Extract", 0, "stale", "system", 4, 9),
]


@pytest.fixture
def records(tenant: Tenant) -> dict[str, Any]:
    """The rows above as task executions and as task outputs, plus the flow executions."""
    flow = tenant.flow()
    flow_executions = [tenant.flow_execution(flow), tenant.flow_execution(flow)]
    made: dict[str, list[str]] = {"/task-executions": [], "/task-outputs": []}
    for fe, task, idx, status, actor, created, updated in RECORD_ROWS:
        execution = tenant.task_execution(
            flow_executions[fe], task_name=task, task_execution_idx=idx, status=status
        )
        output = tenant.task_output(flow_executions[fe], task_name=task, status=status)
        for model, row in ((TaskExecution, execution), (TaskOutput, output)):
            model.objects.filter(pk=row.pk).update(
                modified_by=actor, created_at=at(created), updated_at=at(updated)
            )
        made["/task-executions"].append(str(execution.pk))
        made["/task-outputs"].append(str(output.pk))
    return {"ids": made, "flow_executions": [str(fe.pk) for fe in flow_executions]}


def visible(row: tuple[Any, ...]) -> bool:
    return row[3] != "deleted"


# (query, which RECORD_ROWS it must list); "{fe0}"/"{fe1}" stand for the flow execution ids.
RECORD_FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({}, visible),
    ({"flow_execution_id": "{fe0}"}, lambda r: r[0] == 0 and visible(r)),
    ({"flow_execution_id": "{fe1}"}, lambda r: r[0] == 1),
    ({"task_name": "extract"}, lambda r: r[1] == "extract"),
    ({"task_name": "Extract"}, lambda r: r[1] == "Extract"),
    ({"task_name": "extrac"}, lambda r: False),
    ({"status": "failed"}, lambda r: r[3] == "failed"),
    ({"status": ["completed", "failed"]}, lambda r: r[3] in {"completed", "failed"}),
    ({"status": "completed,failed"}, lambda r: r[3] in {"completed", "failed"}),
    ({"status": "completed,failed,stale"}, lambda r: r[3] in {"completed", "failed", "stale"}),
    ({"status": ["completed,running", "stale"]}, lambda r: r[3] not in {"failed", "deleted"}),
    ({"status": "deleted"}, lambda r: r[3] == "deleted"),
    ({"status": "completed,deleted"}, lambda r: r[3] in {"completed", "deleted"}),
    ({"include_deleted": "true"}, lambda r: True),
    ({"include_deleted": "false"}, visible),
    ({"include_deleted": "true", "status": "running"}, lambda r: r[3] == "running"),
    ({"created_at_after": iso(2)}, lambda r: r[5] >= 2 and visible(r)),
    ({"created_at_before": iso(1)}, lambda r: r[5] <= 1 and visible(r)),
    ({"created_at_after": iso(1), "created_at_before": iso(2)}, lambda r: 1 <= r[5] <= 2),
    ({"updated_at_after": iso(8)}, lambda r: r[6] >= 8),
    ({"updated_at_before": iso(5)}, lambda r: r[6] <= 5),
    ({"updated_at_after": iso(5), "updated_at_before": iso(7), "include_deleted": "true"},
     lambda r: 5 <= r[6] <= 7),
    ({"modified_by": "alice"}, lambda r: r[4] == "alice" and visible(r)),
    ({"modified_by": "alice", "include_deleted": "true"}, lambda r: r[4] == "alice"),
    ({"modified_by": "nobody"}, lambda r: False),
    (
        {"flow_execution_id": "{fe0}", "task_name": "extract", "status": "running,completed"},
        lambda r: r[0] == 0 and r[1] == "extract",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("query", "selects"), RECORD_FILTERS)
@pytest.mark.parametrize("endpoint", ["/task-executions", "/task-outputs"])
def test_record_list_filters(
    tenant: Tenant, records: dict[str, Any], endpoint: str, query: dict[str, Any], selects: Any
) -> None:
    fe0, fe1 = records["flow_executions"]
    query = {
        key: value.replace("{fe0}", fe0).replace("{fe1}", fe1) if isinstance(value, str) else value
        for key, value in query.items()
    }
    ids = records["ids"][endpoint]

    listed = listed_ids(tenant, endpoint, query)

    expected = [pk for pk, row in zip(ids, RECORD_ROWS, strict=True) if selects(row)]
    expected.sort(key=lambda pk: (RECORD_ROWS[ids.index(pk)][5], pk))
    assert listed == expected


def test_task_executions_filter_by_attempt_index(tenant: Tenant, records: dict[str, Any]) -> None:
    ids = records["ids"]["/task-executions"]

    listed = listed_ids(tenant, "/task-executions", {"task_execution_idx": "1"})

    assert listed == [ids[2]]


def test_task_outputs_filter_by_flow_version(tenant: Tenant, records: dict[str, Any]) -> None:
    assert len(listed_ids(tenant, "/task-outputs", {"flow_version": "1"})) == 5
    assert listed_ids(tenant, "/task-outputs", {"flow_version": "2"}) == []


@pytest.fixture
def flow_executions(tenant: Tenant) -> dict[str, Any]:
    first = tenant.flow(name="first")
    second = tenant.flow(name="second")
    rows = [
        (first, "queued", "system", 0),
        (first, "completed", "alice", 1),
        (second, "in_progress", "system", 2),
        (second, "deleted", "alice", 3),
    ]
    ids = []
    for flow, status, actor, hour in rows:
        execution = tenant.flow_execution(flow)
        FlowExecution.objects.filter(pk=execution.pk).update(
            status=status, modified_by=actor, created_at=at(hour), updated_at=at(hour + 10)
        )
        ids.append(str(execution.pk))
    return {"ids": ids, "first": str(first.pk), "second": str(second.pk)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [0, 1, 2]),
        ({"flow_id": "{first}"}, [0, 1]),
        ({"flow_id": "{second}"}, [2]),
        ({"flow_id": "{second}", "include_deleted": "true"}, [2, 3]),
        ({"status": "in_progress"}, [2]),
        ({"status": "queued,completed"}, [0, 1]),
        ({"status": ["queued", "in_progress"]}, [0, 2]),
        ({"status": "deleted"}, [3]),
        ({"include_deleted": "true"}, [0, 1, 2, 3]),
        ({"created_at_after": iso(1)}, [1, 2]),
        ({"created_at_before": iso(1)}, [0, 1]),
        ({"updated_at_after": iso(12), "include_deleted": "true"}, [2, 3]),
        ({"updated_at_before": iso(10)}, [0]),
        ({"modified_by": "alice"}, [1]),
    ],
)
def test_flow_execution_list_filters(
    tenant: Tenant, flow_executions: dict[str, Any], query: dict[str, Any], expected: list[int]
) -> None:
    if query.get("flow_id"):
        query = query | {"flow_id": flow_executions[query["flow_id"].strip("{}")]}

    listed = listed_ids(tenant, "/flow-executions", query)

    assert listed == [flow_executions["ids"][i] for i in expected]


@pytest.fixture
def flows(tenant: Tenant) -> list[str]:
    rows = [("alpha", "system", 0, None), ("beta", "alice", 1, None), ("gamma", "alice", 2, 3)]
    ids = []
    for name, actor, hour, deleted_hour in rows:
        flow = tenant.flow(name=name)
        Flow.objects.filter(pk=flow.pk).update(
            modified_by=actor,
            created_at=at(hour),
            updated_at=at(hour + 10),
            deleted_at=None if deleted_hour is None else at(deleted_hour),
        )
        ids.append(str(flow.pk))
    return ids


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [0, 1]),
        ({"include_deleted": "true"}, [0, 1, 2]),
        ({"include_deleted": "false"}, [0, 1]),
        ({"name": "beta"}, [1]),
        ({"name": "gamma"}, []),
        ({"name": "gamma", "include_deleted": "true"}, [2]),
        ({"created_at_after": iso(1)}, [1]),
        ({"created_at_before": iso(1)}, [0, 1]),
        ({"updated_at_after": iso(11), "include_deleted": "true"}, [1, 2]),
        ({"updated_at_before": iso(10)}, [0]),
        ({"modified_by": "alice", "include_deleted": "true"}, [1, 2]),
    ],
)
def test_flow_list_filters(
    tenant: Tenant, flows: list[str], query: dict[str, Any], expected: list[int]
) -> None:
    assert listed_ids(tenant, "/flows", query) == [flows[i] for i in expected]


INVALID_FILTERS: dict[str, list[tuple[str, str]]] = {
    "/task-executions": [
        ("flow_execution_id", "not-a-uuid"),
        ("status", "bogus"),
        ("status", "completed,bogus"),
        ("status", "in_progress"),  # a flow execution status, not a task execution one
        ("task_execution_idx", "abc"),
        ("created_at_after", "yesterday"),
        ("created_at_before", "2030-13-45"),
        ("updated_at_after", "nope"),
        ("updated_at_before", "nope"),
        ("include_deleted", "maybe"),
    ],
    "/task-outputs": [
        ("flow_execution_id", "123"),
        ("status", "done"),
        ("flow_version", "v1"),
        ("created_at_after", "yesterday"),
        ("created_at_before", "nope"),
        ("updated_at_after", "nope"),
        ("updated_at_before", "nope"),
        ("include_deleted", "maybe"),
    ],
    "/flow-executions": [
        ("flow_id", "not-a-uuid"),
        ("status", "bogus"),
        ("created_at_after", "nope"),
        ("updated_at_before", "nope"),
        ("include_deleted", "maybe"),
    ],
    "/flows": [
        ("created_at_after", "nope"),
        ("created_at_before", "nope"),
        ("updated_at_after", "nope"),
        ("updated_at_before", "nope"),
        ("include_deleted", "maybe"),
    ],
}


@pytest.mark.parametrize(
    ("endpoint", "parameter", "value"),
    [(endpoint, p, v) for endpoint, cases in INVALID_FILTERS.items() for p, v in cases],
)
def test_invalid_filter_value_is_422_naming_the_parameter(
    tenant: Tenant, endpoint: str, parameter: str, value: str
) -> None:
    response = tenant.client.get(endpoint, {parameter: value})

    assert_query_error(response, parameter)


# --- soft delete ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/flow-executions", "/task-executions", "/task-outputs"])
def test_deleted_record_is_hidden_unless_asked_for(tenant: Tenant, endpoint: str) -> None:
    path, ids = make_rows(tenant, endpoint, 3)

    response = tenant.client.delete(f"{path}/{ids[1]}")

    assert response.status_code == 204
    assert response.content == b""
    assert LIST_MODELS[endpoint].objects.get(pk=ids[1]).status == "deleted"
    assert listed_ids(tenant, path) == [ids[0], ids[2]]
    assert listed_ids(tenant, path, {"status": "deleted"}) == [ids[1]]
    assert listed_ids(tenant, path, {"include_deleted": "true"}) == ids
    detail = tenant.client.get(f"{path}/{ids[1]}")
    assert detail.status_code == 200
    assert detail.json()["status"] == "deleted"


@pytest.mark.parametrize("endpoint", ["/flow-executions", "/task-executions", "/task-outputs"])
def test_deleting_twice_keeps_the_record_deleted(tenant: Tenant, endpoint: str) -> None:
    path, ids = make_rows(tenant, endpoint, 1)

    assert tenant.client.delete(f"{path}/{ids[0]}").status_code == 204
    assert tenant.client.delete(f"{path}/{ids[0]}").status_code == 204

    assert LIST_MODELS[endpoint].objects.get(pk=ids[0]).status == "deleted"


def test_deleted_flow_is_hidden_unless_include_deleted(tenant: Tenant) -> None:
    path, ids = make_rows(tenant, "/flows", 3)

    response = tenant.client.delete(f"/flows/{ids[1]}")

    assert response.status_code == 204
    assert Flow.objects.get(pk=ids[1]).deleted_at is not None
    assert listed_ids(tenant, path) == [ids[0], ids[2]]
    assert listed_ids(tenant, path, {"include_deleted": "true"}) == ids


@pytest.mark.parametrize("endpoint", ["/task-executions", "/task-outputs"])
def test_soft_delete_keeps_the_row_and_its_data(tenant: Tenant, endpoint: str) -> None:
    path, ids = make_rows(tenant, endpoint, 1)
    model = LIST_MODELS[endpoint]
    model.objects.filter(pk=ids[0]).update(output={"kept": True})

    tenant.client.delete(f"{path}/{ids[0]}")

    row = model.objects.get(pk=ids[0])
    assert row.output == {"kept": True}
    assert row.modified_by == tenant.actor


# --- trailing slash ---------------------------------------------------------------------------


@pytest.fixture
def world(tenant: Tenant) -> dict[str, Any]:
    flow = tenant.flow()
    flow_execution = tenant.flow_execution(flow)
    return {
        "flow": flow,
        "flow_execution": flow_execution,
        "task_execution": tenant.task_execution(flow_execution),
        "task_output": tenant.task_output(flow_execution),
        "org": str(tenant.org.id),
    }


def task_execution_body(world: dict[str, Any]) -> dict[str, Any]:
    te = world["task_execution"]
    return {
        "id": str(te.pk),
        "flow_execution_id": str(te.flow_execution_id),
        "organization_id": world["org"],
        "task_name": te.task_name,
        "task_execution_idx": te.task_execution_idx,
        "status": "completed",
        "output": {"pages": 2},
    }


def task_output_body(world: dict[str, Any]) -> dict[str, Any]:
    to = world["task_output"]
    return {
        "id": str(to.pk),
        "flow_execution_id": str(to.flow_execution_id),
        "organization_id": world["org"],
        "task_name": to.task_name,
        "summary": {"pages": 2},
        "status": "completed",
    }


# (method, path template, body, expected status)
ROUTES: list[tuple[str, str, Any, int]] = [
    ("get", "/flows", None, 200),
    ("post", "/flows", lambda w: {"name": "created", "definition": DEFINITION}, 201),
    ("get", "/flows/{flow}", None, 200),
    ("put", "/flows/{flow}", lambda w: {"name": "renamed", "definition": DEFINITION}, 200),
    ("patch", "/flows/{flow}", lambda w: {"description": "patched"}, 200),
    ("delete", "/flows/{flow}", None, 204),
    ("get", "/flows/{flow}/versions", None, 200),
    ("get", "/flow-executions", None, 200),
    ("get", "/flow-executions/{flow_execution}", None, 200),
    ("delete", "/flow-executions/{flow_execution}", None, 204),
    ("get", "/task-executions", None, 200),
    (
        "post",
        "/task-executions",
        lambda w: {
            "flow_execution_id": str(w["flow_execution"].pk),
            "organization_id": w["org"],
            "task_name": "review",
        },
        201,
    ),
    ("get", "/task-executions/{task_execution}", None, 200),
    ("put", "/task-executions/{task_execution}", task_execution_body, 200),
    ("patch", "/task-executions/{task_execution}", lambda w: {"status": "stale"}, 200),
    ("delete", "/task-executions/{task_execution}", None, 204),
    ("get", "/task-outputs", None, 200),
    (
        "post",
        "/task-outputs",
        lambda w: {
            "flow_execution_id": str(w["flow_execution"].pk),
            "organization_id": w["org"],
            "task_name": "review",
            "summary": {"approved": True},
        },
        201,
    ),
    ("get", "/task-outputs/{task_output}", None, 200),
    ("put", "/task-outputs/{task_output}", task_output_body, 200),
    ("patch", "/task-outputs/{task_output}", lambda w: {"summary": {"pages": 3}}, 200),
    ("delete", "/task-outputs/{task_output}", None, 204),
]


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
@pytest.mark.parametrize(
    ("method", "template", "body", "expected"),
    ROUTES,
    ids=[f"{method}-{template}" for method, template, _, _ in ROUTES],
)
def test_every_route_answers_with_and_without_trailing_slash_never_redirecting(
    tenant: Tenant,
    world: dict[str, Any],
    method: str,
    template: str,
    body: Any,
    expected: int,
    slash: str,
) -> None:
    url = template.format(**{key: getattr(value, "pk", value) for key, value in world.items()})
    kwargs = {"data": body(world), "format": "json"} if body else {}

    response = getattr(tenant.client, method)(url + slash, **kwargs)

    assert response.status_code not in {301, 302, 303, 307, 308}
    assert response.status_code == expected, response.content
    assert "Location" not in response


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
def test_put_task_execution_with_and_without_slash_applies_the_change(
    tenant: Tenant, world: dict[str, Any], slash: str
) -> None:
    te = world["task_execution"]

    response = tenant.client.put(
        f"/task-executions/{te.pk}{slash}", task_execution_body(world), format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["output"] == {"pages": 2}
    stored = TaskExecution.objects.get(pk=te.pk)
    assert stored.status == "completed"
    assert stored.output == {"pages": 2}


@pytest.mark.parametrize("path", ["/flows//", "/flows/x/y", "/task-executions/a/b/c/"])
def test_unknown_path_is_a_json_404_not_a_redirect(tenant: Tenant, path: str) -> None:
    response = tenant.client.get(path)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
