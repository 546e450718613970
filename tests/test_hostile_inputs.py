"""Bad input a hostile or careless client sends gets the answer README documents, in the one
error shape, and writes nothing: a body cut short, an expression nested hundreds deep, a reason
header that is not UTF-8, an id of the wrong JSON type."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.wsgi import application
from tests.helpers.contract import assert_error, problems

pytestmark = pytest.mark.django_db(transaction=True)


def call_wsgi(method: str, path: str, body: bytes, declared: int, key: str) -> tuple[int, dict]:
    """One request straight through the WSGI application, as gunicorn hands it over: the body
    stream holds only what arrived, whatever Content-Length said."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(declared),
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(headers)

    chunks = application(environ, start_response)
    content = b"".join(chunks)
    return answer["status"], {**json.loads(content), "headers": answer["headers"]}


def test_a_body_shorter_than_its_content_length_is_a_400_and_runs_nothing(tenant) -> None:
    flow = tenant.flow()
    body = json.dumps({"flow_id": str(flow.id), "input": {"document": "x"}}).encode()
    status, answer = call_wsgi("POST", "/flow-executions", body, 100_000, tenant.secret)
    assert status == 400
    assert answer["error"]["code"] == "malformed_request"
    assert "cut short" in answer["error"]["message"]
    assert f"{len(body)} of the 100000 bytes" in answer["error"]["message"]
    assert answer["request_id"] == answer["headers"]["X-Request-ID"]
    assert not FlowExecution.objects.exists()


def test_a_whole_body_is_still_accepted_through_wsgi(tenant) -> None:
    flow = tenant.flow()
    body = json.dumps({"flow_id": str(flow.id), "input": {"document": "x"}}).encode()
    status, answer = call_wsgi("POST", "/flow-executions", body, len(body), tenant.secret)
    assert status == 201, answer
    assert FlowExecution.objects.count() == 1


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 500 + "flow.input" + ")" * 500,
        "abs(" * 500 + "flow.input" + ")" * 500,
        "[" * 300 + "flow.input" + "]" * 300,
    ],
    ids=["parentheses", "functions", "brackets"],
)
def test_an_expression_nested_hundreds_deep_is_a_422_naming_its_place(tenant, expression) -> None:
    definition = json.dumps(
        {"tasks": [{"name": "a", "type": "transform", "input": f"${{{{ {expression} }}}}"}]}
    )
    response = tenant.client.post("/flows", {"name": "deep", "definition": definition}, "json")
    body = assert_error(response, 422, "validation_error")
    assert ("body", "definition", "tasks", 0, "input") in problems(body)
    assert "levels deep; at most 64" in body["detail"][0]["msg"]


def test_a_transform_expression_nested_hundreds_deep_is_a_422(tenant) -> None:
    definition = json.dumps(
        {
            "tasks": [
                {
                    "name": "a",
                    "type": "transform",
                    "config": {"expression": "(" * 600 + "@" + ")" * 600},
                }
            ]
        }
    )
    response = tenant.client.post("/flows", {"name": "deep", "definition": definition}, "json")
    body = assert_error(response, 422, "validation_error")
    assert ("body", "definition", "tasks", 0, "config", "expression") in problems(body)


def test_a_reasonable_nesting_is_still_allowed(tenant) -> None:
    expression = "(" * 20 + "flow.input" + ")" * 20
    definition = json.dumps(
        {"tasks": [{"name": "a", "type": "transform", "input": f"${{{{ {expression} }}}}"}]}
    )
    response = tenant.client.post("/flows", {"name": "ok", "definition": definition}, "json")
    assert response.status_code == 201, response.json()


def completed_attempt(tenant) -> TaskExecution:
    return tenant.task_execution(output={"pages": 1})


def test_a_reason_header_that_is_not_utf8_is_a_422_and_changes_nothing(tenant) -> None:
    attempt = completed_attempt(tenant)
    response = tenant.client.patch(
        f"/task-executions/{attempt.pk}",
        {"output": {"pages": 2}},
        format="json",
        HTTP_X_CORRECTION_REASON=b"bad \xff\xfe bytes".decode("latin-1"),
    )
    body = assert_error(response, 422, "validation_error")
    assert problems(body) == {("header", "X-Correction-Reason"): "invalid"}
    attempt.refresh_from_db()
    assert attempt.output == {"pages": 1}
    assert not Correction.objects.exists()


def test_a_utf8_reason_header_is_stored_as_text(tenant) -> None:
    attempt = completed_attempt(tenant)
    response = tenant.client.patch(
        f"/task-executions/{attempt.pk}",
        {"output": {"pages": 2}},
        format="json",
        HTTP_X_CORRECTION_REASON="Prüfung ✓".encode().decode("latin-1"),
    )
    assert response.status_code == 200, response.json()
    assert Correction.objects.get().reason == "Prüfung ✓"


@pytest.mark.parametrize("value", [123, 1.5, True, ["x"], {"id": "x"}])
def test_an_id_of_the_wrong_json_type_is_a_422_at_its_field(tenant, value) -> None:
    tenant.flow()
    response = tenant.client.post("/flow-executions", {"flow_id": value}, format="json")
    body = assert_error(response, 422, "validation_error")
    assert ("body", "flow_id") in problems(body)
    assert not FlowExecution.objects.exists()


def test_an_integer_flow_execution_id_of_a_task_output_is_a_422(tenant) -> None:
    response = tenant.client.post(
        "/task-outputs",
        {"flow_execution_id": 5, "task_name": "extract", "summary": {}},
        format="json",
    )
    body = assert_error(response, 422, "validation_error")
    assert ("body", "flow_execution_id") in problems(body)


# Query values, methods, read-only fields ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/flows", "limit"),
        ("/flow-executions", "created_at_after"),
        ("/task-executions", "ordering"),
        ("/task-outputs", "offset"),
        ("/corrections", "task_name"),
    ],
)
def test_an_empty_query_value_is_a_422_naming_it(tenant, path, parameter) -> None:
    response = tenant.client.get(f"{path}?{parameter}=")
    body = assert_error(response, 422, "validation_error")
    assert problems(body) == {("query", parameter): "invalid"}
    assert "leave the parameter out" in body["detail"][0]["msg"]


def test_a_wrong_method_with_a_reused_key_is_a_405_first(tenant) -> None:
    flow = tenant.flow()
    key = "same-key-for-two-requests"
    created = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id)}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    assert created.status_code == 201
    response = tenant.client.put("/flow-executions", {}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert_error(response, 405, "method_not_allowed")


def test_server_set_fields_sent_back_blank_are_ignored(tenant) -> None:
    fe = tenant.flow_execution()
    response = tenant.client.post(
        "/task-executions",
        {
            "flow_execution_id": str(fe.id),
            "organization_id": str(tenant.org.id),
            "task_name": "extract",
            "status": "completed",
            "output": {"pages": 1},
            "created_at": "",
            "reused_from": "",
            "stale_cause": "whatever",
            "id": "",
            "updated_at": "",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["reused_from"] is None
    assert body["created_at"]


def test_a_422_that_lists_only_the_first_problems_says_how_many_more(tenant) -> None:
    fe = tenant.flow_execution()
    attempt = tenant.task_execution(fe)
    response = tenant.client.put(
        f"/task-executions/{attempt.pk}",
        {f"unknown_{n}": 1 for n in range(8)},
        format="json",
    )
    body = assert_error(response, 422, "validation_error")
    hidden = len(body["detail"]) - 5
    assert hidden > 0
    assert f"and {hidden} more problem(s), every one in `detail`" in body["error"]["message"]


# A correction keeps its output's summary --------------------------------------------------


def document_review(tenant) -> FlowExecution:
    from pathlib import Path

    definition = Path(__file__).resolve().parent.parent / "examples" / "document-review.yaml"
    flow = tenant.flow(name="document-review", definition=definition.read_text())
    response = tenant.client.post(
        "/flow-executions",
        {"flow_id": str(flow.id), "input": {"document": "one two three four"}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return FlowExecution.objects.get(pk=response.json()["id"])


def test_a_corrected_output_keeps_the_summary_its_task_type_gives(tenant) -> None:
    fe = document_review(tenant)
    assert fe.task_outputs_summary["tasks"]["extract"] == {"pages": 1, "word_count": 4}
    extract = TaskExecution.objects.get(flow_execution=fe, task_name="extract")
    response = tenant.client.patch(
        f"/task-executions/{extract.pk}",
        {"output": {"pages": 3, "words": 100, "title": "Fixed"}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    fe.refresh_from_db()
    assert fe.task_outputs_summary["tasks"]["extract"] == {"pages": 3, "word_count": 100}


def test_a_correction_may_carry_its_summary(tenant) -> None:
    fe = document_review(tenant)
    extract = TaskExecution.objects.get(flow_execution=fe, task_name="extract")
    response = tenant.client.patch(
        f"/task-executions/{extract.pk}",
        {
            "output": {"pages": 2, "words": 9, "title": "x"},
            "summary": {"pages": 2, "checked": True},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    fe.refresh_from_db()
    assert fe.task_outputs_summary["tasks"]["extract"] == {"pages": 2, "checked": True}
    assert Correction.objects.get().after["summary"] == {"pages": 2, "checked": True}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"output": {"pages": 2}, "summary": [1]}, ("body", "summary")),
        ({"output": {"pages": 2}, "summary": None}, ("body", "summary")),
        ({"status": "stale", "summary": {"a": 1}}, ("body", "summary")),
    ],
    ids=["not-an-object", "null", "nothing-published"],
)
def test_a_bad_summary_is_a_422_and_changes_nothing(tenant, body, where) -> None:
    fe = document_review(tenant)
    extract = TaskExecution.objects.get(flow_execution=fe, task_name="extract")
    before = fe.task_outputs_summary
    response = tenant.client.patch(f"/task-executions/{extract.pk}", body, format="json")
    assert where in problems(assert_error(response, 422, "validation_error"))
    fe.refresh_from_db()
    assert fe.task_outputs_summary == before
    assert not Correction.objects.exists()
