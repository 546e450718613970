"""The OpenAPI schema documents the seed contract: paths, fields, descriptions, status codes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

SEED_000_FIELDS = {
    "created_at", "error", "flow_execution_id", "id", "input", "modified_by",
    "organization_id", "output", "status", "task_execution_idx", "task_name", "updated_at",
}  # fmt: skip
SEED_003_RESPONSE_FIELDS = {
    "created_at", "flow_execution_id", "flow_version", "id", "modified_by", "organization_id",
    "output", "status", "summary", "tags", "task_name", "updated_at",
}  # fmt: skip
SEED_003_BODY_FIELDS = SEED_003_RESPONSE_FIELDS - {"flow_version"}
# Explaining corrections (issue 5): a task execution shows why it is stale and what it reuses;
# a correction's body may say why it is made.
EXPLANATION_FIELDS = {"stale_cause", "reused_from", "iteration"}  # iteration: loops


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    import json

    return json.loads(response.content)


def _component(schema: dict, ref: dict) -> dict:
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def _resolve(schema: dict, node: dict) -> dict:
    """`node`, or the component it refers to."""
    return _component(schema, node) if "$ref" in node else node


def _body(schema: dict, operation: dict) -> dict:
    return _component(schema, operation["requestBody"]["content"]["application/json"]["schema"])


def _response(schema: dict, operation: dict, code: str) -> dict:
    return _component(schema, operation["responses"][code]["content"]["application/json"]["schema"])


def test_schema_is_openapi_3_1_and_needs_no_key(schema):
    assert schema["openapi"].startswith("3.1")


def test_put_task_execution_matches_seed_000(schema):
    put = schema["paths"]["/task-executions/{id}"]["put"]
    assert set(put["responses"]) >= {"200", "404", "409", "422", "500"}
    body = _body(schema, put)
    # reason: why (issue 5); summary: the corrected output's summary (the newcomer issue)
    assert set(body["properties"]) == SEED_000_FIELDS | EXPLANATION_FIELDS | {"reason", "summary"}
    assert set(body["required"]) == {
        "flow_execution_id", "id", "organization_id", "status", "task_execution_idx", "task_name",
    }  # fmt: skip
    assert body["properties"]["task_name"]["minLength"] == 1
    assert body["properties"]["task_name"]["maxLength"] == 200
    response = _response(schema, put, "200")
    assert set(response["properties"]) == SEED_000_FIELDS | EXPLANATION_FIELDS | {
        "stale_tasks", "stale_iterations", "predictions", "started_tasks", "new_attempts",
        "dry_run", "preview_token", "correction_id",
    }  # fmt: skip
    # A dry run's what-if values: task name → {action, input, output, error} (issue 19).
    prediction = response["properties"]["predictions"]["additionalProperties"]
    prediction = _resolve(schema, prediction)
    assert set(prediction["properties"]) == {"action", "input", "output", "error"}
    assert prediction["required"] == ["action"]
    action = prediction["properties"]["action"]["allOf"][0]
    assert _resolve(schema, action)["enum"] == [
        "run",
        "reuse",
        "unknown",
    ]
    execute_flow = next(p for p in put["parameters"] if p["name"] == "execute_flow")
    assert execute_flow["in"] == "query"
    assert execute_flow["schema"]["type"] == "boolean"
    assert execute_flow["schema"]["default"] is False


def test_task_execution_status_enum_is_exactly_the_seeds(schema):
    response = _response(schema, schema["paths"]["/task-executions/{id}"]["get"], "200")
    status = response["properties"]["status"]
    enum = status.get("enum") or _component(schema, status["allOf"][0])["enum"]
    assert set(enum) == {"queued", "running", "completed", "failed", "deleted", "stale"}


def test_post_task_outputs_matches_seed_003(schema):
    post = schema["paths"]["/task-outputs"]["post"]
    assert set(post["responses"]) >= {"201", "400", "404", "422", "500"}
    body = _body(schema, post)
    assert set(body["properties"]) == SEED_003_BODY_FIELDS | {"reason"}
    assert set(body.get("required", [])) == {
        "flow_execution_id", "organization_id", "summary", "task_name",
    }  # fmt: skip
    response = _response(schema, post, "201")
    assert set(response["properties"]) == SEED_003_RESPONSE_FIELDS


def test_every_seed_field_has_a_description(schema):
    components = [
        _body(schema, schema["paths"]["/task-executions/{id}"]["put"]),
        _response(schema, schema["paths"]["/task-executions/{id}"]["put"], "200"),
        _body(schema, schema["paths"]["/task-outputs"]["post"]),
        _response(schema, schema["paths"]["/task-outputs"]["post"], "201"),
    ]
    for component in components:
        for name, field in component["properties"].items():
            if name in {"created_at", "updated_at"} and field.get("readOnly"):
                continue
            assert field.get("description"), f"{name} has no description"


def test_error_responses_use_the_standard_shapes(schema):
    put = schema["paths"]["/task-executions/{id}"]["put"]
    error = _response(schema, put, "404")
    assert set(error["properties"]) == {"error", "request_id"}
    validation = _response(schema, put, "422")
    assert set(validation["properties"]) == {"error", "request_id", "detail"}
    item = _component(schema, validation["properties"]["detail"]["items"])
    assert set(item["properties"]) == {"loc", "msg", "type"}


def test_every_operation_documents_401_and_500(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            if operation.get("security") == []:  # /healthz, /readyz: no key, no 401
                continue
            assert {"401", "500"} <= set(operation["responses"]), f"{method} {path}"


def test_health_checks_are_documented_without_a_key(schema):
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert set(schema["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    assert set(schema["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


def test_bearer_security_scheme_is_declared(schema):
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme == {
        "type": "http",
        "scheme": "bearer",
        "description": scheme["description"],
    }
