"""Webhook endpoints through every surface people use: the API (/webhook-endpoints, their
deliveries, "send again"), admin and `manage.py webhook_endpoints`, with bad inputs answered in
the standard error shape."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from flowplatform import rls
from flowplatform.tenancy.services import create_api_key
from flowplatform.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.helpers.shell import manage
from tests.helpers.tenants import Tenant
from tests.helpers.webhooks import Receiver

pytestmark = pytest.mark.django_db(transaction=True)  # jobs run when their transaction commits
HUMAN = "name: wait\ntasks:\n  - name: review\n    type: human\n"


@pytest.fixture(autouse=True)
def _webhook_settings(settings: Any) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS = 0.5


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def create(tenant: Tenant, **body: Any) -> Any:
    body = {"url": "http://127.0.0.1:9/hooks", "events": ["flow_execution.settled"], **body}
    return tenant.client.post("/webhook-endpoints", body, format="json")


def errors(response: Any) -> dict[str, str]:
    body = response.json()
    assert set(body) >= {"error", "request_id"}, body
    return {".".join(map(str, item["loc"])): item["msg"] for item in body.get("detail", [])}


# --- API ----------------------------------------------------------------------------------


def test_the_secret_is_generated_shown_once_and_never_again(tenant):
    response = create(tenant, description="ops")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["flow_execution.settled"]
    assert created["enabled"] is True
    for read in (
        tenant.client.get(f"/webhook-endpoints/{created['id']}"),
        tenant.client.get("/webhook-endpoints"),
        tenant.client.patch(
            f"/webhook-endpoints/{created['id']}", {"enabled": False}, format="json"
        ),
    ):
        assert read.status_code == 200
        assert "secret" not in str(read.json()), read.json()


def test_a_secret_given_is_kept_and_not_returned_on_change(tenant):
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    created = create(tenant, secret=secret).json()
    with rls.tenant_scope(tenant.org):
        assert WebhookEndpoint.objects.get(pk=created["id"]).secret == secret


def test_list_retrieve_update_delete(tenant):
    created = create(tenant).json()
    listed = tenant.client.get("/webhook-endpoints").json()
    assert [e["id"] for e in listed["results"]] == [created["id"]]
    put = tenant.client.put(
        f"/webhook-endpoints/{created['id']}",
        {"url": "https://127.0.0.1/new", "events": ["correction.applied", "correction.settled"]},
        format="json",
    )
    assert put.status_code == 200, put.json()
    assert put.json()["url"] == "https://127.0.0.1/new"
    assert put.json()["events"] == ["correction.applied", "correction.settled"]
    assert tenant.client.delete(f"/webhook-endpoints/{created['id']}").status_code == 204
    assert tenant.client.get(f"/webhook-endpoints/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"url": "http://evil.example/x"}, "body.url", "is not allowed"),
        ({"url": "http://127.0.0.1.evil.example/x"}, "body.url", "is not allowed"),
        ({"url": "ftp://127.0.0.1/x"}, "body.url", "http:// or https://"),
        ({"url": "http://user@127.0.0.1/x"}, "body.url", "user info"),
        ({"events": ["flow.exploded"]}, "body.events.0", "not a valid choice"),
        ({"events": []}, "body.events", "may not be empty"),
        ({"events": ["correction.applied", "correction.applied"]}, "body.events", "twice"),
        ({"secret": "not-base64!"}, "body.secret", "whsec_"),
        ({"secret": "whsec_c2hvcnQ="}, "body.secret", "24 to 64"),
        ({"colour": "blue"}, "body.colour", "Unknown field"),
    ],
)
def test_bad_endpoints_are_a_422_naming_the_field(tenant, body, loc, message):
    response = create(tenant, **body)
    assert response.status_code == 422, response.json()
    assert response.json()["error"]["code"] == "validation_error"
    assert message in errors(response)[loc], errors(response)
    assert not WebhookEndpoint.objects.exists()


def test_another_organizations_endpoint_is_a_404_on_every_route(tenant, other_tenant):
    theirs = create(other_tenant).json()
    for method, path in [
        ("get", f"/webhook-endpoints/{theirs['id']}"),
        ("patch", f"/webhook-endpoints/{theirs['id']}"),
        ("put", f"/webhook-endpoints/{theirs['id']}"),
        ("delete", f"/webhook-endpoints/{theirs['id']}"),
        ("get", f"/webhook-endpoints/{theirs['id']}/deliveries"),
        ("post", f"/webhook-endpoints/{theirs['id']}/deliveries/{uuid.uuid4()}/send-again"),
    ]:
        response = getattr(tenant.client, method)(path, {"enabled": False}, format="json")
        assert response.status_code == 404, (method, path, response.json())
        assert response.json()["error"]["code"] == "not_found"
    assert tenant.client.get("/webhook-endpoints").json()["count"] == 0
    with rls.tenant_scope(other_tenant.org):
        assert WebhookEndpoint.objects.get(pk=theirs["id"]).enabled is True


def test_a_read_only_key_may_list_but_not_create(tenant):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant.org, scopes=['read']).secret}"
    )
    assert client.get("/webhook-endpoints").status_code == 200
    response = client.post(
        "/webhook-endpoints",
        {"url": "http://127.0.0.1/x", "events": ["correction.applied"]},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_the_delivery_log_and_send_again(tenant, receiver):
    endpoint = create(tenant, url=receiver.url, events=["task_execution.waiting"]).json()
    receiver.answers.append(500)
    flow = tenant.client.post("/flows", {"name": "wait", "definition": HUMAN}, format="json")
    tenant.client.post("/flow-executions", {"flow_id": flow.json()["id"]}, format="json")

    log = tenant.client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries").json()
    [delivery] = log["results"]
    assert delivery["event_type"] == "task_execution.waiting"
    assert delivery["status"] == "pending"  # its retry is due later (embedded: no worker)
    assert delivery["attempts"] == 1
    assert "answered 500" in delivery["last_error"]
    assert delivery["latency_ms"] >= 0

    again = tenant.client.post(
        f"/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/send-again"
    )
    assert again.status_code == 202, again.json()
    assert again.json()["status"] == "succeeded"
    assert again.json()["attempts"] == 2
    assert [r.id for r in receiver.requests] == [delivery["event_id"]] * 2

    missing = tenant.client.post(
        f"/webhook-endpoints/{endpoint['id']}/deliveries/{uuid.uuid4()}/send-again"
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Webhook delivery not found"


# --- admin ----------------------------------------------------------------------------------


def test_admin_adds_an_endpoint_and_shows_its_secret_once(client, superuser, tenant):
    response = client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {
            "organization": tenant.org.pk,
            "url": "http://127.0.0.1/admin-hook",
            "events": ["correction.applied", "upgrade_job.finished"],
            "enabled": "on",
            "description": "",
            "secret": "",
        },
    )
    assert response.status_code == 200, response.content[:500]
    assert "no-store" in response["Cache-Control"]
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret in response.content.decode()
    assert endpoint.events == ["correction.applied", "upgrade_job.finished"]
    change = client.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/")
    assert change.status_code == 200
    assert endpoint.secret not in change.content.decode()


def test_admin_refuses_a_host_that_is_not_allowed(client, superuser, tenant):
    response = client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {
            "organization": tenant.org.pk,
            "url": "http://evil.example/",
            "events": ["correction.applied"],
        },
    )
    assert response.status_code == 200
    assert "is not allowed" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_admin_staff_see_only_their_organizations_endpoints(client, tenant, other_tenant, staff_of):
    mine = create(tenant).json()
    theirs = create(other_tenant).json()
    client.force_login(staff_of(tenant))
    listing = client.get("/admin/webhooks/webhookendpoint/").content.decode()
    assert mine["id"] in listing
    assert theirs["id"] not in listing
    assert client.get(f"/admin/webhooks/webhookendpoint/{theirs['id']}/change/").status_code in (
        302,
        404,
    )


def test_admin_sends_a_delivery_again(client, superuser, tenant, receiver):
    create(tenant, url=receiver.url, events=["task_execution.waiting"])
    receiver.answers.append(503)
    flow = tenant.client.post("/flows", {"name": "wait", "definition": HUMAN}, format="json")
    tenant.client.post("/flow-executions", {"flow_id": flow.json()["id"]}, format="json")
    delivery = WebhookDelivery.objects.get()
    response = client.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "send_again", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert response.status_code == 200
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("succeeded", 2)
    assert len(receiver.requests) == 2


# --- the command, as an operator runs it ------------------------------------------------------


def hooks(db: Path, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    """`manage.py webhook_endpoints --org acme ARGS`, with hooks.example.com allowed."""
    allowed = {"FLOWPLATFORM_HTTP_ALLOWED_HOSTS": "hooks.example.com"}
    return manage(db, "webhook_endpoints", "--org", "acme", *args, status=status, env=allowed)


def test_the_command_adds_lists_changes_and_deletes_endpoints(tmp_path):
    db = tmp_path / "hooks.sqlite3"
    manage(db, "migrate", "--noinput", "-v0")
    manage(db, "create_org", "acme")
    added = hooks(
        db, "add", "--url", "https://hooks.example.com/in",
        "--event", "correction.applied,flow_execution.settled",
    ).stdout.splitlines()  # fmt: skip
    assert added[-1].startswith("whsec_")
    endpoint_id = added[0].split()[2]
    listed = hooks(db, "list").stdout
    assert f"{endpoint_id} enabled https://hooks.example.com/in" in listed
    assert "whsec_" not in listed
    hooks(db, "change", endpoint_id, "--disable")
    assert " disabled " in hooks(db, "list").stdout
    assert hooks(db, "deliveries", endpoint_id).stdout == ""
    hooks(db, "delete", endpoint_id)
    assert hooks(db, "list").stdout == ""

    bad = hooks(
        db, "add", "--url", "https://evil.example/",
        "--event", "nope", status=1,
    ).stderr  # fmt: skip
    assert "CommandError: --url: host of 'https://evil.example/' is not allowed" in bad
    assert "--event: 'nope' is not an event type" in bad
    missing = manage(db, "webhook_endpoints", "--org", "nobody", "list", status=1).stderr
    assert "organization 'nobody' does not exist" in missing


def test_a_redirect_is_not_followed_but_counted_a_failure(tenant, receiver):
    endpoint = create(tenant, url=receiver.url, events=["task_execution.waiting"]).json()
    receiver.answers.append(302)
    flow = tenant.client.post("/flows", {"name": "wait", "definition": HUMAN}, format="json")
    tenant.client.post("/flow-executions", {"flow_id": flow.json()["id"]}, format="json")
    [delivery] = tenant.client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries").json()[
        "results"
    ]
    assert len(receiver.requests) == 1
    assert delivery["status"] == "pending"
    assert "redirects are not followed" in delivery["last_error"]


def test_a_bad_webhook_setting_stops_start_up_naming_it(tmp_path):
    bad = {"FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS": "120"}
    shown = manage(tmp_path / "s.sqlite3", "check", status=1, env=bad).stderr
    assert "FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS='120' must be from 0.1 to 60" in shown
