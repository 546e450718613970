"""Upgrades in the operators' admin (issue item 3): a flow execution's "Upgrade to another
version" page (form → dry run → confirm with the preview token), a flow version's "Upgrade
executions to this version" page (form → dry-run job → confirm → the job's page), the upgrade
jobs read-only, and all of it scoped to the staff user's organizations."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.corrections import upgrade_jobs
from executions.models import Correction, FlowExecution, UpgradeJob
from executions.services import start_flow_execution
from flowplatform.tenancy.models import UserIdentity
from flows.models import Flow, FlowVersion
from flows.services import update_flow
from tests.helpers.corrections import correct_as_key
from tests.helpers.flows import latest
from tests.helpers.tenants import DEFINITION

pytestmark = pytest.mark.django_db(transaction=True)

UPGRADE = "/admin/executions/flowexecution/{}/upgrade/"
FE_CHANGE = "/admin/executions/flowexecution/{}/change/"
NEW_JOB = "/admin/executions/upgradejob/new/{}/"
JOB = "/admin/executions/upgradejob/{}/change/"


def chain(b_expression: str = "v") -> str:
    """a → b → c, and a → side."""
    tasks = [
        {"name": "a", "type": "transform", "input": {"v": "${{ flow.input.v }}"}},
        {
            "name": "b",
            "type": "transform",
            "input": {"v": "${{ tasks.a.output.v }}"},
            "config": {"expression": b_expression},
        },
        {"name": "c", "type": "transform", "input": {"b": "${{ tasks.b.output }}"}},
        {"name": "side", "type": "transform", "input": {"a": "${{ tasks.a.output }}"}},
    ]
    return yaml.safe_dump({"tasks": tasks})


def flow_of(tenant: Any, definition: str = "", runs: int = 1) -> tuple[Flow, list[str]]:
    """A flow (version 1) and `runs` completed executions of it."""
    flow = tenant.flow(name="chain", definition=definition or chain())
    return flow, [run(tenant, flow) for _ in range(runs)]


def run(tenant: Any, flow: Flow) -> str:
    fe = start_flow_execution(tenant.org, flow_id=flow.id, input={"v": 3}, actor="system")
    return str(fe.pk)


def new_version(flow: Flow, definition: str = "") -> FlowVersion:
    return update_flow(
        Flow.objects.get(pk=flow.pk), actor="t", definition=definition or chain("{d: [v, v]}")
    ).current_version


def hidden_fields(page: str) -> dict[str, list[str]]:
    """The hidden inputs of the confirm form (every value of a repeated name)."""
    values: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page):
        if name != "csrfmiddlewaretoken":
            values.setdefault(name, []).append(html.unescape(value))
    return values


def preview(client: Any, fe: str, **fields: Any) -> Any:
    data = {"to_version": "2", "reason": "b had a bug", **fields, "_preview": "Preview"}
    return client.post(UPGRADE.format(fe), data)


def confirm(client: Any, url: str, page: Any) -> Any:
    return client.post(url, {**hidden_fields(page.content.decode()), "_confirm": "Confirm"})


def version_of(fe: str) -> int:
    return FlowExecution.objects.get(pk=fe).flow_version.version


def upgrade_corrections(fe: str | None = None) -> Any:
    rows = Correction.objects.filter(operation=Correction.Operation.UPGRADE)
    return rows.filter(flow_execution_id=fe) if fe else rows


# --- One flow execution -----------------------------------------------------------------------


def test_the_change_page_links_to_a_form_offering_the_other_versions(client, tenant, superuser):
    flow, [fe] = flow_of(tenant)
    new_version(flow)
    new_version(flow, chain("{t: [v, v, v]}"))
    change = client.get(FE_CHANGE.format(fe)).content.decode()
    assert f'href="{UPGRADE.format(fe)}"' in change
    page = client.get(UPGRADE.format(fe)).content.decode()
    options = re.findall(r'<option value="(\d+)"( selected)?', page)
    assert options == [("3", " selected"), ("2", "")]  # not the pinned version 1; latest first
    assert 'name="execute_flow"' in page
    assert 'name="reason"' in page


def test_the_preview_shows_the_dry_run_and_writes_nothing(client, tenant, superuser):
    flow, [fe] = flow_of(tenant)
    new_version(flow)
    response = preview(client, fe, execute_flow="on")
    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(r"Changed tasks \(1\).*<code>b</code>: config", page, re.DOTALL)
    assert re.search(r'Would go stale \(2\)</th><td id="upgrade-stale">b, c<', page)
    assert re.search(r'Would run \(2\)</th><td id="upgrade-run">b, c', page)
    assert re.search(r'Added tasks \(0\)</th><td id="upgrade-added">none', page)
    fields = hidden_fields(page)
    assert len(fields["preview_token"][0]) >= 32
    assert fields["to_version"] == ["2"]
    assert fields["execute_flow"] == ["True"]
    assert 'name="_confirm"' in page
    assert version_of(fe) == 1
    assert not upgrade_corrections().exists()


def test_confirm_upgrades_exactly_once_with_an_admin_correction(client, tenant, superuser):
    flow, [fe] = flow_of(tenant)
    new_version(flow)
    page = preview(client, fe, execute_flow="on")
    response = confirm(client, UPGRADE.format(fe), page)
    assert response.status_code == 302
    assert response.url == FE_CHANGE.format(fe)
    [record] = upgrade_corrections(fe)
    identity = str(UserIdentity.objects.get(user=superuser).uuid)
    assert (record.source, record.modified_by, record.reason) == ("admin", identity, "b had a bug")
    assert (record.before, record.after) == ({"flow_version": 1}, {"flow_version": 2})
    assert record.changes == {"changed": {"b": ["config"]}, "added": [], "removed": []}
    assert record.stale_tasks == ["b", "c"]
    assert version_of(fe) == 2
    assert latest(fe, "c").output == {"b": {"d": [3, 3]}}  # re-run on the new version
    shown = client.get(response.url).content.decode()
    assert "Upgraded from version 1 to 2: 2 task(s) marked stale (b, c)" in shown

    again = confirm(client, UPGRADE.format(fe), page)  # the same form sent twice
    assert again.status_code == 200
    assert upgrade_corrections(fe).count() == 1
    assert version_of(fe) == 2


def test_a_stale_preview_token_applies_nothing_and_shows_the_fresh_preview(
    client, tenant, superuser
):
    flow, [fe] = flow_of(tenant)
    new_version(flow)
    page = preview(client, fe)
    old_token = hidden_fields(page.content.decode())["preview_token"]
    assert correct_as_key(tenant, latest(fe, "a"), {"v": 5}).status_code == 200  # meanwhile
    response = confirm(client, UPGRADE.format(fe), page)
    assert response.status_code == 200
    shown = response.content.decode()
    assert "changed since your preview" in shown
    assert 'id="upgrade-preview"' in shown
    assert hidden_fields(shown)["preview_token"] != old_token
    assert version_of(fe) == 1
    assert not upgrade_corrections().exists()
    assert confirm(client, UPGRADE.format(fe), response).status_code == 302  # the fresh one
    assert version_of(fe) == 2


def test_a_refused_upgrade_is_an_error_message_and_writes_nothing(client, tenant, superuser):
    flow = tenant.flow(name="review")  # extract → review, a human task: still waiting
    fe = run(tenant, flow)
    new_version(flow, DEFINITION.replace("type: transform", "type: transform\n    config: {}"))
    response = preview(client, fe)
    assert response.status_code == 200
    shown = response.content.decode()
    assert "Cannot upgrade: the flow execution has queued or running attempts" in shown
    assert 'id="upgrade-preview"' not in shown
    assert 'name="_preview"' in shown  # the form again
    forged = {"to_version": "2", "preview_token": "x" * 64, "_confirm": "Confirm"}
    response = client.post(UPGRADE.format(fe), forged)
    assert "Not upgraded: the flow execution has queued or running attempts" in (
        response.content.decode()
    )
    assert version_of(fe) == 1
    assert not upgrade_corrections().exists()


def test_a_flow_with_one_version_has_nothing_to_offer(client, tenant, superuser):
    _, [fe] = flow_of(tenant)
    page = client.get(UPGRADE.format(fe)).content.decode()
    assert "no other version" in page
    assert 'name="_preview"' not in page


# --- Many: a flow version's executions ----------------------------------------------------------


def test_the_flow_version_page_dry_runs_then_starts_a_job(client, tenant, superuser):
    flow, fes = flow_of(tenant, runs=3)
    version = new_version(flow)
    on_two = run(tenant, flow)  # already on version 2: skipped
    change = client.get(f"/admin/flows/flowversion/{version.pk}/change/").content.decode()
    assert f'href="{NEW_JOB.format(version.pk)}"' in change
    flow_page = client.get(f"/admin/flows/flow/{flow.pk}/change/").content.decode()
    assert f'href="{NEW_JOB.format(version.pk)}"' in flow_page
    assert client.get(NEW_JOB.format(version.pk)).status_code == 200

    data = {"execute_flow": "on", "reason": "b had a bug", "_preview": "Dry run"}
    page = client.post(NEW_JOB.format(version.pk), data)
    assert page.status_code == 200
    shown = page.content.decode()
    assert '<td id="count-matched">4</td>' in shown
    assert '<td id="count-upgraded">3</td>' in shown
    assert re.search(r'id="count-skipped">1 — <code>already_on_version</code>: 1<', shown)
    assert '<td id="count-failed">0</td>' in shown
    assert shown.count('class="upgrade-item"') == 4
    assert shown.count('data-outcome="upgraded"') == 3
    [dry] = UpgradeJob.objects.all()
    assert (dry.dry_run, dry.source, dry.status) == (True, "admin", "completed")
    assert all(version_of(fe) == 1 for fe in fes)  # a dry run
    assert not upgrade_corrections().exists()

    response = confirm(client, NEW_JOB.format(version.pk), page)
    assert response.status_code == 302
    job = UpgradeJob.objects.get(dry_run=False)
    assert response.url == JOB.format(job.pk)
    assert (job.source, job.execute_flow, job.reason, job.status) == (
        "admin",
        True,
        "b had a bug",
        "completed",  # the embedded backend ran it when the request committed
    )
    assert (job.matched, job.upgraded, job.skipped, job.failed) == (4, 3, 1, 0)
    assert all(version_of(fe) == 2 for fe in [*fes, on_two])
    records = upgrade_corrections()
    assert records.count() == 3
    assert {(r.source, r.upgrade_job_id) for r in records} == {("admin", job.pk)}

    job_page = client.get(response.url).content.decode()
    assert "Upgrade job started: 4 execution(s) matched" in job_page
    assert '<td id="count-upgraded">3</td>' in job_page
    assert job_page.count('class="upgrade-item"') == 4
    correction_page = client.get(f"/admin/executions/correction/{records[0].pk}/change/")
    assert f"/admin/executions/upgradejob/{job.pk}/change/" in correction_page.content.decode()
    assert '"changed": {"b": ["config"]}' in html.unescape(correction_page.content.decode())


def test_the_filters_narrow_what_the_dry_run_matches(client, tenant, superuser):
    flow, _ = flow_of(tenant, runs=2)
    version = new_version(flow)
    data = {"from_version": "1", "statuses": ["failed", "stale"], "_preview": "Dry run"}
    shown = client.post(NEW_JOB.format(version.pk), data).content.decode()
    assert '<td id="count-matched">0</td>' in shown
    assert "No execution matched." in shown
    assert re.search(r'name="_confirm"[^>]* disabled', shown)
    assert hidden_fields(shown)["statuses"] == ["failed", "stale"]
    data = {"created_after": "2100-01-01T00:00", "created_before": "2000-01-01T00:00"}
    shown = client.post(NEW_JOB.format(version.pk), {**data, "_preview": "x"}).content.decode()
    assert "Must be later than" in shown
    assert UpgradeJob.objects.count() == 1  # the first dry run only


# --- Tenancy --------------------------------------------------------------------------------


def test_another_organizations_staff_cannot_see_or_upgrade(
    client, tenant, other_tenant, staff_of, django_user_model
):
    flow, [fe] = flow_of(tenant)
    version = new_version(flow)
    job = upgrade_jobs.create_job(flow, actor="t", dry_run=True)
    client.force_login(staff_of(other_tenant))
    assert client.get(UPGRADE.format(fe)).status_code == 404
    forged = {"to_version": "2", "preview_token": "x", "_confirm": "Confirm", "_preview": "P"}
    assert client.post(UPGRADE.format(fe), forged).status_code == 404
    assert client.get(NEW_JOB.format(version.pk)).status_code == 404
    assert client.post(NEW_JOB.format(version.pk), {"_confirm": "Confirm"}).status_code == 404
    assert client.get(JOB.format(job.pk)).status_code in (302, 404)
    listed = client.get("/admin/executions/upgradejob/").content.decode()
    assert JOB.format(job.pk) not in listed
    assert (
        'class="upgrade-item"' not in client.get(JOB.format(job.pk), follow=True).content.decode()
    )
    assert version_of(fe) == 1
    assert UpgradeJob.objects.count() == 1

    client.force_login(staff_of(name="nobody"))  # staff of no organization
    assert client.get(UPGRADE.format(fe)).status_code == 403
    assert client.get(NEW_JOB.format(version.pk)).status_code == 403

    client.force_login(staff_of(tenant, name="member"))  # a member upgrades
    page = preview(client, fe)
    assert confirm(client, UPGRADE.format(fe), page).status_code == 302
    assert version_of(fe) == 2
    assert client.get(JOB.format(job.pk)).status_code == 200


# --- Queries ------------------------------------------------------------------------------------


def job_with(tenant: Any, count: int) -> UpgradeJob:
    flow = tenant.flow(name=f"many-{count}", definition=chain())
    FlowExecution.objects.bulk_create(
        FlowExecution(organization=tenant.org, flow=flow, flow_version=flow.current_version)
        for _ in range(count)
    )
    return upgrade_jobs.create_job(flow, actor="t", enqueue=False)


def test_the_job_page_runs_as_many_queries_for_ten_items_as_for_a_hundred(
    client, tenant, superuser
):
    def queries(job: UpgradeJob) -> int:
        client.get(JOB.format(job.pk))  # warm (the user's identity, content types)
        with CaptureQueriesContext(connection) as context:
            page = client.get(JOB.format(job.pk))
        assert page.status_code == 200
        assert page.content.decode().count('class="upgrade-item"') == job.matched
        return len(context.captured_queries)

    assert queries(job_with(tenant, 10)) == queries(job_with(tenant, 100))
