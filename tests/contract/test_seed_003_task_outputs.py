"""Contract of seed page 003: POST /task-outputs.

One test per documented body and response field (name, JSON type, echo in the 201, and the
GET → edit → PUT round trip of the created record), per documented status value, and per
documented status code (201, 400, 404, 422, 500), each asserting the one error shape. Also the
flow execution's task_outputs_summary, which every created or changed output recomputes.
"""

from __future__ import annotations

from typing import Any

import pytest

from executions.models import FlowExecution
from flows.services import update_flow
from outputs.models import TaskOutput
from tests.helpers.contract import (
    assert_error,
    is_aware_datetime_string,
    is_json_value,
    is_uuid_string,
    problems,
)
from tests.helpers.tenants import DEFINITION, Tenant, random_uuid

STATUSES = ["queued", "running", "in_progress", "completed", "failed", "deleted", "stale"]
CREATABLE_STATUSES = [s for s in STATUSES if s != "deleted"]
REQUIRED_BODY_FIELDS = ["flow_execution_id", "organization_id", "summary", "task_name"]
RESPONSE_FIELDS = {
    "created_at",
    "flow_execution_id",
    "flow_version",
    "id",
    "modified_by",
    "organization_id",
    "output",
    "status",
    "summary",
    "tags",
    "task_name",
    "updated_at",
}


# --- helpers -------------------------------------------------------------------------------------


def body_for(tenant: Tenant, flow_execution: FlowExecution, **overrides: Any) -> dict[str, Any]:
    """The seed's required body fields for a task output of `flow_execution`."""
    body: dict[str, Any] = {
        "flow_execution_id": str(flow_execution.id),
        "organization_id": str(tenant.org.id),
        "task_name": "extract",
        "summary": {"pages": 10, "word_count": 5000},
    }
    body.update(overrides)
    return body


def post(tenant: Tenant, body: Any, path: str = "/task-outputs", **headers: Any) -> Any:
    return tenant.client.post(path, body, format="json", **headers)


def create(tenant: Tenant, flow_execution: FlowExecution, **overrides: Any) -> dict[str, Any]:
    response = post(tenant, body_for(tenant, flow_execution, **overrides))
    assert response.status_code == 201, response.content
    return response.json()


def read(tenant: Tenant, task_output_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/task-outputs/{task_output_id}")
    assert response.status_code == 200, response.content
    return response.json()


def summary_of(tenant: Tenant, flow_execution: FlowExecution) -> dict[str, Any]:
    response = tenant.client.get(f"/flow-executions/{flow_execution.id}")
    assert response.status_code == 200, response.content
    return response.json()["task_outputs_summary"]


def is_tags(value: Any) -> bool:
    scalar = str | int | float | bool
    return (
        value is None
        or (isinstance(value, list) and all(isinstance(item, str) for item in value))
        or (isinstance(value, dict) and all(isinstance(v, scalar) for v in value.values()))
    )


# --- 201: fields ---------------------------------------------------------------------------------


def test_post_returns_201_with_exactly_the_documented_fields(tenant):
    fe = tenant.flow_execution()
    response = post(tenant, body_for(tenant, fe))
    assert response.status_code == 201, response.content
    assert set(response.json()) == RESPONSE_FIELDS


@pytest.mark.parametrize(
    ("field", "check"),
    [
        ("id", is_uuid_string),
        ("flow_execution_id", is_uuid_string),
        ("organization_id", is_uuid_string),
        ("task_name", lambda v: isinstance(v, str) and 1 <= len(v) <= 200),
        ("output", is_json_value),
        ("summary", lambda v: isinstance(v, dict)),
        ("tags", is_tags),
        ("status", lambda v: v in STATUSES),
        ("flow_version", lambda v: type(v) is int and v >= 1),
        ("modified_by", lambda v: isinstance(v, str) and v),
        ("created_at", is_aware_datetime_string),
        ("updated_at", is_aware_datetime_string),
    ],
)
def test_post_response_field_has_documented_json_type(tenant, field, check):
    fe = tenant.flow_execution()
    body = create(tenant, fe, output={"text": "hello"}, tags=["ocr"], status="completed")
    assert check(body[field])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_name", "review"),
        ("output", {"text": "hello", "pages": [1, 2]}),
        ("output", ["a", 1, None]),
        ("output", "plain text"),
        ("output", 3.5),
        ("output", None),
        ("summary", {"status_code": 200, "response_time_ms": 450}),
        ("summary", {}),
        ("tags", None),
        ("tags", []),
        ("tags", ["ocr", "invoice"]),
        ("tags", {"env": "prod", "pages": 3, "reviewed": True}),
        ("status", "completed"),
        ("modified_by", "integration"),
    ],
)
def test_post_echoes_body_field_in_201_and_get(tenant, field, value):
    fe = tenant.flow_execution()
    body = create(tenant, fe, **{field: value})
    assert body[field] == value
    assert read(tenant, body["id"])[field] == value


def test_post_echoes_flow_execution_and_organization_ids(tenant):
    fe = tenant.flow_execution()
    body = create(tenant, fe)
    assert body["flow_execution_id"] == str(fe.id)
    assert body["organization_id"] == str(tenant.org.id)


def test_post_without_output_and_tags_stores_null(tenant):
    fe = tenant.flow_execution()
    body = create(tenant, fe)
    assert body["output"] is None
    assert body["tags"] is None


@pytest.mark.parametrize(
    ("field", "sent"),
    [
        ("id", "11111111-1111-4111-8111-111111111111"),
        ("created_at", "2000-01-01T00:00:00Z"),
        ("updated_at", "2000-01-01T00:00:00Z"),
        ("flow_version", 99),
    ],
)
def test_post_ignores_sent_read_only_field(tenant, field, sent):
    fe = tenant.flow_execution()
    body = create(tenant, fe, **{field: sent})
    assert body[field] != sent
    assert read(tenant, body["id"])[field] == body[field]


def test_get_returns_what_post_created(tenant):
    fe = tenant.flow_execution()
    body = create(tenant, fe, output={"text": "x"}, tags=["a"], status="completed")
    assert read(tenant, body["id"]) == body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output", {"text": "corrected by a reviewer"}),
        ("output", None),
        ("summary", {"pages": 11}),
        ("tags", ["reviewed"]),
        ("tags", {"reviewer": "ana"}),
        ("tags", None),
        ("status", "stale"),
        ("modified_by", "123e4567-e89b-12d3-a456-426614174000"),
    ],
)
def test_created_output_round_trips_edited_field_through_get_edit_put(tenant, field, value):
    fe = tenant.flow_execution()
    created = create(tenant, fe, output={"text": "x"}, tags=["ocr"], status="completed")
    body = read(tenant, created["id"])
    body[field] = value
    response = tenant.client.put(f"/task-outputs/{created['id']}", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()[field] == value
    assert read(tenant, created["id"])[field] == value


@pytest.mark.parametrize(
    "field",
    ["id", "flow_execution_id", "organization_id", "task_name", "flow_version", "created_at"],
)
def test_created_output_round_trips_unedited_field_through_get_put(tenant, field):
    fe = tenant.flow_execution()
    created = create(tenant, fe)
    body = read(tenant, created["id"])
    response = tenant.client.put(f"/task-outputs/{created['id']}", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()[field] == created[field]


def test_post_answers_with_trailing_slash(tenant):
    fe = tenant.flow_execution()
    response = post(tenant, body_for(tenant, fe), path="/task-outputs/")
    assert response.status_code == 201, response.content


def test_post_echoes_x_request_id_header(tenant):
    fe = tenant.flow_execution()
    response = post(tenant, body_for(tenant, fe), HTTP_X_REQUEST_ID="req-post-201")
    assert response.status_code == 201
    assert response["X-Request-ID"] == "req-post-201"


# --- flow_version --------------------------------------------------------------------------------


def test_post_sets_flow_version_from_the_flow_executions_pinned_version(tenant):
    flow = tenant.flow()
    pinned_v1 = tenant.flow_execution(flow)
    flow = update_flow(
        flow, actor="system", definition=DEFINITION + "  - name: publish\n    type: transform\n"
    )
    assert flow.current_version.version == 2
    on_v2 = tenant.flow_execution(flow)
    assert create(tenant, pinned_v1)["flow_version"] == 1
    assert create(tenant, on_v2)["flow_version"] == 2


# --- status values -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", CREATABLE_STATUSES)
def test_post_creates_output_with_each_documented_status(tenant, status):
    fe = tenant.flow_execution()
    body = create(tenant, fe, status=status)
    assert body["status"] == status
    assert read(tenant, body["id"])["status"] == status


def test_post_without_status_defaults_to_queued(tenant):
    fe = tenant.flow_execution()
    assert create(tenant, fe)["status"] == "queued"


def test_post_with_status_deleted_returns_422(tenant):
    fe = tenant.flow_execution()
    response = post(tenant, body_for(tenant, fe, status="deleted"))
    body = assert_error(response, 422, "validation_error")
    assert ("body", "status") in problems(body)
    assert not TaskOutput.objects.filter(flow_execution=fe).exists()


@pytest.mark.parametrize("status", ["exploded", "COMPLETED", "", None])
def test_post_with_status_outside_the_enum_returns_422(tenant, status):
    fe = tenant.flow_execution()
    body = assert_error(post(tenant, body_for(tenant, fe, status=status)), 422, "validation_error")
    assert ("body", "status") in problems(body)


# --- modified_by ---------------------------------------------------------------------------------


def test_post_without_modified_by_records_the_service_keys_actor(tenant):
    fe = tenant.flow_execution()
    assert create(tenant, fe)["modified_by"] == tenant.actor == f"api-key:{tenant.key.prefix}"


@pytest.mark.parametrize(
    "actor",
    ["system", "123e4567-e89b-12d3-a456-426614174000", "integration", "service-account"],
)
def test_post_records_supplied_modified_by(tenant, actor):
    fe = tenant.flow_execution()
    assert create(tenant, fe, modified_by=actor)["modified_by"] == actor


@pytest.mark.parametrize("actor", ["bad actor!", "", "x" * 201, "<script>"])
def test_post_with_invalid_modified_by_returns_422(tenant, actor):
    fe = tenant.flow_execution()
    body = assert_error(
        post(tenant, body_for(tenant, fe, modified_by=actor)), 422, "validation_error"
    )
    assert ("body", "modified_by") in problems(body)


# --- task_outputs_summary ------------------------------------------------------------------------


def test_post_recomputes_the_flow_executions_task_outputs_summary(tenant):
    fe = tenant.flow_execution()
    create(tenant, fe, task_name="extract", summary={"pages": 3}, status="completed")
    assert summary_of(tenant, fe) == {
        "tasks": {"extract": {"pages": 3}},
        "status_counts": {"completed": 1},
    }
    create(tenant, fe, task_name="review", summary={"approved": False}, status="running")
    create(tenant, fe, task_name="extract", summary={"pages": 4}, status="completed")
    assert summary_of(tenant, fe) == {
        "tasks": {"extract": {"pages": 4}, "review": {"approved": False}},
        "status_counts": {"completed": 1, "running": 1},
    }


def test_put_of_an_output_recomputes_the_summary_and_deleted_outputs_drop_out(tenant):
    fe = tenant.flow_execution()
    create(tenant, fe, summary={"pages": 3}, status="completed")
    newest = create(tenant, fe, summary={"pages": 4}, status="completed")

    edited = dict(read(tenant, newest["id"]), summary={"pages": 5}, status="stale")
    assert (
        tenant.client.put(f"/task-outputs/{newest['id']}", edited, format="json").status_code == 200
    )
    assert summary_of(tenant, fe) == {
        "tasks": {"extract": {"pages": 5}},
        "status_counts": {"stale": 1},
    }

    deleted = dict(read(tenant, newest["id"]), status="deleted")
    assert (
        tenant.client.put(f"/task-outputs/{newest['id']}", deleted, format="json").status_code
        == 200
    )
    assert summary_of(tenant, fe) == {
        "tasks": {"extract": {"pages": 3}},
        "status_counts": {"completed": 1},
    }


def test_post_into_one_flow_execution_leaves_other_summaries_alone(tenant):
    fe, untouched = tenant.flow_execution(), tenant.flow_execution()
    create(tenant, fe, summary={"pages": 3})
    assert summary_of(tenant, untouched) in ({}, {"tasks": {}, "status_counts": {}})


# --- 422 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED_BODY_FIELDS)
def test_post_without_required_field_returns_422(tenant, field):
    fe = tenant.flow_execution()
    sent = body_for(tenant, fe)
    del sent[field]
    body = assert_error(post(tenant, sent), 422, "validation_error")
    assert problems(body)[("body", field)] == "required"
    assert not TaskOutput.objects.exists()


@pytest.mark.parametrize("summary", [["pages", 10], "10 pages", 10, True, None])
def test_post_with_summary_that_is_not_a_json_object_returns_422(tenant, summary):
    fe = tenant.flow_execution()
    body = assert_error(
        post(tenant, body_for(tenant, fe, summary=summary)), 422, "validation_error"
    )
    assert ("body", "summary") in problems(body)


@pytest.mark.parametrize(
    "tags",
    [[1, 2], ["ok", 3], [["nested"]], {"nested": {"a": 1}}, {"list": [1]}, "ocr", 5, True],
)
def test_post_with_tags_that_are_not_null_strings_or_scalar_object_returns_422(tenant, tags):
    fe = tenant.flow_execution()
    body = assert_error(post(tenant, body_for(tenant, fe, tags=tags)), 422, "validation_error")
    assert ("body", "tags") in problems(body)


def test_post_with_task_name_of_200_characters_succeeds(tenant):
    fe = tenant.flow_execution()
    assert create(tenant, fe, task_name="t" * 200)["task_name"] == "t" * 200


@pytest.mark.parametrize("task_name", ["t" * 201, "", None], ids=["201-chars", "empty", "null"])
def test_post_with_invalid_task_name_returns_422(tenant, task_name):
    fe = tenant.flow_execution()
    body = assert_error(
        post(tenant, body_for(tenant, fe, task_name=task_name)), 422, "validation_error"
    )
    assert ("body", "task_name") in problems(body)
    assert not TaskOutput.objects.exists()


@pytest.mark.parametrize("field", ["flow_execution_id", "organization_id"])
def test_post_with_non_uuid_id_returns_422(tenant, field):
    fe = tenant.flow_execution()
    body = assert_error(
        post(tenant, body_for(tenant, fe, **{field: "not-a-uuid"})), 422, "validation_error"
    )
    assert ("body", field) in problems(body)


def test_post_with_unknown_body_field_returns_422_naming_it(tenant):
    fe = tenant.flow_execution()
    body = assert_error(post(tenant, body_for(tenant, fe, colour="blue")), 422, "validation_error")
    assert problems(body)[("body", "colour")] == "unknown_field"
    assert not TaskOutput.objects.exists()


def test_post_422_lists_every_problem(tenant):
    fe = tenant.flow_execution()
    sent = body_for(tenant, fe, task_name="", summary=[], status="exploded", colour="blue")
    body = assert_error(
        post(tenant, sent, HTTP_X_REQUEST_ID="req-422"),
        422,
        "validation_error",
        request_id="req-422",
    )
    assert set(problems(body)) >= {
        ("body", "task_name"),
        ("body", "summary"),
        ("body", "status"),
        ("body", "colour"),
    }


@pytest.mark.parametrize("raw", ["[]", '"text"', "42"])
def test_post_with_json_that_is_not_an_object_returns_422(tenant, raw):
    response = tenant.client.post("/task-outputs", data=raw, content_type="application/json")
    body = assert_error(response, 422, "validation_error")
    assert ("body",) in problems(body)


def test_post_with_empty_body_returns_422_listing_the_required_fields(tenant):
    response = tenant.client.post("/task-outputs", data="", content_type="application/json")
    body = assert_error(response, 422, "validation_error")
    assert {loc for loc, type_ in problems(body).items() if type_ == "required"} == {
        ("body", field) for field in REQUIRED_BODY_FIELDS
    }


# --- 400 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["{not json", '{"task_name": "extract",}', "{'single': 'quotes'}"])
def test_post_with_malformed_json_returns_400(tenant, raw):
    response = tenant.client.post(
        "/task-outputs", data=raw, content_type="application/json", HTTP_X_REQUEST_ID="req-400"
    )
    assert_error(response, 400, "malformed_request", request_id="req-400")
    assert not TaskOutput.objects.exists()


# --- 404 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["unknown-flow-execution", "other-tenants-flow-execution"])
def test_post_for_missing_or_foreign_flow_execution_returns_404(tenant, other_tenant, case):
    theirs = other_tenant.flow_execution()
    flow_execution_id = random_uuid() if case == "unknown-flow-execution" else str(theirs.id)
    sent = dict(body_for(tenant, theirs), flow_execution_id=flow_execution_id)
    response = post(tenant, sent, HTTP_X_REQUEST_ID="req-404")
    body = assert_error(response, 404, "not_found", request_id="req-404")
    assert body["error"]["message"] == "Flow execution not found"
    assert not TaskOutput.objects.exists()


@pytest.mark.parametrize("flow_execution_owner", ["mine", "theirs"])
def test_post_naming_another_organization_returns_404(tenant, other_tenant, flow_execution_owner):
    fe = (tenant if flow_execution_owner == "mine" else other_tenant).flow_execution()
    sent = body_for(tenant, fe, organization_id=str(other_tenant.org.id))
    body = assert_error(post(tenant, sent), 404, "not_found")
    assert body["error"]["message"] == "Flow execution not found"
    assert not TaskOutput.objects.exists()


def test_post_with_unknown_organization_returns_404(tenant):
    fe = tenant.flow_execution()
    body = assert_error(
        post(tenant, body_for(tenant, fe, organization_id=random_uuid())), 404, "not_found"
    )
    assert body["error"]["message"] == "Flow execution not found"


# --- 500 -----------------------------------------------------------------------------------------


def test_post_unexpected_error_returns_500_without_internals(tenant, monkeypatch):
    fired: list[str] = []

    def explode(*args: Any, **kwargs: Any) -> None:
        fired.append("create_task_output")
        raise RuntimeError("boom secret")

    monkeypatch.setattr("executions.corrections.task_outputs.create_task_output", explode)
    fe = tenant.flow_execution()
    response = post(tenant, body_for(tenant, fe), HTTP_X_REQUEST_ID="req-500")
    assert fired, "the injected failure did not happen"
    assert_error(response, 500, "internal_error", request_id="req-500")
    text = response.content.decode()
    assert "boom" not in text
    assert "secret" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    assert not TaskOutput.objects.exists()
