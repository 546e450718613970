"""The correction form in admin (issue 19): the JSON editor's markup, the live preview view
(the dry run of the posted values: stale set, predictions, errors as messages; staff, change
permission, tenant scope, CSRF) and the preview token that binds the save to what was shown."""

from __future__ import annotations

import dataclasses
import html
import re
from typing import Any

import pytest
from django.test import Client

from executions.admin import TaskExecutionAdmin
from executions.corrections import task_executions
from executions.corrections.preview import PreviewOutdated
from executions.models import Correction, TaskExecution
from executions.services import delete_flow_execution
from tests.helpers.corrections import correct_as_key
from tests.helpers.flows import latest, start_execution

pytestmark = pytest.mark.django_db(transaction=True)

CHANGE = "/admin/executions/taskexecution/{}/change/"
PREVIEW = "/admin/executions/taskexecution/{}/correction-preview/"
# a → b → c, all pure; b keeps only a's `x`, c reads b and `side`.
CHAIN = [
    {"name": "a", "type": "transform", "input": {"x": 1, "y": 1}},
    {
        "name": "b",
        "type": "transform",
        "input": "${{ tasks.a.output }}",
        "config": {"expression": "{x: x}"},
    },
    {"name": "side", "type": "transform", "input": {"s": 1}},
    {
        "name": "c",
        "type": "transform",
        "input": {"b": "${{ tasks.b.output }}", "side": "${{ tasks.side.output }}"},
    },
]


def form_values(client: Any, attempt: TaskExecution, **fields: str) -> dict[str, str]:
    """What the change form posts: its hidden version, the attempt's values, and `fields`."""
    page = client.get(CHANGE.format(attempt.id))
    assert page.status_code == 200
    lock = re.search(r'name="lock" value="([^"]+)"', page.content.decode()).group(1)
    return {"lock": lock, "status": attempt.status, "output": "null", "error": "null", **fields}


def preview(client: Any, attempt: TaskExecution, **fields: str) -> str:
    response = client.post(PREVIEW.format(attempt.id), form_values(client, attempt, **fields))
    assert response.status_code == 200
    return response.content.decode()


def token_of(fragment: str) -> str:
    return re.search(r'data-preview-token="([^"]*)"', fragment).group(1)


def text_of(fragment: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', fragment, re.DOTALL)
    return html.unescape(found.group(1)).strip()


def state(fe: str) -> list[tuple]:
    """Every attempt and correction of the flow execution, as stored."""
    attempts = TaskExecution.objects.filter(flow_execution_id=fe).order_by("task_name", "id")
    return [
        *attempts.values_list("id", "status", "output", "updated_at"),
        *Correction.objects.filter(flow_execution_id=fe).values_list("id"),
    ]


def test_the_preview_shows_the_stale_set_of_the_posted_values_and_saves_nothing(
    client, tenant, superuser
):
    fe = start_execution(tenant, CHAIN)
    before = state(fe)
    fragment = preview(client, latest(fe, "a"), output='{"x": 2, "y": 1}', execute_flow="on")
    assert text_of(fragment, "preview-stale") == "b, c"
    assert "A save marks 2 task(s) stale: b, c." in html.unescape(fragment)
    assert "With “Execute flow” they run again" in fragment
    assert CHANGE.format(latest(fe, "c").id) in fragment  # each links to its current attempt
    assert re.fullmatch("[0-9a-f]{64}", token_of(fragment))
    assert state(fe) == before

    # Without "Execute flow" nothing runs now: what runs is of re-executing the stale tasks.
    later = html.unescape(preview(client, latest(fe, "a"), output='{"x": 2, "y": 1}'))
    assert "“Execute flow” is off: they are only marked stale, and nothing runs now" in later
    assert "On re-execution" in later
    assert "After the save" not in later

    unchanged = preview(client, latest(fe, "a"), output='{"x": 1, "y": 1}')
    assert text_of(unchanged, "preview-stale") == "nothing"
    off = preview(client, latest(fe, "c"), output='{"other": true}')
    assert "A save marks 0 task(s) stale." in html.unescape(off)


def test_the_preview_renders_the_predictions(client, tenant, superuser, monkeypatch):
    fe = start_execution(tenant, CHAIN)
    real = task_executions.preview_correction
    calls = []
    predictions = {
        "b": {"action": "run", "input": {"x": 2, "y": 1}, "output": {"x": 2}},
        "c": {"action": "reuse", "input": {"b": {"x": 1}, "side": {"s": 1}}, "output": None},
        "later": {"action": "unknown"},
    }

    def with_predictions(task_execution: TaskExecution, **kwargs: Any) -> Any:
        calls.append(task_execution.pk)
        result = real(task_execution, **kwargs)
        return dataclasses.replace(result, predictions=predictions)

    monkeypatch.setattr(task_executions, "preview_correction", with_predictions)
    fragment = preview(client, latest(fe, "a"), output='{"x": 2, "y": 1}', execute_flow="on")
    assert calls == [latest(fe, "a").pk]
    assert text_of(fragment, "preview-runs") == "b, later"
    assert text_of(fragment, "preview-reused") == "c"
    rows = dict(re.findall(r'<tr data-task="(\w+)" data-action="(\w*)"', fragment))
    assert rows == {"b": "run", "c": "reuse", "later": "unknown"}
    row_b = fragment[fragment.index('data-task="b"') : fragment.index('data-task="c"')]
    assert "runs" in row_b
    assert html.escape('"x": 2') in row_b  # the predicted output, indented JSON
    assert "≠ differs from now" in row_b  # b's current output is {"x": 1}
    row_c = fragment[fragment.index('data-task="c"') : fragment.index('data-task="later"')]
    assert "reuses its result" in row_c
    assert "null" in row_c
    row_later = fragment[fragment.index('data-task="later"') :]
    assert "runs; result unknown" in row_later
    assert row_later.count("unknown</span>") == 2  # its input and output


def test_the_preview_says_why_a_correction_cannot_be_saved(client, tenant, superuser):
    fe = start_execution(tenant, CHAIN)
    a = latest(fe, "a")
    bad_json = preview(client, a, output="{not json")
    assert "Nothing to preview" in bad_json
    assert "<strong>output</strong>: Enter a valid JSON." in bad_json
    assert token_of(bad_json) == ""
    forged = preview(client, a, status="running")
    assert "Select a valid choice. running is not one of the available choices." in forged
    values = form_values(client, a, output='{"x": 5}')
    assert correct_as_key(tenant, a, {"x": 9, "y": 9}).status_code == 200  # someone else
    late = client.post(PREVIEW.format(a.id), values).content.decode()
    assert "Someone changed this task execution since you opened it" in late
    delete_flow_execution(a.flow_execution, actor="ops")
    deleted = preview(client, latest(fe, "b"), output='{"x": 3}')
    assert "the flow execution is deleted" in deleted


def test_the_preview_is_for_staff_who_may_change_the_attempt_of_their_organization(
    client, tenant, other_tenant, staff_of, monkeypatch
):
    mine = latest(start_execution(tenant, CHAIN), "a")
    theirs = latest(start_execution(other_tenant, CHAIN), "a")
    values = {"status": "completed", "output": '{"x": 2}', "error": "null", "lock": "x"}
    anonymous = Client().post(PREVIEW.format(mine.id), values)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")

    client.force_login(staff_of(tenant))
    assert client.get(PREVIEW.format(mine.id)).status_code == 405
    assert client.post(PREVIEW.format(theirs.id), values).status_code == 404  # not "forbidden"
    own = form_values(client, mine, output='{"x": 2}')
    assert "preview-stale" in client.post(PREVIEW.format(mine.id), own).content.decode()
    monkeypatch.setattr(TaskExecutionAdmin, "editable", False)  # may view, not change
    assert client.get(CHANGE.format(mine.id)).status_code == 200
    assert client.post(PREVIEW.format(mine.id), own).status_code == 403

    client.force_login(staff_of(name="nobody"))  # staff, member of no organization
    assert client.post(PREVIEW.format(mine.id), values).status_code == 404


def test_the_preview_needs_the_forms_csrf_token(tenant, superuser):
    a = latest(start_execution(tenant, CHAIN), "a")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(superuser)
    page = browser.get(CHANGE.format(a.id)).content.decode()
    values = form_values(browser, a, output='{"x": 2}')
    assert browser.post(PREVIEW.format(a.id), values).status_code == 403
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = browser.post(PREVIEW.format(a.id), {**values, "csrfmiddlewaretoken": csrf})
    assert response.status_code == 200
    assert "preview-stale" in response.content.decode()


def test_the_change_form_has_the_json_editor_and_the_live_preview_panel(client, tenant, superuser):
    fe = start_execution(tenant, CHAIN)
    a = latest(fe, "a")
    page = client.get(CHANGE.format(a.id)).content.decode()
    output = re.search(r"<textarea[^>]*name=\"output\"[^>]*>", page).group(0)
    assert 'data-json-editor="id_output_json_status"' in output
    assert 'aria-describedby="id_output_json_status"' in output
    assert '<p class="json-editor-status" id="id_output_json_status" aria-live="polite">' in page
    assert '"x": 1,\n  "y": 1' in html.unescape(page)  # shown indented
    assert 'name="error"' in page
    assert "executions/json_editor.js" in page
    assert "executions/correction_preview.js" in page
    panel = page[page.index('id="correction-live-preview"') :]
    assert f'data-url="{PREVIEW.format(a.id)}"' in panel
    assert page.index('id="correction-preview"') < page.index('id="correction-live-preview"')
    assert re.search(r'<input type="hidden" name="preview_token" id="id_preview_token">', page)


def test_a_save_with_the_token_of_a_current_preview_is_applied(client, tenant, superuser):
    fe = start_execution(tenant, CHAIN)
    a = latest(fe, "a")
    fields = {"output": '{"x": 2, "y": 1}', "execute_flow": "on", "reason": "seen first"}
    token = token_of(preview(client, a, **fields))
    values = form_values(client, a, **fields, preview_token=token, _save="Save")
    response = client.post(CHANGE.format(a.id), values)
    assert response.status_code == 302, response.context and response.context["errors"]
    [record] = Correction.objects.filter(flow_execution_id=fe)
    assert (record.source, record.reason, record.stale_tasks) == ("admin", "seen first", ["b", "c"])
    assert latest(fe, "c").input == {"b": {"x": 2}, "side": {"s": 1}}


def test_a_save_whose_preview_went_out_of_date_is_refused_with_a_fresh_preview(
    client, tenant, superuser
):
    fe = start_execution(tenant, CHAIN)
    a = latest(fe, "a")
    fields = {"output": '{"x": 2, "y": 1}', "execute_flow": "on"}
    seen = token_of(preview(client, a, **fields))
    values = form_values(client, a, **fields, preview_token=seen, _save="Save")
    # Meanwhile someone corrects `side`, which c (downstream of a) reads: a itself is untouched.
    assert correct_as_key(tenant, latest(fe, "side"), {"s": 5}).status_code == 200
    before = state(fe)
    response = client.post(CHANGE.format(a.id), values)
    assert response.status_code == 200
    page = response.content.decode()
    assert "changed since the preview you saw" in html.unescape(page)
    assert state(fe) == before  # nothing saved
    assert Correction.objects.filter(flow_execution_id=fe, source="admin").count() == 0
    fresh = page[page.index('id="correction-preview-body"') :]
    assert text_of(fresh, "preview-stale") == "b"  # c is stale already: side changed under it
    fresh_token = token_of(fresh)
    assert fresh_token not in ("", seen)
    assert f'name="preview_token" value="{fresh_token}"' in page  # saving again applies it

    again = client.post(CHANGE.format(a.id), {**values, "preview_token": fresh_token})
    assert again.status_code == 302
    assert latest(fe, "c").input == {"b": {"x": 2}, "side": {"s": 5}}


def test_a_save_that_loses_a_race_with_another_correction_is_refused(
    client, tenant, superuser, monkeypatch
):
    """Someone else corrects between the form's check and its save: the service refuses the
    check's token (PreviewOutdated) and the admin says so; nothing is saved."""
    fe = start_execution(tenant, CHAIN)
    a = latest(fe, "a")
    tokens = []

    real = task_executions.correct_task_execution

    def outdated(task_execution: TaskExecution, **kwargs: Any) -> Any:
        if kwargs.get("issue_token"):  # the form's check (a dry run) runs as it is
            return real(task_execution, **kwargs)
        tokens.append(kwargs["preview_token"])
        raise PreviewOutdated()

    monkeypatch.setattr(task_executions, "correct_task_execution", outdated)
    values = form_values(client, a, output='{"x": 2, "y": 1}', _save="Save")
    response = client.post(CHANGE.format(a.id), values, follow=True)
    assert len(tokens) == 1
    assert re.fullmatch("[0-9a-f]{64}", tokens[0])  # the form's own check binds the save
    page = html.unescape(response.content.decode())
    assert "Not saved: the flow execution changed since the preview you saw" in page
    assert latest(fe, "a").output == {"x": 1, "y": 1}
    assert not Correction.objects.filter(flow_execution_id=fe).exists()


def test_a_save_without_a_preview_works_as_without_javascript(client, tenant, superuser):
    fe = start_execution(tenant, CHAIN)
    a = latest(fe, "a")
    values = form_values(client, a, output='{"x": 3, "y": 1}', _save="Save")
    assert "preview_token" not in values
    response = client.post(CHANGE.format(a.id), {**values, "preview_token": ""}, follow=True)
    assert "Corrected a: 2 task(s) marked stale (b, c)." in response.content.decode()
    assert latest(fe, "a").output == {"x": 3, "y": 1}
    assert Correction.objects.get(flow_execution_id=fe).stale_tasks == ["b", "c"]


def test_a_token_that_no_preview_issued_is_refused(client, tenant, superuser):
    fe = start_execution(tenant, CHAIN)
    a = latest(fe, "a")
    values = form_values(client, a, output='{"x": 4}', preview_token="0" * 64, _save="Save")
    response = client.post(CHANGE.format(a.id), values)
    assert response.status_code == 200
    assert "changed since the preview you saw" in html.unescape(response.content.decode())
    assert latest(fe, "a").output == {"x": 1, "y": 1}
