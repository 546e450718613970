"""The one error shape, request ids, and no traceback ever reaching a client."""

from __future__ import annotations

import pytest

from executions.models import TaskExecution

pytestmark = pytest.mark.django_db


def assert_error_shape(body: dict, code: str) -> None:
    assert set(body) >= {"error", "request_id"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


def test_generated_request_id_is_echoed_in_header_and_body(tenant):
    response = tenant.client.get("/task-executions/not-a-uuid")
    assert response.status_code == 404
    assert response["X-Request-ID"]
    assert response.json()["request_id"] == response["X-Request-ID"]


def test_client_request_id_is_honoured(tenant):
    response = tenant.client.get("/flows", HTTP_X_REQUEST_ID="trace-123.abc")
    assert response["X-Request-ID"] == "trace-123.abc"


@pytest.mark.parametrize("supplied", ["has space", "x" * 200, "<script>", ""])
def test_insane_request_id_is_replaced(tenant, supplied):
    response = tenant.client.get("/flows", HTTP_X_REQUEST_ID=supplied)
    assert response["X-Request-ID"] != supplied
    assert len(response["X-Request-ID"]) == 32


def test_malformed_json_is_400(tenant):
    response = tenant.client.post(
        "/task-outputs", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert_error_shape(response.json(), "malformed_request")


@pytest.mark.parametrize("body", ["[]", '"text"', "42"])
def test_json_that_is_not_an_object_is_422(tenant, body):
    response = tenant.client.post("/task-outputs", data=body, content_type="application/json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_unknown_path_is_json_404(tenant):
    response = tenant.client.get("/no/such/endpoint")
    assert response.status_code == 404
    assert_error_shape(response.json(), "not_found")


def test_unknown_path_without_key_is_also_404_json(anon_client):
    response = anon_client.get("/nothing-here")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_method_not_allowed_uses_error_shape(tenant):
    response = tenant.client.put("/flow-executions", data={}, format="json")
    assert response.status_code == 405
    assert_error_shape(response.json(), "method_not_allowed")


def test_unsupported_media_type_uses_error_shape(tenant):
    response = tenant.client.post("/task-outputs", data="a=b", content_type="text/plain")
    assert response.status_code == 415
    assert_error_shape(response.json(), "unsupported_media_type")


def test_unhandled_error_is_500_without_traceback_and_is_logged(tenant, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("executions.views.TaskExecutionViewSet.get_queryset", explode)
    response = tenant.client.get("/task-executions", HTTP_X_REQUEST_ID="req-500")
    assert response.status_code == 500
    assert_error_shape(response.json(), "internal_error")
    text = response.content.decode()
    assert "secret internals" not in text
    assert "Traceback" not in text
    assert response.json()["request_id"] == "req-500"
    assert any(
        r.levelname == "ERROR" and r.exc_info and "secret internals" in str(r.exc_info[1])
        for r in caplog.records
    )


def test_error_outside_drf_views_is_500_json(anon_client, monkeypatch):
    fired = []

    def explode(request):
        fired.append("JsonResponse")
        raise RuntimeError("boom in plain view")

    monkeypatch.setattr("flowplatform.health.JsonResponse", explode)
    response = anon_client.get("/healthz")
    assert fired, "the injected failure did not happen"
    assert response.status_code == 500
    assert_error_shape(response.json(), "internal_error")
    assert "boom" not in response.content.decode()


def test_database_outage_is_503(tenant, monkeypatch):
    from django.db import OperationalError

    fired = []

    def unavailable(*args, **kwargs):
        fired.append("get_queryset")
        raise OperationalError("connection refused")

    monkeypatch.setattr("executions.views.TaskExecutionViewSet.get_queryset", unavailable)
    response = tenant.client.get("/task-executions")
    assert fired, "the injected failure did not happen"
    assert response.status_code == 503
    assert_error_shape(response.json(), "service_unavailable")
    assert "connection refused" not in response.content.decode()


def test_validation_error_lists_every_problem_with_loc_msg_type(tenant):
    fe = tenant.flow_execution()
    response = tenant.client.post(
        "/task-executions",
        {
            "flow_execution_id": str(fe.id),
            "organization_id": str(tenant.org.id),
            "task_name": "",
            "task_execution_idx": -1,
            "status": "exploded",
            "colour": "blue",
        },
        format="json",
    )
    assert response.status_code == 422
    body = response.json()
    assert_error_shape(body, "validation_error")
    locs = {tuple(item["loc"]): item["type"] for item in body["detail"]}
    assert locs[("body", "colour")] == "unknown_field"
    assert ("body", "task_name") in locs
    assert ("body", "task_execution_idx") in locs
    assert locs[("body", "status")] == "invalid_choice"
    assert body["error"]["details"]["errors"] == body["detail"]
    assert not TaskExecution.objects.exists()


def test_body_over_the_size_limit_is_413_and_writes_nothing(tenant, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    fe = tenant.flow_execution()
    body = {
        "flow_execution_id": str(fe.id),
        "organization_id": str(tenant.org.id),
        "task_name": "extract",
        "summary": {"blob": "x" * 20_000},
    }
    response = tenant.client.post("/task-outputs", body, format="json")
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")
    assert not fe.task_outputs.exists()
