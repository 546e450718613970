"""Bearer API keys: who gets in, who gets a 401, and what is stored about a key."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from flowplatform.tenancy.models import ApiKey
from flowplatform.tenancy.services import create_api_key, revoke_api_key
from tests.helpers.tenants import Tenant, random_uuid

# Every authenticated route and method; ids are random (a 401 must come before any lookup).
PROTECTED = [
    ("get", "/flows"),
    ("post", "/flows"),
    ("get", "/flows/{id}"),
    ("put", "/flows/{id}"),
    ("patch", "/flows/{id}"),
    ("delete", "/flows/{id}"),
    ("get", "/flows/{id}/versions"),
    ("get", "/flow-executions"),
    ("get", "/flow-executions/{id}"),
    ("delete", "/flow-executions/{id}"),
    ("get", "/task-executions"),
    ("post", "/task-executions"),
    ("get", "/task-executions/{id}"),
    ("put", "/task-executions/{id}"),
    ("patch", "/task-executions/{id}"),
    ("delete", "/task-executions/{id}"),
    ("get", "/task-outputs"),
    ("post", "/task-outputs"),
    ("get", "/task-outputs/{id}"),
    ("put", "/task-outputs/{id}"),
    ("patch", "/task-outputs/{id}"),
    ("delete", "/task-outputs/{id}"),
]


def client_with(authorization: str | None) -> APIClient:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def call(client: APIClient, method: str, path: str):  # type: ignore[no-untyped-def]
    url = path.format(id=random_uuid())
    if method in {"post", "put", "patch"}:
        return getattr(client, method)(url, {}, format="json")
    return getattr(client, method)(url)


def assert_unauthorized(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.content
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"]
    assert body["request_id"] == response["X-Request-ID"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def authorization_headers(tenant: Tenant) -> dict[str, str | None]:
    """Each way a request can fail to authenticate, as the Authorization header it sends."""
    expired = create_api_key(tenant.org, name="expired", expires_at=timezone.now() - timedelta(1))
    revoked = create_api_key(tenant.org, name="revoked")
    revoke_api_key(revoked.api_key)
    random_part = tenant.secret.split("_", 2)[2]
    return {
        "missing": None,
        "empty": "",
        "wrong_scheme": "Basic x",
        "basic_with_real_key": f"Basic {tenant.secret}",
        "bearer_without_key": "Bearer ",
        "unknown_key": "Bearer fp_00000000_" + "a" * 43,
        "not_a_platform_key": "Bearer " + random_part,
        "wrong_secret_valid_prefix": f"Bearer fp_{tenant.key.prefix}_" + "x" * len(random_part),
        "key_with_extra_text": f"Bearer {tenant.secret}x",
        "revoked": f"Bearer {revoked.secret}",
        "expired": f"Bearer {expired.secret}",
    }


FAILURES = [
    "missing",
    "empty",
    "wrong_scheme",
    "basic_with_real_key",
    "bearer_without_key",
    "unknown_key",
    "not_a_platform_key",
    "wrong_secret_valid_prefix",
    "key_with_extra_text",
    "revoked",
    "expired",
]


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_request_without_a_valid_key_is_401_on_every_endpoint(
    tenant: Tenant, failure: str, method: str, path: str
) -> None:
    client = client_with(authorization_headers(tenant)[failure])

    assert_unauthorized(call(client, method, path))


@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize(
    "path", ["/flows", "/flow-executions", "/task-executions", "/task-outputs"]
)
def test_anonymous_list_is_401_with_and_without_trailing_slash(
    anon_client: APIClient, path: str, slash: str
) -> None:
    assert_unauthorized(anon_client.get(path + slash))


def test_valid_key_is_accepted(tenant: Tenant) -> None:
    response = tenant.client.get("/flows")

    assert response.status_code == 200


def test_scheme_is_case_insensitive(tenant: Tenant) -> None:
    response = client_with(f"bearer {tenant.secret}").get("/flows")

    assert response.status_code == 200


def test_key_that_expires_in_the_future_is_accepted(tenant: Tenant) -> None:
    issued = create_api_key(tenant.org, expires_at=timezone.now() + timedelta(days=1))

    response = client_with(f"Bearer {issued.secret}").get("/flows")

    assert response.status_code == 200


def test_revoked_key_stops_working_immediately(tenant: Tenant) -> None:
    assert tenant.client.get("/flows").status_code == 200

    revoke_api_key(tenant.key)

    assert_unauthorized(tenant.client.get("/flows"))
    assert ApiKey.objects.get(pk=tenant.key.pk).revoked_at is not None


def test_revoking_one_key_leaves_the_organizations_other_keys_working(tenant: Tenant) -> None:
    other = create_api_key(tenant.org, name="second")

    revoke_api_key(other.api_key)

    assert tenant.client.get("/flows").status_code == 200
    assert_unauthorized(client_with(f"Bearer {other.secret}").get("/flows"))


def test_key_of_another_organization_cannot_be_combined_with_this_prefix(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    other_secret_part = other_tenant.secret.split("_", 2)[2]

    response = client_with(f"Bearer fp_{tenant.key.prefix}_{other_secret_part}").get("/flows")

    assert_unauthorized(response)


def test_last_used_at_is_set_when_the_key_is_used(tenant: Tenant) -> None:
    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at is None
    before = timezone.now()

    assert tenant.client.get("/flows").status_code == 200

    last_used_at = ApiKey.objects.get(pk=tenant.key.pk).last_used_at
    assert last_used_at is not None
    assert before <= last_used_at <= timezone.now()


def test_failed_attempt_with_a_valid_prefix_does_not_touch_last_used_at(tenant: Tenant) -> None:
    random_part = tenant.secret.split("_", 2)[2]
    client = client_with(f"Bearer fp_{tenant.key.prefix}_" + "x" * len(random_part))

    assert_unauthorized(client.get("/flows"))

    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at is None


def test_stored_key_row_never_contains_the_key(tenant: Tenant) -> None:
    row = ApiKey.objects.filter(pk=tenant.key.pk).values().get()
    random_part = tenant.secret.split("_", 2)[2]

    assert row["key_hash"] != tenant.secret
    for column, value in row.items():
        assert tenant.secret not in str(value), column
        assert random_part not in str(value), column


def test_issued_keys_are_unique(tenant: Tenant) -> None:
    secrets = {create_api_key(tenant.org).secret for _ in range(5)} | {tenant.secret}

    assert len(secrets) == 6


@pytest.mark.parametrize("path", ["/healthz", "/healthz/", "/readyz", "/readyz/"])
def test_health_endpoints_need_no_key(anon_client: APIClient, path: str, db: None) -> None:
    response = anon_client.get(path)

    assert response.status_code == 200
    if path.startswith("/healthz"):
        assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_ignore_a_bad_key(path: str, db: None) -> None:
    response = client_with("Bearer fp_00000000_nope").get(path)

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_api_docs_need_no_key(anon_client: APIClient, path: str, db: None) -> None:
    response = anon_client.get(path)

    assert response.status_code == 200
