"""Idempotency-Key on POST, PUT and PATCH: a retry answers the first response and runs nothing."""

from __future__ import annotations

import io
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

import flows.services
from executions.models import FlowExecution
from flowplatform import idempotency
from flowplatform.tenancy.models import ApiKey, IdempotencyKey
from flowplatform.tenancy.services import create_api_key
from flows.models import Flow
from outputs.models import TaskOutput
from tests.helpers.contract import assert_error, problems
from tests.helpers.tenants import DEFINITION, Tenant

KEY = "3f0c2a4e-retry-me"


def post(client: APIClient, path: str, body: Any, key: str | None = KEY, **extra: Any) -> Any:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(path, body, format="json", **headers, **extra)


def start_body(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    flow = Flow.objects.filter(organization=tenant.org).first() or tenant.flow()
    return {"flow_id": str(flow.id), "input": {"document": "a.pdf"}, **fields}


def assert_replay_of(first: Any, replay: Any) -> None:
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay["Content-Type"] == first["Content-Type"]
    assert replay["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first


def expire(key: str = KEY) -> None:
    IdempotencyKey.objects.filter(key=key).update(expires_at=timezone.now() - timedelta(seconds=1))


# --- replay ----------------------------------------------------------------------------------


def test_replayed_post_creates_one_row_and_answers_the_first_response(tenant):
    body = start_body(tenant)

    first = post(tenant.client, "/flow-executions", body)
    replay = post(tenant.client, "/flow-executions", body)

    assert first.status_code == 201, first.content
    assert_replay_of(first, replay)
    assert FlowExecution.objects.filter(organization=tenant.org).count() == 1


def test_replay_ignores_a_trailing_slash_and_the_order_of_body_keys(tenant):
    first = post(tenant.client, "/flows", {"name": "review", "definition": DEFINITION})
    replay = post(tenant.client, "/flows/", {"definition": DEFINITION, "name": "review"})

    assert first.status_code == 201, first.content
    assert_replay_of(first, replay)
    assert Flow.objects.filter(organization=tenant.org).count() == 1


def test_same_key_with_a_different_body_is_a_422_and_writes_nothing(tenant):
    assert post(tenant.client, "/flow-executions", start_body(tenant)).status_code == 201

    response = post(tenant.client, "/flow-executions", start_body(tenant, input={"document": "b"}))

    body = assert_error(response, 422, "validation_error")
    assert problems(body) == {("header", "Idempotency-Key"): "idempotency_key_reused"}
    assert "different request" in body["detail"][0]["msg"]
    assert FlowExecution.objects.filter(organization=tenant.org).count() == 1


def test_same_key_on_another_endpoint_is_a_422(tenant):
    assert post(tenant.client, "/flows", {"name": "a", "definition": DEFINITION}).status_code == 201

    response = post(tenant.client, "/flow-executions", start_body(tenant))

    assert_error(response, 422, "validation_error")
    assert FlowExecution.objects.count() == 0


def test_same_key_from_a_key_acting_as_a_user_is_a_different_request(tenant):
    body = start_body(tenant)
    assert post(tenant.client, "/flow-executions", body).status_code == 201
    user_key = create_api_key(tenant.org, kind=ApiKey.Kind.USER, user_id=uuid.uuid4())
    user_client = APIClient()
    user_client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_key.secret}")

    response = post(user_client, "/flow-executions", body)

    assert_error(response, 422, "validation_error")
    assert FlowExecution.objects.count() == 1


def test_keys_are_per_organization(tenant, other_tenant):
    body = {"name": "review", "definition": DEFINITION}

    ours = post(tenant.client, "/flows", body)
    theirs = post(other_tenant.client, "/flows", body)

    assert ours.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs
    assert ours.json()["id"] != theirs.json()["id"]
    assert Flow.objects.filter(organization=tenant.org).count() == 1
    assert Flow.objects.filter(organization=other_tenant.org).count() == 1


def test_replayed_put_does_not_apply_the_change_twice(tenant):
    output = tenant.task_output()
    path = f"/task-outputs/{output.id}"
    body = dict(tenant.client.get(path).json(), summary={"pages": 2})
    body.pop("updated_at")  # last write wins: a second PUT would save again

    first = tenant.client.put(path, body, format="json", HTTP_IDEMPOTENCY_KEY=KEY)
    saved_at = TaskOutput.objects.get(pk=output.pk).updated_at
    replay = tenant.client.put(path, body, format="json", HTTP_IDEMPOTENCY_KEY=KEY)

    assert first.status_code == 200, first.content
    assert first.json()["summary"] == {"pages": 2}
    assert_replay_of(first, replay)
    assert TaskOutput.objects.get(pk=output.pk).updated_at == saved_at


def test_replayed_patch_answers_the_first_response(tenant):
    flow = tenant.flow()
    path = f"/flows/{flow.id}"

    first = tenant.client.patch(
        path, {"description": "v2"}, format="json", HTTP_IDEMPOTENCY_KEY=KEY
    )
    replay = tenant.client.patch(
        path, {"description": "v2"}, format="json", HTTP_IDEMPOTENCY_KEY=KEY
    )

    assert first.status_code == 200, first.content
    assert_replay_of(first, replay)


def test_a_4xx_first_response_is_replayed_as_the_same_4xx(tenant):
    body = {"name": "broken", "definition": "tasks: [{name: a, type: nope}]"}

    first = post(tenant.client, "/flows", body)
    replay = post(tenant.client, "/flows", body)

    assert_error(first, 422, "validation_error")
    assert_replay_of(first, replay)
    assert Flow.objects.count() == 0


def test_an_expired_key_does_the_work_again(tenant):
    body = start_body(tenant)
    first = post(tenant.client, "/flow-executions", body)
    expire()

    again = post(tenant.client, "/flow-executions", body)

    assert again.status_code == 201, again.content
    assert "Idempotent-Replayed" not in again
    assert again.json()["id"] != first.json()["id"]
    assert FlowExecution.objects.count() == 2
    assert IdempotencyKey.objects.get().expires_at > timezone.now()


def test_a_5xx_releases_the_key_so_a_retry_does_the_work(tenant, monkeypatch):
    body = {"name": "review", "definition": DEFINITION}
    create_flow = flows.services.create_flow
    fired: list[str] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        fired.append("create_flow")
        raise RuntimeError("database went away mid-request")

    monkeypatch.setattr(flows.services, "create_flow", broken)
    failed = post(tenant.client, "/flows", body)
    monkeypatch.setattr(flows.services, "create_flow", create_flow)
    assert fired == ["create_flow"], "the injected failure did not happen"
    retried = post(tenant.client, "/flows", body)

    assert_error(failed, 500, "internal_error")
    assert retried.status_code == 201, retried.content
    assert "Idempotent-Replayed" not in retried
    assert Flow.objects.count() == 1
    assert IdempotencyKey.objects.get().state == IdempotencyKey.State.COMPLETED


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "tab\tkey"])
def test_an_invalid_key_is_a_422_naming_the_header(tenant, key):
    response = post(tenant.client, "/flow-executions", start_body(tenant), key=key)

    body = assert_error(response, 422, "validation_error")
    assert list(problems(body)) == [("header", "Idempotency-Key")]
    assert FlowExecution.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def test_a_key_of_255_printable_characters_is_accepted(tenant):
    key = "~ " + "k" * 253
    response = post(tenant.client, "/flows", {"name": "a", "definition": DEFINITION}, key=key)

    assert response.status_code == 201, response.content
    assert IdempotencyKey.objects.get().key == key


def test_get_and_delete_ignore_the_header(tenant):
    flow = tenant.flow()

    listed = tenant.client.get("/flows", HTTP_IDEMPOTENCY_KEY="")
    deleted = tenant.client.delete(f"/flows/{flow.id}", HTTP_IDEMPOTENCY_KEY=KEY)

    assert listed.status_code == 200
    assert deleted.status_code == 204
    assert IdempotencyKey.objects.count() == 0


def test_a_request_without_the_header_is_not_recorded(tenant):
    assert post(tenant.client, "/flows", {"name": "a", "definition": DEFINITION}, key=None)
    assert IdempotencyKey.objects.count() == 0


def test_the_key_costs_a_constant_few_queries(tenant):
    body = start_body(tenant)
    with CaptureQueriesContext(connection) as plain:
        post(tenant.client, "/flow-executions", body, key=None)
    with CaptureQueriesContext(connection) as keyed:
        post(tenant.client, "/flow-executions", body)
    with CaptureQueriesContext(connection) as replayed:
        post(tenant.client, "/flow-executions", body)

    # Claim (an insert) and store the response: each its own transaction with the row-level
    # security scope set (and, nested in the test's transaction, a savepoint and the outer
    # scope restored): at most 5 statements each.
    assert len(keyed) - len(plain) <= 10, [query["sql"] for query in keyed]
    # authentication, the failed claim and the read of the stored response (each scoped)
    assert len(replayed) <= 16, [query["sql"] for query in replayed]


# --- OpenAPI, admin and purge ---------------------------------------------------------------


def test_openapi_documents_the_header_on_every_write(tenant):
    schema = tenant.client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200

    for path, operations in schema.json()["paths"].items():
        for method, operation in operations.items():
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            has_key = "Idempotency-Key" in headers
            assert has_key == (method in {"post", "put", "patch"}), (method, path)
    put = schema.json()["paths"]["/task-outputs/{id}"]["put"]
    parameter = next(p for p in put["parameters"] if p["name"] == "Idempotency-Key")
    assert parameter.get("required", False) is False
    assert parameter["schema"]["maxLength"] == 255
    assert "422" in parameter["description"]
    assert "409" in parameter["description"]


def test_admin_lists_keys_read_only(tenant, admin_client):
    post(tenant.client, "/flows", {"name": "a", "definition": DEFINITION})
    record = IdempotencyKey.objects.get()

    listed = admin_client.get("/admin/tenancy/idempotencykey/")
    shown = admin_client.get(f"/admin/tenancy/idempotencykey/{record.pk}/change/")

    assert listed.status_code == shown.status_code == 200
    assert KEY in listed.content.decode()
    assert "Add idempotency key" not in listed.content.decode()


def test_purge_command_deletes_only_expired_keys(tenant):
    post(tenant.client, "/flows", {"name": "a", "definition": DEFINITION}, key="old")
    post(tenant.client, "/flows", {"name": "b", "definition": DEFINITION}, key="new")
    expire("old")
    out = io.StringIO()

    call_command("purge_idempotency_keys", stdout=out)

    assert out.getvalue().strip() == "deleted 1 expired idempotency key(s)"
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


# --- concurrent duplicates (PostgreSQL) ------------------------------------------------------


def send_in_thread(secret: str, body: dict[str, Any], results: dict[str, Any], name: str) -> Any:
    def run() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            results[name] = post(client, "/flows", body)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("wait_seconds", [10, 0])
def test_concurrent_duplicates_do_the_work_once(tenant, monkeypatch, settings, wait_seconds):
    """The second request arrives while the first is inside the service: it waits for the first
    response (or, with no time to wait, gets a 409); the flow is created once either way."""
    settings.IDEMPOTENCY_WAIT_SECONDS = wait_seconds
    working, second_waits, release = threading.Event(), threading.Event(), threading.Event()
    create_flow, wait_for_completion = flows.services.create_flow, idempotency.wait_for_completion
    calls: list[str] = []

    def slow_create_flow(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["name"])
        working.set()
        assert release.wait(timeout=30)
        return create_flow(*args, **kwargs)

    def observed_wait(*args: Any) -> Any:
        second_waits.set()
        return wait_for_completion(*args)

    monkeypatch.setattr(flows.services, "create_flow", slow_create_flow)
    monkeypatch.setattr(idempotency, "wait_for_completion", observed_wait)
    body = {"name": "review", "definition": DEFINITION}
    results: dict[str, Any] = {}

    first = send_in_thread(tenant.secret, body, results, "first")
    assert working.wait(timeout=30)
    second = send_in_thread(tenant.secret, body, results, "second")
    assert second_waits.wait(timeout=30)
    if wait_seconds == 0:
        second.join(timeout=30)  # answered at once, while the first still works
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)

    assert calls == ["review"]
    assert Flow.objects.filter(organization=tenant.org).count() == 1
    assert results["first"].status_code == 201, results["first"].content
    if wait_seconds:
        assert_replay_of(results["first"], results["second"])
    else:
        body = assert_error(results["second"], 409, "idempotency_key_in_progress")
        assert "still being processed" in body["error"]["message"]
        retry = post(tenant.client, "/flows", {"name": "review", "definition": DEFINITION})
        assert_replay_of(results["first"], retry)
