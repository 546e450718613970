"""Contract of seed page 000: PUT /task-executions/{id}?execute_flow= (plus the POST it relates to).

One test per documented field (name, JSON type, GET → edit → PUT round trip), per documented
status value, and per documented status code (200, 404, 422, 500, and 409 for the optimistic
lock), each asserting the one error shape. Re-execution (execute_flow=true propagation) is a
later issue: only the parameter's validation is part of this contract for now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from executions.models import TaskExecution
from tests.helpers.contract import (
    assert_error,
    is_aware_datetime_string,
    is_json_value,
    is_uuid_string,
    problems,
)
from tests.helpers.tenants import Tenant, random_uuid

STATUSES = ["queued", "running", "completed", "failed", "deleted", "stale"]
REQUIRED_BODY_FIELDS = [
    "flow_execution_id",
    "id",
    "organization_id",
    "status",
    "task_execution_idx",
    "task_name",
]
IDENTITY_FIELDS = ["id", "flow_execution_id", "organization_id", "task_name", "task_execution_idx"]
RESPONSE_FIELDS = {
    "created_at",
    "error",
    "flow_execution_id",
    "id",
    "input",
    "modified_by",
    "organization_id",
    "output",
    "status",
    "task_execution_idx",
    "task_name",
    "updated_at",
    # Explaining corrections (issue 5) adds these read-only fields to the seed's task execution.
    "stale_cause",
    "reused_from",
    # Loops (issue 17): which iteration of a looped task the attempt is (null without a loop).
    "iteration",
}
# The correction path adds these read-only fields to the seed's task execution in PUT answers.
CORRECTION_FIELDS = {
    "stale_tasks",
    "stale_iterations",
    "predictions",
    "started_tasks",
    "new_attempts",
    "dry_run",
    "preview_token",
    "correction_id",
}
# Documented transitions, one per target status: queued → running → completed | failed;
# any → deleted; completed/failed → stale; completed → completed (a corrected output).
TRANSITIONS = [
    ("completed", "completed"),
    ("queued", "running"),
    ("running", "completed"),
    ("running", "failed"),
    ("queued", "deleted"),
    ("running", "deleted"),
    ("completed", "deleted"),
    ("failed", "deleted"),
    ("stale", "deleted"),
    ("completed", "stale"),
    ("failed", "stale"),
]


# --- helpers -------------------------------------------------------------------------------------


def url(task_execution_id: Any, *, slash: bool = False) -> str:
    return f"/task-executions/{task_execution_id}" + ("/" if slash else "")


def read(tenant: Tenant, task_execution: TaskExecution) -> dict[str, Any]:
    response = tenant.client.get(url(task_execution.id))
    assert response.status_code == 200, response.content
    return response.json()


def put(tenant: Tenant, task_execution_id: Any, body: Any, query: str = "", **headers: Any) -> Any:
    return tenant.client.put(url(task_execution_id) + query, body, format="json", **headers)


def required_body(task_execution: TaskExecution, **overrides: Any) -> dict[str, Any]:
    """Only the seed's required body fields, taken from the stored record."""
    body = {
        "flow_execution_id": str(task_execution.flow_execution_id),
        "id": str(task_execution.id),
        "organization_id": str(task_execution.organization_id),
        "status": task_execution.status,
        "task_execution_idx": task_execution.task_execution_idx,
        "task_name": task_execution.task_name,
    }
    body.update(overrides)
    return body


# --- 200: fields ---------------------------------------------------------------------------------


def test_put_response_has_exactly_the_documented_fields(tenant):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te))
    assert response.status_code == 200, response.content
    assert set(response.json()) == RESPONSE_FIELDS | CORRECTION_FIELDS


@pytest.mark.parametrize(
    ("field", "check"),
    [
        ("id", is_uuid_string),
        ("flow_execution_id", is_uuid_string),
        ("organization_id", is_uuid_string),
        ("task_name", lambda v: isinstance(v, str) and 1 <= len(v) <= 200),
        ("task_execution_idx", lambda v: type(v) is int and v >= 0),
        ("status", lambda v: v in STATUSES),
        ("input", is_json_value),
        ("output", is_json_value),
        ("error", is_json_value),
        ("modified_by", lambda v: isinstance(v, str) and v),
        ("created_at", is_aware_datetime_string),
        ("updated_at", is_aware_datetime_string),
    ],
)
def test_put_response_field_has_documented_json_type(tenant, field, check):
    te = tenant.task_execution(
        input={"document": "a.pdf"}, output={"text": "x"}, error={"message": "none"}
    )
    response = put(tenant, te.id, required_body(te))
    assert response.status_code == 200, response.content
    assert check(response.json()[field])


@pytest.mark.parametrize(
    ("field", "stored"),
    [
        ("id", lambda te: str(te.id)),
        ("flow_execution_id", lambda te: str(te.flow_execution_id)),
        ("organization_id", lambda te: str(te.organization_id)),
        ("task_name", lambda te: te.task_name),
        ("task_execution_idx", lambda te: te.task_execution_idx),
    ],
)
def test_put_round_trips_identity_field_unchanged(tenant, field, stored):
    te = tenant.task_execution(task_name="review", task_execution_idx=3)
    body = read(tenant, te)
    response = put(tenant, te.id, body)
    assert response.status_code == 200, response.content
    assert response.json()[field] == body[field] == stored(te)
    assert read(tenant, te)[field] == stored(te)


def test_post_for_a_task_not_in_the_flow_is_422(tenant):
    fe = tenant.flow_execution()
    response = tenant.client.post(
        "/task-executions", create_body(tenant, fe, task_name="ghost"), format="json"
    )
    assert problems(assert_error(response, 422, "validation_error")) == {
        ("body", "task_name"): "unknown_task"
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "stale"),
        ("output", {"document": "b.pdf", "pages": [1, 2]}),
        ("output", ["a", 1, None, True]),
        ("output", "plain text"),
        ("output", 42),
        ("output", {"text": "corrected by a reviewer"}),
        ("output", [1, 2, 3]),
        ("output", None),
        ("error", {"message": "timeout", "retryable": True}),
        ("error", None),
        ("modified_by", "integration"),
    ],
)
def test_put_round_trips_edited_field(tenant, field, value):
    te = tenant.task_execution(input={"document": "a.pdf"}, output={"text": "x"}, error={"e": 1})
    body = read(tenant, te)
    body[field] = value
    response = put(tenant, te.id, body)
    assert response.status_code == 200, response.content
    assert response.json()[field] == value
    assert read(tenant, te)[field] == value


@pytest.mark.parametrize("value", [{"document": "b.pdf"}, ["a"], "plain text", 42, None])
def test_put_round_trips_input_but_refuses_to_edit_it(tenant, value):
    te = tenant.task_execution(input={"document": "a.pdf"}, output={"text": "x"})
    body = read(tenant, te)
    assert put(tenant, te.id, body).json()["input"] == {"document": "a.pdf"}
    body = read(tenant, te)
    body["input"] = value
    response = put(tenant, te.id, body)
    assert problems(assert_error(response, 422, "validation_error")) == {
        ("body", "input"): "immutable"
    }
    assert read(tenant, te)["input"] == {"document": "a.pdf"}


def test_put_with_the_read_updated_at_succeeds_and_advances_updated_at(tenant):
    te = tenant.task_execution()
    body = read(tenant, te)
    body["output"] = {"text": "new"}
    response = put(tenant, te.id, body)
    assert response.status_code == 200, response.content
    new_updated_at = response.json()["updated_at"]
    assert datetime.fromisoformat(new_updated_at) > datetime.fromisoformat(body["updated_at"])
    assert read(tenant, te)["updated_at"] == new_updated_at


def test_put_ignores_sent_created_at_and_keeps_the_stored_one(tenant):
    te = tenant.task_execution()
    body = read(tenant, te)
    original = body["created_at"]
    body["created_at"] = "2000-01-01T00:00:00Z"
    response = put(tenant, te.id, body)
    assert response.status_code == 200, response.content
    assert response.json()["created_at"] == original
    assert read(tenant, te)["created_at"] == original


def test_put_without_optional_fields_keeps_stored_values(tenant):
    te = tenant.task_execution(
        input={"document": "a.pdf"}, output={"text": "x"}, error={"message": "m"}
    )
    response = put(tenant, te.id, required_body(te, status="completed"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed"
    assert body["input"] == {"document": "a.pdf"}
    assert body["output"] == {"text": "x"}
    assert body["error"] == {"message": "m"}


@pytest.mark.parametrize("slash", [False, True], ids=["no-slash", "trailing-slash"])
def test_put_answers_with_and_without_trailing_slash(tenant, slash):
    te = tenant.task_execution()
    response = tenant.client.put(
        url(te.id, slash=slash), required_body(te, status="completed"), format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "completed"


def test_put_echoes_x_request_id_header(tenant):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te), HTTP_X_REQUEST_ID="req-put-200")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-put-200"


# --- 200: status values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "new"), TRANSITIONS, ids=[f"{a}-to-{b}" for a, b in TRANSITIONS]
)
def test_put_applies_documented_status_transition(tenant, stored, new):
    te = tenant.task_execution(status=stored)
    response = put(tenant, te.id, required_body(te, status=new))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == new
    assert read(tenant, te)["status"] == new


def test_every_documented_status_is_covered_by_a_transition_test():
    # queued is where every attempt starts; no transition leads back to it.
    assert {new for _, new in TRANSITIONS} == set(STATUSES) - {"queued"}
    assert {old for old, _ in TRANSITIONS} == set(STATUSES) - {"deleted"}


@pytest.mark.parametrize("status", ["in_progress", "exploded", "COMPLETED", ""])
def test_put_with_status_outside_the_task_execution_enum_returns_422(tenant, status):
    te = tenant.task_execution()
    body = assert_error(
        put(tenant, te.id, required_body(te, status=status)), 422, "validation_error"
    )
    assert ("body", "status") in problems(body)
    assert read(tenant, te)["status"] == "completed"


@pytest.mark.parametrize("status", ["queued", "running", "completed", "failed", "stale"])
def test_put_changing_status_of_deleted_task_execution_returns_422_invalid_transition(
    tenant, status
):
    te = tenant.task_execution(status="deleted")
    body = assert_error(
        put(tenant, te.id, required_body(te, status=status)), 422, "validation_error"
    )
    assert problems(body)[("body", "status")] == "invalid_transition"
    te.refresh_from_db()
    assert te.status == "deleted"


# --- modified_by ---------------------------------------------------------------------------------


def test_put_without_modified_by_records_the_service_keys_actor(tenant):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te, status="completed"))
    assert response.status_code == 200, response.content
    assert response.json()["modified_by"] == tenant.actor
    assert tenant.actor == f"api-key:{tenant.key.prefix}"


@pytest.mark.parametrize(
    "actor",
    ["system", "123e4567-e89b-12d3-a456-426614174000", "integration", "service-account"],
)
def test_put_records_supplied_modified_by(tenant, actor):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te, modified_by=actor))
    assert response.status_code == 200, response.content
    assert response.json()["modified_by"] == actor
    assert read(tenant, te)["modified_by"] == actor


@pytest.mark.parametrize("actor", ["bad actor!", "", "x" * 201, "<script>"])
def test_put_with_invalid_modified_by_returns_422(tenant, actor):
    te = tenant.task_execution()
    body = assert_error(
        put(tenant, te.id, required_body(te, modified_by=actor)), 422, "validation_error"
    )
    assert ("body", "modified_by") in problems(body)


# --- execute_flow --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "false", "1", "0"])
def test_put_accepts_boolean_execute_flow(tenant, value):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te, status="completed"), f"?execute_flow={value}")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "completed"


@pytest.mark.parametrize("value", ["maybe", "2", "truee", ""])
def test_put_with_non_boolean_execute_flow_returns_422(tenant, value):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te, status="completed"), f"?execute_flow={value}")
    body = assert_error(response, 422, "validation_error")
    assert ("query", "execute_flow") in problems(body)
    assert read(tenant, te)["status"] == "completed"


# --- 422: body validation ------------------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED_BODY_FIELDS)
def test_put_without_required_field_returns_422(tenant, field):
    te = tenant.task_execution()
    sent = required_body(te)
    del sent[field]
    body = assert_error(put(tenant, te.id, sent), 422, "validation_error")
    assert problems(body)[("body", field)] == "required"


@pytest.mark.parametrize(
    ("field", "new_value"),
    [
        ("id", lambda tenant, other: random_uuid()),
        ("flow_execution_id", lambda tenant, other: str(tenant.flow_execution().id)),
        ("organization_id", lambda tenant, other: str(other.org.id)),
        ("task_name", lambda tenant, other: "review"),
        ("task_execution_idx", lambda tenant, other: 7),
    ],
)
def test_put_changing_identity_field_returns_422_immutable(tenant, other_tenant, field, new_value):
    te = tenant.task_execution(output={"text": "kept"})
    sent = required_body(te, status="completed", output={"text": "changed"})
    sent[field] = new_value(tenant, other_tenant)
    body = assert_error(put(tenant, te.id, sent), 422, "validation_error")
    assert problems(body)[("body", field)] == "immutable"
    stored = read(tenant, te)
    assert stored["status"] == "completed"
    assert stored["output"] == {"text": "kept"}


def test_put_with_unknown_body_field_returns_422_naming_it(tenant):
    te = tenant.task_execution()
    body = assert_error(
        put(tenant, te.id, required_body(te, colour="blue")), 422, "validation_error"
    )
    assert problems(body)[("body", "colour")] == "unknown_field"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "not-a-uuid"),
        ("flow_execution_id", "not-a-uuid"),
        ("organization_id", 12),
        ("task_execution_idx", "first"),
        ("task_execution_idx", 1.5),
        ("task_name", 12),
        ("updated_at", "yesterday"),
    ],
)
def test_put_with_wrongly_typed_field_returns_422(tenant, field, value):
    te = tenant.task_execution()
    body = assert_error(
        put(tenant, te.id, required_body(te, **{field: value})), 422, "validation_error"
    )
    assert ("body", field) in problems(body)


def test_put_with_task_name_of_200_characters_succeeds(tenant):
    te = tenant.task_execution(task_name="t" * 200)
    response = put(tenant, te.id, required_body(te, status="completed"))
    assert response.status_code == 200, response.content
    assert response.json()["task_name"] == "t" * 200


@pytest.mark.parametrize("task_name", ["t" * 201, ""], ids=["201-chars", "empty"])
def test_put_with_task_name_out_of_bounds_returns_422(tenant, task_name):
    te = tenant.task_execution()
    body = assert_error(
        put(tenant, te.id, required_body(te, task_name=task_name)), 422, "validation_error"
    )
    assert ("body", "task_name") in problems(body)


def test_put_with_negative_task_execution_idx_returns_422(tenant):
    te = tenant.task_execution()
    body = assert_error(
        put(tenant, te.id, required_body(te, task_execution_idx=-1)), 422, "validation_error"
    )
    assert ("body", "task_execution_idx") in problems(body)


def test_put_422_echoes_x_request_id(tenant):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te, status="nope"), HTTP_X_REQUEST_ID="req-422")
    assert_error(response, 422, "validation_error", request_id="req-422")


def test_put_with_malformed_json_returns_400(tenant):
    te = tenant.task_execution()
    response = tenant.client.put(url(te.id), data="{not json", content_type="application/json")
    assert_error(response, 400, "malformed_request")


# --- 404 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["unknown-uuid", "not-a-uuid", "other-tenant"])
def test_put_on_missing_or_foreign_task_execution_returns_404(tenant, other_tenant, target):
    theirs = other_tenant.task_execution(output={"text": "theirs"})
    task_execution_id = {
        "unknown-uuid": random_uuid(),
        "not-a-uuid": "not-a-uuid",
        "other-tenant": str(theirs.id),
    }[target]
    sent = required_body(theirs, status="completed", output={"text": "overwritten"})
    sent["id"] = task_execution_id
    response = put(tenant, task_execution_id, sent, HTTP_X_REQUEST_ID="req-404")
    body = assert_error(response, 404, "not_found", request_id="req-404")
    assert body["error"]["message"] == "Task execution not found"
    theirs.refresh_from_db()
    assert theirs.status == "completed"
    assert theirs.output == {"text": "theirs"}


# --- 409: optimistic lock ------------------------------------------------------------------------


def test_put_with_stale_updated_at_returns_409_with_current_record(tenant):
    te = tenant.task_execution()
    first_read = read(tenant, te)
    concurrent = dict(first_read, output={"text": "by someone else"})
    assert put(tenant, te.id, concurrent).status_code == 200
    current = read(tenant, te)

    stale = dict(first_read, output={"text": "mine"}, status="completed")
    response = put(tenant, te.id, stale, HTTP_X_REQUEST_ID="req-409")
    body = assert_error(response, 409, "concurrent_update", request_id="req-409")
    assert body["error"]["details"]["current"] == current
    assert read(tenant, te) == current


def test_put_with_updated_at_that_was_never_stored_returns_409(tenant):
    te = tenant.task_execution()
    response = put(tenant, te.id, required_body(te, updated_at="2000-01-01T00:00:00Z"))
    body = assert_error(response, 409, "concurrent_update")
    assert set(body["error"]["details"]["current"]) == RESPONSE_FIELDS
    assert body["error"]["details"]["current"]["id"] == str(te.id)


def test_put_without_updated_at_is_last_write_wins(tenant):
    te = tenant.task_execution()
    first = put(tenant, te.id, required_body(te, output={"text": "first"}))
    second = put(tenant, te.id, required_body(te, output={"text": "second"}))
    assert first.status_code == second.status_code == 200
    assert read(tenant, te)["output"] == {"text": "second"}


# --- 500 -----------------------------------------------------------------------------------------


def test_put_unexpected_error_returns_500_without_internals(tenant, monkeypatch):
    fired: list[str] = []

    def explode(*args: Any, **kwargs: Any) -> None:
        fired.append("correct_task_execution")
        raise RuntimeError("boom secret")

    monkeypatch.setattr("executions.corrections.task_executions.correct_task_execution", explode)
    te = tenant.task_execution()
    response = put(
        tenant, te.id, required_body(te, status="completed"), HTTP_X_REQUEST_ID="req-500"
    )
    assert fired, "the injected failure did not happen"
    assert_error(response, 500, "internal_error", request_id="req-500")
    text = response.content.decode()
    assert "boom" not in text
    assert "secret" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text


# --- POST /task-executions (the related create endpoint the round trips start from) --------------


def create_body(tenant: Tenant, flow_execution: Any, **overrides: Any) -> dict[str, Any]:
    body = {
        "flow_execution_id": str(flow_execution.id),
        "organization_id": str(tenant.org.id),
        "task_name": "extract",
    }
    body.update(overrides)
    return body


def test_post_creates_queued_task_execution_with_next_index_and_documented_fields(tenant):
    fe = tenant.flow_execution()
    first = tenant.client.post("/task-executions", create_body(tenant, fe), format="json")
    second = tenant.client.post("/task-executions/", create_body(tenant, fe), format="json")
    assert first.status_code == second.status_code == 201, first.content
    assert set(first.json()) == RESPONSE_FIELDS
    assert first.json()["status"] == "queued"
    assert first.json()["modified_by"] == tenant.actor
    assert [first.json()["task_execution_idx"], second.json()["task_execution_idx"]] == [0, 1]


def test_post_then_get_edit_put_round_trips(tenant):
    fe = tenant.flow_execution()
    created = tenant.client.post("/task-executions", create_body(tenant, fe), format="json")
    assert created.status_code == 201, created.content
    body = tenant.client.get(url(created.json()["id"])).json()
    assert body == created.json()
    body.update(status="running", output={"text": "partial"})
    response = put(tenant, body["id"], body)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "running"
    assert response.json()["output"] == {"text": "partial"}


def test_post_ignores_sent_id_created_at_and_updated_at(tenant):
    fe = tenant.flow_execution()
    sent_id = random_uuid()
    response = tenant.client.post(
        "/task-executions",
        create_body(
            tenant,
            fe,
            id=sent_id,
            created_at="2000-01-01T00:00:00Z",
            updated_at="2000-01-01T00:00:00Z",
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != sent_id
    assert not body["created_at"].startswith("2000-")
    assert not body["updated_at"].startswith("2000-")


def test_post_with_duplicate_attempt_returns_409(tenant):
    fe = tenant.flow_execution()
    tenant.task_execution(fe, task_execution_idx=0)
    response = tenant.client.post(
        "/task-executions", create_body(tenant, fe, task_execution_idx=0), format="json"
    )
    assert_error(response, 409, "conflict")


def test_post_with_task_name_of_200_characters_succeeds(tenant):
    flow = tenant.flow("long-names", definition=f"tasks: [{{name: {'t' * 200}, type: human}}]")
    fe = tenant.flow_execution(flow)
    response = tenant.client.post(
        "/task-executions", create_body(tenant, fe, task_name="t" * 200), format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["task_name"] == "t" * 200


@pytest.mark.parametrize(
    ("field", "value"),
    [("task_name", "t" * 201), ("task_name", ""), ("task_execution_idx", -1)],
    ids=["task_name-201-chars", "task_name-empty", "task_execution_idx-minus-1"],
)
def test_post_with_out_of_bounds_value_returns_422(tenant, field, value):
    fe = tenant.flow_execution()
    response = tenant.client.post(
        "/task-executions", create_body(tenant, fe, **{field: value}), format="json"
    )
    body = assert_error(response, 422, "validation_error")
    assert ("body", field) in problems(body)
    assert not TaskExecution.objects.filter(flow_execution=fe).exists()
