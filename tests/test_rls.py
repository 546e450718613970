"""PostgreSQL row-level security: even with the application's own filters bypassed, the database
shows a transaction only its organization's rows, and nothing without one.

The suite runs as the application's role (tests/conftest.py). `strict_rls` takes away the test
harness's session-level bypass, so these tests see the database exactly as production does:
every entry point (API, jobs, admin, commands) must set the organization itself.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client, override_settings

from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform import rls
from flowplatform.tenancy.models import ApiKey, IdempotencyKey, Membership
from flows.models import Flow
from outputs.models import TaskOutput
from tests.helpers.database import APP_ROLE, tenant_tables
from tests.helpers.tenants import Tenant

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

CHAIN = """\
name: chain
tasks:
  - name: a
    type: transform
    input: {x: 1}
  - name: b
    type: transform
    depends_on: [a]
    input: "${{ tasks.a.output }}"
  - name: c
    type: transform
    depends_on: [b]
    input: "${{ tasks.b.output }}"
"""


def fetch(sql: str, params: list[Any] | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def api(tenant: Tenant, method: str, path: str, body: Any = None, **headers: Any) -> Any:
    response = getattr(tenant.client, method)(path, body, format="json", **headers)
    assert response.status_code < 300, (path, response.status_code, response.content[:500])
    return response.json() if response.content else None


def populate(tenant: Tenant) -> dict[str, str]:
    """Rows in every tenant table, made the way users make them: through the API (so the
    product's scopes are exercised), plus an admin membership."""
    with override_settings(FLOWPLATFORM_HTTP_ALLOWED_HOSTS=["127.0.0.1:9"]):  # nothing listens
        hook = api(
            tenant,
            "post",
            "/webhook-endpoints",
            {
                "url": "http://127.0.0.1:9/hooks",
                "events": ["correction.applied", "correction.settled"],
            },
        )
    flow = api(tenant, "post", "/flows", {"name": "chain", "definition": CHAIN})
    execution = api(tenant, "post", "/flow-executions", {"flow_id": flow["id"]})
    attempts = api(tenant, "get", f"/task-executions?flow_execution_id={execution['id']}")
    first = next(a for a in attempts["results"] if a["task_name"] == "a")
    api(
        tenant,
        "patch",
        f"/task-executions/{first['id']}?execute_flow=true",
        {"output": {"x": 2}, "reason": "typo"},
        HTTP_IDEMPOTENCY_KEY=f"fix-{tenant.org.slug}",
    )
    outputs = api(tenant, "get", f"/task-outputs?flow_execution_id={execution['id']}&task_name=c")
    api(tenant, "patch", f"/task-outputs/{outputs['results'][0]['id']}", {"tags": ["checked"]})
    staff = get_user_model().objects.create_user(f"staff-{tenant.org.slug}", is_staff=True)
    with rls.tenant_scope(tenant.org):
        Membership.objects.create(user=staff, organization=tenant.org)
    corrections = api(tenant, "get", "/corrections")
    # A second version, and an upgrade job (a dry run: the execution stays as it is).
    api(tenant, "patch", f"/flows/{flow['id']}", {"definition": CHAIN + "    version: '2'\n"})
    job = api(tenant, "post", f"/flows/{flow['id']}/upgrade-executions?dry_run=true", {})
    # A correction that leaves its flow execution stale: its correction.settled waits.
    second = api(tenant, "post", "/flow-executions", {"flow_id": flow["id"]})
    attempts = api(tenant, "get", f"/task-executions?flow_execution_id={second['id']}&task_name=a")
    api(tenant, "patch", f"/task-executions/{attempts['results'][0]['id']}", {"output": {"x": 3}})
    return {
        "flow": flow["id"],
        "flow_execution": execution["id"],
        "task_execution": first["id"],
        "task_output": outputs["results"][0]["id"],
        "correction": corrections["results"][0]["id"],
        "upgrade_job": job["id"],
        "webhook_endpoint": hook["id"],
    }


@pytest.fixture
def two_orgs(tenant: Tenant, other_tenant: Tenant) -> tuple[Tenant, Tenant]:
    tenant.ids = populate(tenant)
    other_tenant.ids = populate(other_tenant)
    return tenant, other_tenant


def counts_by_org() -> dict[str, dict[str, int]]:
    with rls.bypass("test", "counting every organization's rows"):
        return {
            table: dict(
                (str(org), n)
                for org, n in fetch(
                    f"SELECT organization_id, count(*) FROM {table} GROUP BY organization_id"  # noqa: S608
                )
            )
            for table in tenant_tables()
        }


# --- the policies ---------------------------------------------------------------------------


def test_every_tenant_table_has_forced_row_level_security_with_the_tenant_policy():
    tables = tenant_tables()
    assert len(tables) >= 11  # flows, executions, outputs, corrections, history, keys, …
    rows = fetch(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
        "(SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname "
        " AND p.policyname = %s AND p.cmd = 'ALL'), pg_get_userbyid(c.relowner) "
        "FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind = 'r'",
        [rls.POLICY_NAME, list(tables)],
    )
    assert {row[0] for row in rows} == set(tables)
    for table, enabled, forced, policies, owner in rows:
        assert (enabled, forced, policies) == (True, True, 1), table
        assert owner != APP_ROLE, f"{table} is owned by the application's role"


def test_the_application_role_cannot_escape_the_policies():
    [(user, superuser, bypassrls)] = fetch(
        "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert (user, superuser, bypassrls) == (APP_ROLE, False, False)
    with pytest.raises(DatabaseError, match="must be owner"), transaction.atomic():
        fetch("ALTER TABLE executions_taskexecution DISABLE ROW LEVEL SECURITY")


def test_the_policy_reads_the_settings_once_per_query_not_per_row(tenant):
    with rls.tenant_scope(tenant.org):
        plan = "\n".join(row[0] for row in fetch("EXPLAIN SELECT * FROM executions_taskexecution"))
    assert "InitPlan" in plan, plan


def test_the_deploy_check_warns_about_a_role_that_ignores_the_policies():
    assert rls.check_database_role(databases=["default"]) == []  # the application's role
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL ROLE NONE")  # the session user: the owner, a superuser
        [warning] = rls.check_database_role(databases=["default"])
    assert warning.id == "flowplatform.W001"
    assert "row-level security does not apply" in warning.msg


# --- application filtering bypassed -----------------------------------------------------------


def test_raw_selects_see_only_the_scoped_organization(two_orgs, strict_rls):
    mine, theirs = two_orgs
    counts = counts_by_org()
    for table, by_org in counts.items():
        # rows of both organizations in every table, else the test would prove nothing
        assert by_org.get(str(mine.org.pk)), (table, by_org)
        assert by_org.get(str(theirs.org.pk)), (table, by_org)
    with rls.tenant_scope(mine.org):
        for table in tenant_tables():
            orgs = [row[0] for row in fetch(f"SELECT organization_id FROM {table}")]  # noqa: S608
            assert set(orgs) == {mine.org.pk}, table
            assert len(orgs) == counts[table][str(mine.org.pk)], table


def test_model_all_sees_only_the_scoped_organization(two_orgs, strict_rls):
    _, theirs = two_orgs
    with rls.tenant_scope(theirs.org):
        for model in tenant_tables().values():
            orgs = set(model.objects.all().values_list("organization_id", flat=True))
            assert orgs == {theirs.org.pk}, model


def test_without_an_organization_every_tenant_table_reads_as_empty(two_orgs, strict_rls):
    for table, model in tenant_tables().items():
        assert fetch(f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608
        assert not model.objects.exists(), model
    with transaction.atomic():  # a transaction without a scope is no different
        assert not TaskExecution.objects.exists()


def test_the_scope_ends_with_its_transaction(two_orgs, strict_rls):
    mine, _ = two_orgs
    with rls.tenant_scope(mine.org):
        assert Flow.objects.exists()
    assert not Flow.objects.exists()
    assert fetch("SELECT current_setting('app.organization_id', true)") in ([(None,)], [("",)])


def test_several_organizations_can_be_in_scope(two_orgs, strict_rls):
    mine, theirs = two_orgs
    with rls.tenant_scope([mine.org, theirs.org]):
        orgs = set(Flow.objects.values_list("organization_id", flat=True))
    assert orgs == {mine.org.pk, theirs.org.pk}


def test_writes_into_another_organization_are_refused(two_orgs, strict_rls):
    mine, theirs = two_orgs
    theirs_flow = theirs.ids["flow"]
    with rls.tenant_scope(mine.org):
        assert Flow.objects.filter(pk=theirs_flow).update(description="mine") == 0
        assert Flow.objects.filter(pk=theirs_flow).delete()[0] == 0
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            ApiKey.objects.create(
                organization=theirs.org, prefix="deadbeef", key_hash="0" * 64, name="planted"
            )
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            # moving a row of mine into their organization
            Flow.objects.filter(pk=mine.ids["flow"]).update(organization=theirs.org)
    with rls.tenant_scope(theirs.org):
        flow = Flow.objects.get(pk=theirs_flow)
        assert flow.description != "mine"
        assert not ApiKey.objects.filter(name="planted").exists()


def test_the_bypass_sees_everything_and_is_audited(two_orgs, strict_rls, caplog):
    mine, theirs = two_orgs
    with (
        caplog.at_level(logging.INFO, logger="flowplatform.audit"),
        rls.bypass("alice", "a support ticket"),
    ):
        orgs = set(Flow.objects.values_list("organization_id", flat=True))
    assert orgs == {mine.org.pk, theirs.org.pk}
    assert any(
        "bypassed by alice: a support ticket" in record.getMessage() for record in caplog.records
    )


def test_a_nested_scope_gives_the_outer_settings_back(two_orgs, strict_rls):
    mine, theirs = two_orgs
    with rls.tenant_scope(mine.org):
        with rls.tenant_scope(theirs.org):
            assert set(Flow.objects.values_list("organization_id", flat=True)) == {theirs.org.pk}
        assert set(Flow.objects.values_list("organization_id", flat=True)) == {mine.org.pk}


# --- every entry point sets its organization (the database shows nothing otherwise) ----------


def test_the_api_works_under_row_level_security(tenant, strict_rls):
    """Flows, runs (their jobs), corrections with re-execution, lists, idempotent replays."""
    ids = populate(tenant)
    with rls.tenant_scope(tenant.org):
        execution = FlowExecution.objects.get(pk=ids["flow_execution"])
        assert execution.status == "completed"
        corrected = TaskExecution.objects.filter(flow_execution=execution, task_name="c")
        assert corrected.latest("task_execution_idx").output == {"x": 2}
        # the first run's output and the second's (a tags-only edit is not one)
        assert Correction.objects.filter(flow_execution=execution).count() == 1
        assert Correction.objects.count() == 2
        assert IdempotencyKey.objects.get().state == "completed"
    for path in ["/flows", "/flow-executions", "/task-executions", "/task-outputs", "/corrections"]:
        assert api(tenant, "get", path)["count"] >= 1, path
    api(tenant, "post", f"/flow-executions/{ids['flow_execution']}/execute")


def test_cross_tenant_requests_on_every_route_and_method_are_404_and_write_nothing(
    two_orgs, strict_rls
):
    """Every path with an id in the OpenAPI schema, with every method it has, given the other
    organization's object: 404, and their rows are exactly as they were."""
    mine, theirs = two_orgs
    schema = mine.client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    kinds = {
        "flows": "flow",
        "flow-executions": "flow_execution",
        "task-executions": "task_execution",
        "task-outputs": "task_output",
        "corrections": "correction",
        "upgrade-jobs": "upgrade_job",
        "webhook-endpoints": "webhook_endpoint",
    }
    with rls.bypass("test", "snapshot"):
        before = {m: list(m.objects.order_by("pk").values()) for m in tenant_tables().values()}
    tried = 0
    for path, operations in schema["paths"].items():
        if "{" not in path:
            continue
        kind = kinds[path.strip("/").split("/")[0]]
        url = re.sub(r"\{[^}]+\}", theirs.ids[kind], path)
        for method in operations:
            if method not in {"get", "put", "patch", "post", "delete"}:
                continue
            response = getattr(mine.client, method)(url, {"status": "stale"}, format="json")
            assert response.status_code == 404, (method, url, response.content[:300])
            assert response.json()["error"]["code"] == "not_found"
            tried += 1
    assert tried >= 15
    with rls.bypass("test", "snapshot"):
        after = {m: list(m.objects.order_by("pk").values()) for m in tenant_tables().values()}
    for model in before:
        if model not in (ApiKey,):  # last_used_at of the caller's own key may move
            assert after[model] == before[model], model


def test_jobs_run_under_row_level_security(tenant, strict_rls, settings):
    """The embedded backend runs each job after the request's transaction commits: the job
    scopes its own transactions (a db_worker does the same: tests/test_workers.py)."""
    flow = api(tenant, "post", "/flows", {"name": "chain", "definition": CHAIN})
    execution = api(tenant, "post", "/flow-executions", {"flow_id": flow["id"]})
    assert api(tenant, "get", f"/flow-executions/{execution['id']}")["status"] == "completed"
    with rls.tenant_scope(tenant.org):
        assert TaskOutput.objects.filter(flow_execution_id=execution["id"]).count() == 3


def test_admin_staff_see_their_organizations_and_superusers_bypass_audited(
    two_orgs, strict_rls, caplog
):
    mine, theirs = two_orgs
    client = Client()
    url = "/admin/executions/flowexecution/"
    staff = get_user_model().objects.get(username=f"staff-{mine.org.slug}")
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="executions"))
    client.force_login(staff)
    page = client.get(url).content.decode()
    assert mine.ids["flow_execution"] in page
    assert theirs.ids["flow_execution"] not in page
    their_change = f"{url}{theirs.ids['flow_execution']}/change/"
    assert client.get(their_change).status_code in (302, 404)

    superuser = get_user_model().objects.create_superuser("root", password="x")
    client.force_login(superuser)
    with caplog.at_level(logging.INFO, logger="flowplatform.audit"):
        page = client.get(url).content.decode()
    assert mine.ids["flow_execution"] in page
    assert theirs.ids["flow_execution"] in page
    assert any("admin superuser 'root'" in r.getMessage() for r in caplog.records)


def test_admin_corrections_run_under_row_level_security(two_orgs, strict_rls):
    mine, _ = two_orgs
    superuser = get_user_model().objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(superuser)
    response = client.post(
        "/admin/executions/flowexecution/",
        {"action": "reexecute_flow", "_selected_action": [mine.ids["flow_execution"]]},
    )
    assert response.status_code == 302
    with rls.tenant_scope(mine.org):
        latest = TaskExecution.objects.filter(flow_execution_id=mine.ids["flow_execution"])
        assert latest.filter(task_name="c").count() == 3  # first run, correction, re-execution


def test_commands_run_under_row_level_security(two_orgs, strict_rls, tmp_path):
    mine, theirs = two_orgs
    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN.replace("name: chain", "name: loaded"))
    call_command("load_flow", str(path), "--org", mine.org.slug)
    with rls.tenant_scope(mine.org):
        assert Flow.objects.filter(name="loaded").exists()
    with rls.tenant_scope(theirs.org):
        attempt = TaskExecution.objects.filter(
            flow_execution_id=theirs.ids["flow_execution"], task_name="a"
        ).latest("task_execution_idx")
    out = io.StringIO()
    call_command(
        "correct_task",
        str(attempt.pk),
        *("--output", '{"x": 5}', "--execute-flow", "--reason", "t"),
        stdout=out,
    )
    result = json.loads(out.getvalue())
    assert result["started_tasks"] == ["b"]  # the first wave; c follows when b is done
    call_command("reexecute_flow", theirs.ids["flow_execution"], "--stale-only")
    call_command("check_freshness")
    call_command("purge_idempotency_keys")
    call_command("create_api_key", "--org", mine.org.slug, "--name", "cli")
    with rls.tenant_scope(mine.org):
        assert ApiKey.objects.filter(name="cli").exists()
    with rls.tenant_scope(theirs.org):
        latest_c = TaskExecution.objects.filter(
            flow_execution_id=theirs.ids["flow_execution"], task_name="c"
        ).latest("task_execution_idx")
        assert latest_c.output == {"x": 5}


def test_a_job_whose_definition_cannot_be_loaded_fails_its_attempt(tenant, strict_rls, monkeypatch):
    from executions.engine import worker
    from tests.helpers.faults import make_definition_unloadable

    flow = api(tenant, "post", "/flows", {"name": "chain", "definition": CHAIN})
    execution = api(tenant, "post", "/flow-executions", {"flow_id": flow["id"]})
    with rls.tenant_scope(tenant.org):
        attempt = TaskExecution.objects.get(flow_execution_id=execution["id"], task_name="c")
        TaskExecution.objects.filter(pk=attempt.pk).update(status="queued", output=None)
        make_definition_unloadable(attempt.flow_execution.flow_version_id)
    worker.run_attempt(attempt.pk, tenant.org.pk)
    with rls.tenant_scope(tenant.org):
        attempt.refresh_from_db()
    assert attempt.status == "failed"  # not left queued with no job to run it
    # finish() needs the definition too, so the bare fallback records it
    assert attempt.error["type"] == "InvalidInput"


def test_a_job_enqueued_without_its_organization_still_runs(tenant, strict_rls):
    from executions.engine import worker

    flow = api(tenant, "post", "/flows", {"name": "chain", "definition": CHAIN})
    execution = api(tenant, "post", "/flow-executions", {"flow_id": flow["id"]})
    with rls.tenant_scope(tenant.org):
        attempt = TaskExecution.objects.get(flow_execution_id=execution["id"], task_name="a")
        TaskExecution.objects.filter(pk=attempt.pk).update(status="queued", output=None)
    worker.run_attempt(attempt.pk)  # as a job from before organization ids were passed
    with rls.tenant_scope(tenant.org):
        attempt.refresh_from_db()
    assert attempt.status == "completed"
    assert worker.run_attempt(uuid.uuid4()) is None  # a vanished attempt is nothing to do
