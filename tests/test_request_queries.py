"""Statements per API request: the request is one transaction whose first statement
authenticates the API key and scopes the transaction to its organization (flowplatform.rls
`scope_to_api_key`); then come the view's own queries, as many for one row as for many.

The tests run with real transactions (`transaction=True`), so the counts are those a request
makes in production, BEGIN and COMMIT included. On SQLite a read needs no transaction, and the
key is a plain read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions.models import FlowExecution, TaskExecution
from flowplatform import rls
from flowplatform.tenancy.models import ApiKey
from flowplatform.tenancy.services import authenticate_key, create_api_key, revoke_api_key
from tests.helpers.corrections import run_shape
from tests.helpers.flows import latest
from tests.helpers.tenants import Tenant, random_uuid

pytestmark = pytest.mark.django_db(transaction=True)

SMALL, LARGE = 1, 40


def on(postgresql: int, sqlite: int) -> int:
    return postgresql if connection.vendor == "postgresql" else sqlite


def fan(width: int) -> dict[str, list[str]]:
    """root → x0 … x{width-1}: correcting root makes every x stale."""
    return {"root": [], **{f"x{i}": ["root"] for i in range(width)}}


def captured(request: Callable[[], Any], status: int = 200) -> list[str]:
    """The SQL of one request (BEGIN, COMMIT and savepoints included)."""
    with CaptureQueriesContext(connection) as context:
        response = request()
    assert response.status_code == status, response.content
    return [query["sql"] for query in context.captured_queries]


def add_attempts(flow_execution_id: str, count: int) -> None:
    """`count` more completed attempts in the flow execution (the rows a list filters)."""
    flow_execution = FlowExecution.objects.get(pk=flow_execution_id)
    TaskExecution.objects.bulk_create(
        TaskExecution(
            organization_id=flow_execution.organization_id,
            flow_execution=flow_execution,
            task_name=f"extra-{i}",
            status="completed",
            output={"i": i},
        )
        for i in range(count)
    )


def list_path(tenant: Tenant, rows: int) -> str:
    fe = run_shape(tenant, fan(1))
    add_attempts(fe, rows - 1)
    return f"/task-executions?flow_execution_id={fe}&status=completed,stale&limit=20"


def task_execution_path(tenant: Tenant, rows: int) -> str:
    fe = run_shape(tenant, fan(1))
    add_attempts(fe, rows - 1)
    return f"/task-executions/{latest(fe, 'root').id}"


def flow_execution_path(tenant: Tenant, rows: int) -> str:
    return f"/flow-executions/{run_shape(tenant, fan(rows))}"  # a summary entry per task


# endpoint → (its path with `rows` rows behind it, statements on PostgreSQL, on SQLite)
READS: dict[str, tuple[Callable[[Tenant, int], str], int, int]] = {
    "list task executions, filtered": (list_path, 5, 3),  # COUNT, the page
    "get a task execution": (task_execution_path, 4, 2),
    "get a flow execution": (flow_execution_path, 4, 2),
}


@pytest.mark.parametrize("endpoint", list(READS))
def test_a_read_is_one_transaction_that_authenticates_first_and_does_not_grow_with_rows(
    tenant: Tenant, endpoint: str
) -> None:
    make_path, postgresql, sqlite = READS[endpoint]
    small, large = make_path(tenant, SMALL), make_path(tenant, LARGE)
    tenant.client.get(small)  # the key's first use records last_used_at; keep it out

    for path in (small, large):
        statements = captured(lambda path=path: tenant.client.get(path))

        assert len(statements) == on(postgresql, sqlite), statements
        if connection.vendor == "postgresql":
            assert statements[0] == "BEGIN"
            assert rls.API_KEY_FUNCTION in statements[1]
            assert statements[-1] == "COMMIT"
            assert statements.count("BEGIN") == 1
            assert not [sql for sql in statements if "SAVEPOINT" in sql]
        else:
            assert "tenancy_apikey" in statements[0]


# A correction of root with execute_flow=false that makes every x stale. On PostgreSQL 18 of the
# statements are the request's and the correction's own (BEGIN, the key, the attempt, the
# correction service's savepoint, locks, reads, the Correction row, history, COMMIT), 16 the
# engine's (publishing the output, the summary, marking stale, planning, the status) and 1 the
# webhooks' (does any endpoint want correction events?): a change of the engine changes the
# number, never its growth with the flow.
CORRECTION = {"postgresql": 35, "sqlite": 37}


@pytest.mark.parametrize("width", [2, 12])
def test_a_correction_is_one_transaction_with_a_constant_number_of_statements(
    tenant: Tenant, width: int
) -> None:
    fe = run_shape(tenant, fan(width))
    root = latest(fe, "root")
    body = tenant.client.get(f"/task-executions/{root.id}").json()
    body.update(output={"corrected": width}, status="completed")
    del body["updated_at"]

    statements = captured(
        lambda: tenant.client.put(
            f"/task-executions/{root.id}?execute_flow=false", body, format="json"
        )
    )

    stale = [latest(fe, f"x{i}").status for i in range(width)]
    assert stale == ["stale"] * width
    assert len(statements) == CORRECTION[connection.vendor], statements
    if connection.vendor == "postgresql":
        assert statements[0] == "BEGIN"
        assert rls.API_KEY_FUNCTION in statements[1]
        assert statements[-1] == "COMMIT"
        assert statements.count("BEGIN") == 1


def test_the_keys_use_is_recorded_once_per_period_in_a_transaction_after_the_request(
    tenant: Tenant, settings: Any
) -> None:
    path = task_execution_path(tenant, SMALL)
    ApiKey.objects.filter(pk=tenant.key.pk).update(last_used_at=None)  # as if never used
    first = captured(lambda: tenant.client.get(path))
    recorded = ApiKey.objects.get(pk=tenant.key.pk).last_used_at
    again = captured(lambda: tenant.client.get(path))

    assert recorded is not None
    assert len(first) == len(again) + on(4, 3)  # BEGIN, (the scope,) the UPDATE, COMMIT
    assert [sql for sql in first if sql.startswith('UPDATE "tenancy_apikey"')]
    assert not [sql for sql in again if "UPDATE" in sql]
    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at == recorded

    period = timedelta(seconds=settings.FLOWPLATFORM_KEY_USAGE_RESOLUTION_SECONDS)
    ApiKey.objects.filter(pk=tenant.key.pk).update(last_used_at=recorded - period)
    captured(lambda: tenant.client.get(f"/task-executions/{random_uuid()}"), status=404)
    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at > recorded  # an error answer too


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=False)
def test_the_key_statement_scopes_a_transaction_only_to_an_active_keys_organization(
    tenant: Tenant, other_tenant: Tenant, strict_rls: None
) -> None:
    with rls.tenant_scope(tenant.org):
        revoked = create_api_key(tenant.org, name="revoked")
        revoke_api_key(revoked.api_key)
        expired = create_api_key(tenant.org, expires_at=timezone.now() - timedelta(seconds=1))
    wrong_digest = f"{tenant.secret[:-4]}xxxx"

    for refused in (wrong_digest, revoked.secret, expired.secret, "fp_00000000_unknown"):
        with rls.key_scope():
            assert authenticate_key(refused) is None
            assert settings_now() == ("", "off")
            assert ApiKey.objects.count() == 0

    with rls.key_scope():
        api_key = authenticate_key(tenant.secret)
        assert api_key.pk == tenant.key.pk
        assert api_key.organization == tenant.org
        assert settings_now() == (str(tenant.org.pk), "off")
        assert set(ApiKey.objects.values_list("organization_id", flat=True)) == {tenant.org.pk}
        assert not transaction.get_rollback()
    assert settings_now() == ("", "off")  # transaction-local: gone with the transaction


def settings_now() -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting(%s, true), current_setting(%s, true)",
            [rls.ORGANIZATION_SETTING, rls.BYPASS_SETTING],
        )
        organization, bypass = cursor.fetchone()
    return organization or "", bypass or ""
