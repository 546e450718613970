"""API keys: who a key acts as (`modified_by`), what its scopes let it do, and that a failed
authentication never writes the key into a log."""

from __future__ import annotations

import importlib
import io
import logging
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.exceptions import InvalidInput
from flowplatform.tenancy.models import ApiKey, IdempotencyKey
from flowplatform.tenancy.services import IssuedKey, create_api_key, revoke_api_key
from flows.models import Flow, FlowVersion
from outputs.models import TaskOutput
from tests.helpers.contract import assert_error, problems
from tests.helpers.tenants import DEFINITION, Tenant

pytestmark = pytest.mark.django_db


def client_for(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def issue(tenant: Tenant, **kwargs: Any) -> tuple[APIClient, IssuedKey]:
    issued = create_api_key(tenant.org, **kwargs)
    return client_for(issued.secret), issued


def secret_part(secret: str) -> str:
    """fp_<prefix>_<secret part>: the part that must stay secret."""
    return secret.split("_", 2)[2]


# --- user keys and service keys: who is recorded as modified_by --------------------------------


@pytest.fixture
def user_key(tenant: Tenant) -> tuple[APIClient, uuid.UUID]:
    user_id = uuid.uuid4()
    client, _ = issue(tenant, kind=ApiKey.Kind.USER, user_id=user_id)
    return client, user_id


def output_body(tenant: Tenant, fe: FlowExecution, **fields: Any) -> dict[str, Any]:
    return {
        "flow_execution_id": str(fe.id),
        "organization_id": str(tenant.org.id),
        "task_name": "extract",
        "summary": {"pages": 1},
        "status": "completed",
        **fields,
    }


def test_a_user_key_records_its_user_on_every_write(
    tenant: Tenant, user_key: tuple[APIClient, uuid.UUID]
) -> None:
    client, user_id = user_key
    fe = tenant.flow_execution()
    te = tenant.task_execution(fe)

    created = client.post("/task-outputs", output_body(tenant, fe), format="json")
    patched = client.patch(f"/task-executions/{te.id}", {"output": {"n": 2}}, format="json")
    flow = client.post("/flows", {"name": "mine", "definition": DEFINITION}, format="json")

    assert created.status_code == 201, created.content
    assert patched.status_code == 200, patched.content
    assert flow.status_code == 201, flow.content
    assert created.json()["modified_by"] == str(user_id)
    assert patched.json()["modified_by"] == str(user_id)
    assert flow.json()["modified_by"] == str(user_id)
    assert Correction.objects.get(task_execution=te).modified_by == str(user_id)


def test_a_user_key_may_name_itself_as_modified_by(
    tenant: Tenant, user_key: tuple[APIClient, uuid.UUID]
) -> None:
    client, user_id = user_key
    fe = tenant.flow_execution()

    response = client.post(
        "/task-outputs", output_body(tenant, fe, modified_by=str(user_id)), format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["modified_by"] == str(user_id)


@pytest.mark.parametrize("actor", ["system", "integration", str(uuid.uuid4())])
def test_a_user_key_acting_as_someone_else_is_a_422_and_writes_nothing(
    tenant: Tenant, user_key: tuple[APIClient, uuid.UUID], actor: str
) -> None:
    client, _ = user_key
    fe = tenant.flow_execution()
    te = tenant.task_execution(fe, output={"n": 1})
    before = te.updated_at

    created = client.post(
        "/task-outputs", output_body(tenant, fe, modified_by=actor), format="json"
    )
    patched = client.patch(
        f"/task-executions/{te.id}", {"output": {"n": 2}, "modified_by": actor}, format="json"
    )

    for response in (created, patched):
        body = assert_error(response, 422, "validation_error")
        assert problems(body) == {("body", "modified_by"): "actor_mismatch"}
    assert not TaskOutput.objects.exists()
    te.refresh_from_db()
    assert (te.output, te.updated_at) == ({"n": 1}, before)
    assert not Correction.objects.exists()


@pytest.mark.parametrize(
    "actor", ["system", "integration", "service-account", "123e4567-e89b-12d3-a456-426614174000"]
)
def test_a_service_key_records_the_actor_it_names(tenant: Tenant, actor: str) -> None:
    fe = tenant.flow_execution()

    response = tenant.client.post(
        "/task-outputs", output_body(tenant, fe, modified_by=actor), format="json"
    )

    assert response.status_code == 201, response.content
    assert TaskOutput.objects.get().modified_by == actor


def test_a_service_key_naming_no_actor_records_itself(tenant: Tenant) -> None:
    fe = tenant.flow_execution()

    response = tenant.client.post("/task-outputs", output_body(tenant, fe), format="json")

    assert response.json()["modified_by"] == f"api-key:{tenant.key.prefix}"


@pytest.mark.parametrize("actor", ["", "has space", "-leading-dash", "x" * 201, "a\u0000b"])
def test_a_service_key_naming_an_invalid_actor_is_a_422(tenant: Tenant, actor: str) -> None:
    fe = tenant.flow_execution()

    response = tenant.client.post(
        "/task-outputs", output_body(tenant, fe, modified_by=actor), format="json"
    )

    assert ("body", "modified_by") in problems(assert_error(response, 422, "validation_error"))
    assert not TaskOutput.objects.exists()


# --- scopes -----------------------------------------------------------------------------------


def test_keys_have_both_scopes_unless_issued_with_fewer(tenant: Tenant) -> None:
    assert tenant.key.scopes == ["read", "write"]
    assert create_api_key(tenant.org, scopes=["write", "read", "read"]).api_key.scopes == [
        "read",
        "write",
    ]
    assert create_api_key(tenant.org, scopes=["read"]).api_key.scopes == ["read"]
    assert ApiKey.objects.get(pk=tenant.key.pk).scopes == ["read", "write"]


@pytest.mark.parametrize("scopes", [[], ["admin"], ["read", "delete"], ["READ"]])
def test_a_key_with_no_or_unknown_scopes_is_not_issued(tenant: Tenant, scopes: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        create_api_key(tenant.org, name="bad", scopes=scopes)

    assert caught.value.errors[0][0] == ("body", "scopes")
    assert not ApiKey.objects.filter(name="bad").exists()


@pytest.fixture
def rows(tenant: Tenant) -> dict[str, Any]:
    """A flow, a flow execution, a completed attempt of `extract` and its output."""
    flow = tenant.flow()
    fe = tenant.flow_execution(flow)
    te = tenant.task_execution(fe, output={"pages": 1})
    output = tenant.task_output(fe, status="completed")
    return {"flow": flow, "fe": fe, "te": te, "output": output, "org": str(tenant.org.id)}


# (method, path, body): every kind of write, each one a valid request a write key gets done.
WRITES: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("post", "/flows", lambda r: {"name": "another", "definition": DEFINITION}),
    ("put", "/flows/{flow}", lambda r: {"name": "renamed", "definition": DEFINITION}),
    ("patch", "/flows/{flow}", lambda r: {"description": "changed"}),
    ("delete", "/flows/{flow}", lambda r: None),
    ("post", "/flow-executions", lambda r: {"flow_id": str(r["flow"].id)}),
    ("delete", "/flow-executions/{fe}", lambda r: None),
    ("post", "/flow-executions/{fe}/execute", lambda r: None),
    ("post", "/flow-executions/{fe}/execute?only=stale", lambda r: None),
    (
        "post",
        "/task-outputs",
        lambda r: {
            "flow_execution_id": str(r["fe"].id),
            "organization_id": r["org"],
            "task_name": "extract",
            "summary": {"pages": 2},
        },
    ),
    (
        "put",
        "/task-outputs/{output}",
        lambda r: {
            "id": str(r["output"].id),
            "flow_execution_id": str(r["fe"].id),
            "organization_id": r["org"],
            "task_name": "extract",
            "summary": {"pages": 3},
            "status": "completed",
        },
    ),
    ("patch", "/task-outputs/{output}", lambda r: {"summary": {"pages": 4}}),
    ("delete", "/task-outputs/{output}", lambda r: None),
    (
        "put",
        "/task-executions/{te}",
        lambda r: {
            "id": str(r["te"].id),
            "flow_execution_id": str(r["fe"].id),
            "organization_id": r["org"],
            "task_name": "extract",
            "task_execution_idx": 0,
            "status": "completed",
            "output": {"pages": 5},
        },
    ),
    ("patch", "/task-executions/{te}?execute_flow=true", lambda r: {"output": {"pages": 6}}),
    ("delete", "/task-executions/{te}", lambda r: None),
    (
        "post",
        "/task-executions",
        lambda r: {
            "flow_execution_id": str(r["fe"].id),
            "organization_id": r["org"],
            "task_name": "review",
            "status": "running",
        },
    ),
]
WRITE_IDS = [f"{method.upper()} {path}" for method, path, _ in WRITES]


def send(client: APIClient, rows: dict[str, Any], write: tuple[str, str, Any], **headers: Any):  # type: ignore[no-untyped-def]
    method, path, body = write
    url = path.format(**{name: row.id for name, row in rows.items() if hasattr(row, "id")})
    return getattr(client, method)(url, body(rows), format="json", **headers)


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row the API can write, as stored."""
    models = [Flow, FlowVersion, FlowExecution, TaskExecution, TaskOutput, Correction]
    return {
        model.__name__: sorted(model.objects.values(), key=lambda row: str(row["id"]))
        for model in [*models, IdempotencyKey]
    }


@pytest.mark.parametrize("write", WRITES, ids=WRITE_IDS)
def test_a_read_only_key_is_refused_every_write_and_nothing_is_written(
    tenant: Tenant, rows: dict[str, Any], write: tuple[str, str, Any]
) -> None:
    client, _ = issue(tenant, scopes=["read"])
    before = snapshot()

    response = send(client, rows, write, HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))

    body = assert_error(response, 403, "insufficient_scope")
    assert body["error"]["details"] == {"required_scope": "write", "key_scopes": ["read"]}
    assert "'write' scope" in body["error"]["message"]
    assert snapshot() == before


@pytest.mark.parametrize("write", WRITES, ids=WRITE_IDS)
def test_a_write_only_key_gets_every_write_done(
    tenant: Tenant, rows: dict[str, Any], write: tuple[str, str, Any]
) -> None:
    client, _ = issue(tenant, scopes=["write"])
    before = snapshot()

    response = send(client, rows, write)

    assert 200 <= response.status_code < 300, response.content
    assert snapshot() != before


READS = [
    "/flows",
    "/flows/{flow}",
    "/flows/{flow}/versions",
    "/flow-executions",
    "/flow-executions/{fe}",
    "/task-executions",
    "/task-executions/{te}",
    "/task-outputs",
    "/task-outputs/{output}",
    "/corrections",
]


def read_url(path: str, rows: dict[str, Any]) -> str:
    return path.format(**{name: row.id for name, row in rows.items() if hasattr(row, "id")})


@pytest.mark.parametrize("path", READS)
def test_a_read_only_key_reads_everything(tenant: Tenant, rows: dict[str, Any], path: str) -> None:
    client, _ = issue(tenant, scopes=["read"])

    assert client.get(read_url(path, rows)).status_code == 200
    assert client.head(read_url(path, rows)).status_code == 200
    assert client.options(read_url(path, rows)).status_code == 200


@pytest.mark.parametrize("path", READS)
def test_a_write_only_key_cannot_read(tenant: Tenant, rows: dict[str, Any], path: str) -> None:
    client, _ = issue(tenant, scopes=["write"])

    for method in ("get", "options"):
        body = assert_error(
            getattr(client, method)(read_url(path, rows)), 403, "insufficient_scope"
        )
        assert body["error"]["details"]["required_scope"] == "read"


def test_the_scope_of_a_key_is_checked_after_the_key_itself(
    tenant: Tenant, rows: dict[str, Any]
) -> None:
    """A revoked or expired read-only key is a 401, never a 403 that would confirm the key."""
    revoked = create_api_key(tenant.org, scopes=["read"])
    revoke_api_key(revoked.api_key)
    expired = create_api_key(
        tenant.org, scopes=["read"], expires_at=timezone.now() - timedelta(seconds=1)
    )

    for issued in (revoked, expired):
        response = client_for(issued.secret).delete(f"/flows/{rows['flow'].id}")
        assert_error(response, 401, "unauthorized")
    assert Flow.objects.get(pk=rows["flow"].pk).deleted_at is None


def test_the_scopes_migration_gives_existing_keys_both_scopes() -> None:
    migration = importlib.import_module("flowplatform.tenancy.migrations.0004_apikey_scopes")
    (operation,) = migration.Migration.operations

    assert (operation.model_name, operation.name) == ("apikey", "scopes")
    assert operation.field.get_default() == ["read", "write"]


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("create_api_key", "--org", "acme", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("arguments", "scopes"),
    [
        ([], ["read", "write"]),
        (["--scope", "read"], ["read"]),
        (["--scope", "write"], ["write"]),
        (["--scope", "read,write"], ["read", "write"]),
        (["--scope", "write", "--scope", "read"], ["read", "write"]),
    ],
)
def test_create_api_key_command_issues_keys_with_the_scopes_asked_for(
    tenant: Tenant, arguments: list[str], scopes: list[str]
) -> None:
    output = run_command("--name", "cli", *arguments)

    key = ApiKey.objects.get(name="cli")
    assert key.scopes == scopes
    assert f"scopes {','.join(scopes)}" in output
    secret = output.strip().splitlines()[-1]
    expected = {"read": 200, "write": 403} if scopes == ["read"] else None
    if expected:
        assert client_for(secret).get("/flows").status_code == expected["read"]
        assert client_for(secret).delete(f"/flows/{uuid.uuid4()}").status_code == 403


@pytest.mark.parametrize("scope", ["admin", "read,admin", ",", "Read"])
def test_create_api_key_command_refuses_unknown_scopes(tenant: Tenant, scope: str) -> None:
    with pytest.raises(CommandError, match=r"^--scope: "):  # the command's own argument
        run_command("--name", "cli", "--scope", scope)

    assert not ApiKey.objects.filter(name="cli").exists()


@pytest.fixture
def superuser_client(client: Any, django_user_model: Any) -> Any:
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_the_admin_issues_a_read_only_key(superuser_client: Any, tenant: Tenant) -> None:
    response = superuser_client.post(
        "/admin/tenancy/apikey/add/",
        {"organization": str(tenant.org.id), "name": "ro", "kind": "service", "scopes": ["read"]},
    )

    assert response.status_code == 200
    assert "scopes <code>read</code>" in response.content.decode()
    secret = re.search(r'id="issued-api-key"[^>]*>([^<]+)<', response.content.decode()).group(1)
    assert ApiKey.objects.get(name="ro").scopes == ["read"]
    assert client_for(secret).get("/flows").status_code == 200
    assert client_for(secret).post("/flows", {}, format="json").status_code == 403


def test_the_admin_add_form_offers_both_scopes_ticked_and_needs_one(
    superuser_client: Any, tenant: Tenant
) -> None:
    form = superuser_client.get("/admin/tenancy/apikey/add/").content.decode()
    assert re.search(r'name="scopes" value="read"[^>]*checked', form)
    assert re.search(r'name="scopes" value="write"[^>]*checked', form)

    response = superuser_client.post(
        "/admin/tenancy/apikey/add/",
        {"organization": str(tenant.org.id), "name": "none", "kind": "service"},
    )

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not ApiKey.objects.filter(name="none").exists()


def test_the_openapi_description_says_a_403_can_come_from_a_keys_scope(
    anon_client: APIClient,
) -> None:
    description = anon_client.get("/api/schema/?format=json").json()["info"]["description"]

    assert "403" in description
    assert "insufficient_scope" in description
    assert "read" in description
    assert "write" in description


# --- logs never hold a key --------------------------------------------------------------------


def test_failed_authentications_are_logged_without_any_part_of_the_secret(
    tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    revoked = create_api_key(tenant.org)
    revoke_api_key(revoked.api_key)
    expired = create_api_key(tenant.org, expires_at=timezone.now() - timedelta(days=1))
    foreign_token = "ghp_" + "Zq8pLm3Rt7Vx2Nc5Bw9Ky4Hd6Fs1Jg0QaXe"  # another service's secret
    presented = {
        "wrong secret": f"fp_{tenant.key.prefix}_{'x' * 43}",
        "extra text": f"{tenant.secret}x",
        "revoked": revoked.secret,
        "expired": expired.secret,
        "no platform prefix": secret_part(tenant.secret),
        "foreign token": foreign_token,
        "prefix only": f"fp_{secret_part(tenant.secret)}",
    }
    secrets = [
        secret_part(tenant.secret),
        secret_part(revoked.secret),
        secret_part(expired.secret),
        foreign_token,
    ]
    caplog.set_level(logging.DEBUG)

    for raw in presented.values():
        assert client_for(raw).get("/flows").status_code == 401
        assert client_for(raw).post("/flows", {"name": "x"}, format="json").status_code == 401

    failures = [r for r in caplog.records if r.name == "flowplatform.auth"]
    assert len(failures) == 2 * len(presented)  # every failure is logged …
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    for secret in secrets:  # … and no 8 characters in a row of any secret are
        windows = {secret[i : i + 8] for i in range(len(secret) - 7)}
        assert not [window for window in windows if window in logged], secret
    assert f"fp_{tenant.key.prefix}_" in logged  # the public prefix says which key was tried
