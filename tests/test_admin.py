"""Operators' admin: scoped to members' organizations, corrections through the same service as
the API, a DAG picture, history, API keys shown once (issue 6)."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry

from executions.dag_svg import COLOURS
from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.tenancy.models import ApiKey, UserIdentity
from flows.models import Flow
from outputs.models import TaskOutput
from tests.helpers.callables import allow_test_callables  # noqa: F401 - autouse fixture
from tests.helpers.corrections import correct_as_key, lossy_chain
from tests.helpers.flows import latest, start_execution

pytestmark = pytest.mark.django_db(transaction=True)

CHANGE = "/admin/executions/taskexecution/{}/change/"


def form_values(client: Any, attempt: TaskExecution) -> dict[str, str]:
    page = client.get(CHANGE.format(attempt.id))
    assert page.status_code == 200
    lock = re.search(r'name="lock" value="([^"]+)"', page.content.decode()).group(1)
    return {"lock": lock, "status": attempt.status, "output": "null", "error": "null"}


def save(client: Any, attempt: TaskExecution, **fields: Any) -> Any:
    data = {**form_values(client, attempt), **fields, "_save": "Save"}
    return client.post(CHANGE.format(attempt.id), data)


# --- Corrections in admin -------------------------------------------------------------------


def test_an_admin_save_is_a_correction_through_the_same_service(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    a = latest(fe, "a")
    response = save(
        client,
        a,
        status="completed",
        output='{"x": 2, "y": 1}',
        execute_flow="on",
        reason="fixed by hand",
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    [record] = Correction.objects.filter(flow_execution_id=fe)
    identity = str(UserIdentity.objects.get(user=superuser).uuid)  # the user's stable UUID
    assert (record.source, record.modified_by, record.reason) == (
        "admin",
        identity,
        "fixed by hand",
    )
    assert record.stale_tasks == ["b", "c"]
    assert latest(fe, "a").modified_by == identity
    assert TaskExecution.history.filter(id=a.id).latest().history_change_reason == "fixed by hand"
    assert latest(fe, "c").task_execution_idx == 1  # re-run with the corrected input
    assert latest(fe, "c").input["up"] == {"x": 2}
    assert FlowExecution.objects.get(pk=fe).status == "completed"


def snapshot(fe: str) -> dict:
    """Everything a correction writes, without ids, timestamps and actors."""

    def rows(queryset: Any, fields: list[str]) -> list:
        return sorted(map(repr, queryset.values_list(*fields)))

    attempt_fields = ["task_name", "task_execution_idx", "status", "input", "output", "error"]
    attempt_fields += ["stale_reason", "stale_upstream_task", "reused_from__task_execution_idx"]
    return {
        "flow_execution": FlowExecution.objects.filter(pk=fe).values_list(
            "status", "task_outputs_summary"
        )[0],
        "attempts": rows(TaskExecution.objects.filter(flow_execution_id=fe), attempt_fields),
        "outputs": rows(
            TaskOutput.objects.filter(flow_execution_id=fe), ["task_name", "output", "status"]
        ),
        "corrections": rows(
            Correction.objects.filter(flow_execution_id=fe),
            ["task_name", "operation", "before", "after", "stale_tasks", "execute_flow"],
        ),
        "history": rows(
            TaskExecution.history.filter(flow_execution_id=fe),
            ["task_name", "task_execution_idx", "status", "output", "history_type"],
        )
        + rows(
            TaskOutput.history.filter(flow_execution_id=fe),
            ["task_name", "status", "output", "history_type"],
        ),
    }


@pytest.mark.parametrize("execute", [False, True])
def test_admin_and_api_corrections_leave_identical_states_and_history(
    client, tenant, superuser, execute
):
    via_api, via_admin = (
        start_execution(tenant, lossy_chain()),
        start_execution(tenant, lossy_chain()),
    )
    query = "?execute_flow=true" if execute else ""
    response = correct_as_key(tenant, latest(via_api, "a"), {"x": 5, "y": 1}, query)
    assert response.status_code == 200
    fields = {"status": "completed", "output": '{"x": 5, "y": 1}'}
    if execute:
        fields["execute_flow"] = "on"
    assert save(client, latest(via_admin, "a"), **fields).status_code == 302
    assert snapshot(via_admin) == snapshot(via_api)
    assert snapshot(via_admin)["history"]  # there is history to compare


def test_a_stale_form_shows_an_error_instead_of_overwriting(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    a = latest(fe, "a")
    values = form_values(client, a)  # the operator opens the form…
    assert correct_as_key(tenant, a, {"x": 9, "y": 9}).status_code == 200  # …someone else corrects
    response = client.post(
        CHANGE.format(a.id), {**values, "status": "completed", "output": '{"x": 0, "y": 0}'}
    )
    assert response.status_code == 200
    assert "Someone changed this task execution since you opened it" in response.content.decode()
    assert latest(fe, "a").output == {"x": 9, "y": 9}
    assert Correction.objects.filter(flow_execution_id=fe).count() == 1


def test_forbidden_transitions_and_bad_json_are_form_errors(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    a = latest(fe, "a")
    response = save(client, a, status="running")  # not offered: a forged form
    assert response.status_code == 200
    assert "Select a valid choice. running is not one of the available choices." in (
        response.content.decode()
    )
    response = save(client, a, status="completed", output="{not json")
    assert response.status_code == 200
    assert "Enter a valid JSON" in response.content.decode()
    assert not Correction.objects.exists()
    assert not LogEntry.objects.exists()


def test_the_change_form_shows_what_a_save_would_make_stale(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    page = client.get(CHANGE.format(latest(fe, "a").id)).content.decode()
    preview = page[page.index('id="correction-preview"') :]
    assert "2 task(s) downstream would be marked stale" in preview
    assert CHANGE.format(latest(fe, "b").id) in preview
    assert CHANGE.format(latest(fe, "c").id) in preview
    last = client.get(CHANGE.format(latest(fe, "c").id)).content.decode()
    assert "Nothing downstream has run" in last


def test_the_change_form_counts_downstream_tasks_that_are_already_stale(client, tenant, superuser):
    """A dependent that ran and is stale already is named, not counted as "nothing has run"."""
    fe = start_execution(tenant, lossy_chain())
    assert save(client, latest(fe, "b"), status="stale").status_code == 302  # b itself stale
    page = client.get(CHANGE.format(latest(fe, "b").id)).content.decode()
    preview = page[page.index('id="correction-preview"') :]
    assert "1 task(s) downstream would be marked stale" in preview  # c
    page = client.get(CHANGE.format(latest(fe, "a").id)).content.decode()
    preview = page[page.index('id="correction-preview"') :]
    assert "1 task(s) downstream would be marked stale; 1 already stale or deleted" in preview
    assert "(stale, stays so)" in preview
    assert "Nothing downstream has run" not in preview


def test_history_keeps_who_changed_what_including_bulk_stale_marking(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    assert save(client, latest(fe, "a"), status="completed", output='{"x": 3}').status_code == 302
    history = TaskExecution.history.filter(flow_execution_id=fe)
    manual = history.filter(task_name="a").latest()
    assert (manual.history_user_id, manual.output, manual.modified_by) == (
        superuser.pk,
        {"x": 3},
        str(UserIdentity.objects.get(user=superuser).uuid),
    )
    assert manual.history_change_reason == "correction (admin)"  # no reason given
    assert manual.prev_record is not None  # the baseline: how it was before the change
    assert manual.prev_record.output == {"x": 1, "y": 1}
    assert manual.diff_against(manual.prev_record).changed_fields
    bulk = history.filter(status="stale")
    assert {h.task_name for h in bulk} == {"b", "c"}
    assert {h.history_change_reason for h in bulk} == {"stale: correction of a"}
    page = client.get(f"/admin/executions/taskexecution/{latest(fe, 'a').id}/history/")
    assert page.status_code == 200
    assert "root" in page.content.decode()
    revert = f"/admin/executions/taskexecution/{latest(fe, 'a').id}/history/{manual.pk}/"
    assert client.get(revert).status_code == 403  # reverting would bypass the service


# --- The DAG picture and actions ------------------------------------------------------------


def test_the_flow_execution_page_shows_the_dag_coloured_by_status(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    assert correct_as_key(tenant, latest(fe, "a"), {"x": 2, "y": 1}).status_code == 200
    page = client.get(f"/admin/executions/flowexecution/{fe}/change/").content.decode()
    begin = page.index('<svg class="flow-dag"')
    svg = page[begin : page.index("</svg>", begin) + len("</svg>")]
    root = ET.fromstring(svg)  # noqa: S314 - our own page; checks it is well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    nodes = {g.get("data-task"): g for g in root.iter(f"{ns}g") if g.get("class") == "dag-node"}
    assert set(nodes) == {"a", "b", "c"}
    expected = {"a": "completed", "b": "stale", "c": "stale"}
    for name, status in expected.items():
        assert nodes[name].get("data-status") == status
        assert nodes[name].find(f"{ns}rect").get("fill") == COLOURS[status][0]
    assert nodes["b"].find(f"{ns}rect").get("stroke-dasharray")  # stale is unmistakable
    links = [a.get("href") for a in root.iter(f"{ns}a")]  # a node: its task's attempts
    assert f"/admin/executions/taskexecution/?flow_execution={fe}&task_name=b" in links
    assert CHANGE.format(latest(fe, "b").id) in page  # the task list's current attempt


def test_reexecute_actions_run_the_flow_or_its_stale_tasks(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    assert correct_as_key(tenant, latest(fe, "a"), {"x": 2, "y": 1}).status_code == 200
    url = "/admin/executions/flowexecution/"
    response = client.post(url, {"action": "reexecute_stale", "_selected_action": [fe]})
    assert response.status_code == 302
    assert [latest(fe, n).task_execution_idx for n in "abc"] == [0, 1, 1]
    response = client.post(url, {"action": "reexecute_flow", "_selected_action": [fe]})
    assert response.status_code == 302
    assert [latest(fe, n).task_execution_idx for n in "abc"] == [1, 2, 2]
    assert FlowExecution.objects.get(pk=fe).status == "completed"


# --- Tenant scoping -------------------------------------------------------------------------


def test_staff_see_and_act_only_on_their_organizations(client, tenant, other_tenant, staff_of):
    mine = start_execution(tenant, lossy_chain())
    theirs = start_execution(other_tenant, lossy_chain())
    assert correct_as_key(other_tenant, latest(theirs, "a"), {"x": 7, "y": 7}).status_code == 200
    foreign_key = other_tenant.key
    client.force_login(staff_of(tenant))

    lists = [
        "/admin/executions/flowexecution/",
        "/admin/executions/taskexecution/",
        "/admin/executions/correction/",
        "/admin/outputs/taskoutput/",
        "/admin/flows/flow/",
        "/admin/flows/flowversion/",
        "/admin/tenancy/apikey/",
        "/admin/tenancy/organization/",
    ]
    foreign = [
        theirs,
        *(str(a.id) for a in TaskExecution.objects.filter(flow_execution_id=theirs)),
        *(str(c.id) for c in Correction.objects.filter(flow_execution_id=theirs)),
        str(foreign_key.prefix),
        other_tenant.org.slug,
    ]
    for url in lists:
        page = client.get(url)
        assert page.status_code == 200, url
        for value in foreign:
            assert value not in page.content.decode(), (url, value)
    assert mine in client.get(lists[0]).content.decode()

    changes = {
        f"/admin/executions/flowexecution/{theirs}/change/",
        CHANGE.format(latest(theirs, "a").id),
        f"/admin/executions/taskexecution/{latest(theirs, 'a').id}/history/",
        f"/admin/executions/correction/{Correction.objects.get(flow_execution_id=theirs).id}/change/",
        f"/admin/outputs/taskoutput/{TaskOutput.objects.filter(flow_execution_id=theirs)[0].id}/change/",
        f"/admin/flows/flow/{Flow.objects.filter(organization=other_tenant.org)[0].id}/change/",
        f"/admin/tenancy/apikey/{foreign_key.id}/change/",
        f"/admin/tenancy/organization/{other_tenant.org.id}/change/",
    }
    for url in changes:
        response = client.get(url)
        assert response.status_code in (302, 403, 404), url  # never shown
        assert str(other_tenant.org.slug) not in response.content.decode()

    before = latest(theirs, "a").output
    response = client.post(CHANGE.format(latest(theirs, "a").id), {"status": "completed"})
    assert response.status_code in (302, 404)
    assert latest(theirs, "a").output == before
    response = client.post(
        "/admin/executions/flowexecution/",
        {"action": "reexecute_flow", "_selected_action": [theirs]},
    )
    assert [latest(theirs, n).task_execution_idx for n in "abc"] == [0, 0, 0]  # untouched
    assert latest(theirs, "b").status == "stale"
    response = client.post(
        "/admin/tenancy/apikey/", {"action": "revoke", "_selected_action": [foreign_key.id]}
    )
    foreign_key.refresh_from_db()
    assert foreign_key.revoked_at is None

    choices = client.get("/admin/flows/flow/add/").content.decode()
    assert tenant.org.slug in choices
    assert other_tenant.org.slug not in choices
    autocomplete = client.get(
        "/admin/autocomplete/",
        {"app_label": "tenancy", "model_name": "apikey", "field_name": "organization", "term": ""},
    )
    assert autocomplete.status_code == 200
    assert [r["id"] for r in autocomplete.json()["results"]] == [str(tenant.org.id)]


def test_staff_without_a_membership_see_nothing(client, tenant, staff_of):
    start_execution(tenant, lossy_chain())
    client.force_login(staff_of())
    assert client.get("/admin/executions/flowexecution/").status_code == 403
    assert "flowexecution" not in client.get("/admin/").content.decode()


def test_a_member_corrects_in_their_organization(client, tenant, staff_of):
    fe = start_execution(tenant, lossy_chain())
    user = staff_of(tenant)
    client.force_login(user)
    response = save(client, latest(fe, "a"), status="completed", output='{"x": 4, "y": 1}')
    assert response.status_code == 302
    assert Correction.objects.get(flow_execution_id=fe).modified_by == str(user.identity.uuid)


# --- API keys and flows ---------------------------------------------------------------------


def test_an_api_key_issued_in_admin_is_shown_once_and_works(client, tenant, superuser):
    response = client.post(
        "/admin/tenancy/apikey/add/",
        {
            "organization": str(tenant.org.id),
            "name": "from-admin",
            "kind": "service",
            "scopes": ["read", "write"],
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = re.search(r'id="issued-api-key"[^>]*>([^<]+)<', response.content.decode()).group(1)
    key = ApiKey.objects.get(name="from-admin")
    assert secret.startswith("fp_")
    assert secret not in key.key_hash
    api = client.__class__()
    assert api.get("/flows", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    assert secret not in client.get(f"/admin/tenancy/apikey/{key.id}/change/").content.decode()
    client.post("/admin/tenancy/apikey/", {"action": "revoke", "_selected_action": [key.id]})
    assert api.get("/flows", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401


def test_a_user_key_needs_a_user(client, tenant, superuser):
    response = client.post(
        "/admin/tenancy/apikey/add/",
        {"organization": str(tenant.org.id), "name": "u", "kind": "user"},
    )
    assert response.status_code == 200
    assert "A user key needs the user" in response.content.decode()
    assert not ApiKey.objects.filter(name="u").exists()


def test_flows_are_validated_as_the_api_validates_them(client, tenant, superuser):
    bad = "tasks:\n  - name: a\n    type: nope\n  - name: b\n    depends_on: [zz]\n"
    response = client.post(
        "/admin/flows/flow/add/",
        {"organization": str(tenant.org.id), "name": "f", "definition": bad},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "unknown type" in page
    assert "zz" in page
    assert not Flow.objects.filter(name="f").exists()

    good = "tasks:\n  - name: a\n    type: transform\n"
    response = client.post(
        "/admin/flows/flow/add/",
        {"organization": str(tenant.org.id), "name": "f", "definition": good},
    )
    assert response.status_code == 302
    flow = Flow.objects.get(name="f")
    assert flow.current_version.version == 1
    assert flow.modified_by == str(UserIdentity.objects.get(user=superuser).uuid)
    changed = good + "  - name: b\n    type: transform\n    depends_on: [a]\n"
    response = client.post(
        f"/admin/flows/flow/{flow.id}/change/",
        {"name": "f", "description": "", "definition": changed},
    )
    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.current_version.version == 2
    page = client.get(f"/admin/flows/flow/{flow.id}/change/").content.decode()
    assert "version 2" in page
    assert "version 1" in page
    assert "depends_on: [a]" in page


def test_unknown_admin_ids_are_not_found(client, superuser):
    response = client.get(CHANGE.format(uuid.uuid4()))
    assert response.status_code == 302  # admin's "doesn't exist" redirect, never a 500


def test_the_api_reexecutes_one_task_and_its_dependents(tenant):
    fe = start_execution(tenant, lossy_chain())
    response = tenant.client.post(f"/flow-executions/{fe}/execute?task=b")
    assert response.status_code == 202, response.json()
    assert [latest(fe, n).task_execution_idx for n in "abc"] == [0, 1, 1]
    response = tenant.client.post(f"/flow-executions/{fe}/execute?task=nope")
    assert response.status_code == 422
    response = tenant.client.post(f"/flow-executions/{fe}/execute?task=b&only=stale")
    assert response.status_code == 422
    assert [latest(fe, n).task_execution_idx for n in "abc"] == [0, 1, 1]


def test_saving_a_flow_without_touching_its_definition_adds_no_version(client, tenant, superuser):
    flow = tenant.flow(name="keep")
    text = flow.current_version.definition
    response = client.post(
        f"/admin/flows/flow/{flow.id}/change/",
        {"name": "keep", "description": "now described", "definition": text.replace("\n", "\r\n")},
    )
    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.description == "now described"
    assert flow.versions.count() == 1
    assert flow.current_version.definition == text


def test_nan_in_a_corrected_output_is_a_form_error_not_a_500(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    response = save(client, latest(fe, "a"), status="completed", output='{"x": NaN}')
    assert response.status_code == 200
    assert "Enter a valid JSON" in response.content.decode()
    assert not Correction.objects.exists()


def test_another_organizations_history_is_not_found(client, tenant, other_tenant, staff_of):
    theirs = start_execution(other_tenant, lossy_chain())
    assert correct_as_key(other_tenant, latest(theirs, "a"), {"x": 7}).status_code == 200
    output = TaskOutput.objects.filter(flow_execution_id=theirs)[0]
    client.force_login(staff_of(tenant))
    for url in (
        f"/admin/executions/taskexecution/{latest(theirs, 'a').id}/history/",
        f"/admin/outputs/taskoutput/{output.id}/history/",
        f"/admin/outputs/taskoutput/{uuid.uuid4()}/history/",
    ):
        assert client.get(url).status_code == 404, url


def test_deleting_a_flow_execution_records_the_cancelled_attempts_in_history(tenant):
    from executions.services import delete_flow_execution

    fe = start_execution(
        tenant,
        [{"name": "a", "type": "transform"}, {"name": "r", "type": "human", "depends_on": ["a"]}],
    )
    delete_flow_execution(FlowExecution.objects.get(pk=fe), actor="ops")
    [row] = TaskExecution.history.filter(flow_execution_id=fe, status="stale")
    assert (row.task_name, row.history_change_reason, row.stale_by) == (
        "r",
        "stale: flow execution deleted",
        "ops",
    )


def test_the_dag_svg_parses_whatever_the_task_names_hold():
    from executions.dag_svg import render_dag_svg
    from flows.dag import Dag

    class Spec:
        dag = Dag.build(["a\x01<b>&", "c"], {"c": ["a\x01<b>&"]})
        tasks = {
            "a\x01<b>&": type("T", (), {"upstream": ()})(),
            "c": type("T", (), {"upstream": ("a\x01<b>&",)})(),
        }

    svg = render_dag_svg(Spec, {"c": "stale"}, lambda task: f"/x?t={task}&y=1")
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert (
        len([g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "dag-node"])
        == 2
    )


def test_the_status_list_offers_only_the_moves_a_person_may_make(client, tenant, superuser):
    fe = start_execution(tenant, lossy_chain())
    page = client.get(CHANGE.format(latest(fe, "a").id)).content.decode()
    select = page[
        page.index('name="status"') : page.index("</select>", page.index('name="status"'))
    ]
    assert re.findall(r'<option value="(\w+)"', select) == ["completed", "deleted", "stale"]
