"""Corrections you can explain and trust: Correction records, stale causes, binding previews
and early cutoff (issue 5). Idempotency keys are in test_idempotency.py."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from executions.models import Correction, FlowExecution, TaskExecution
from executions.selectors import freshness_violations
from outputs.models import TaskOutput
from tests.helpers.callables import CALLS, allow_test_callables  # noqa: F401 - autouse fixture
from tests.helpers.contract import assert_error, problems

# Under the names this module has always used: the tests' text is unchanged (the property
# tests' derandomized examples are derived from it).
from tests.helpers.corrections import (
    PROPERTY,
    SHAPES,
    chain_execution,
    counted_task,
    drive_corrections,
    lossy_chain,
    run_shape,
)
from tests.helpers.corrections import correct_as_key as correct
from tests.helpers.corrections import snapshot_attempts as snapshot
from tests.helpers.flows import attempts, latest
from tests.helpers.flows import get_json as get
from tests.helpers.flows import start_execution as start

pytestmark = pytest.mark.django_db(transaction=True)


def publish(tenant: Any, fe: str, task_name: str, output: Any, **fields: Any):
    """POST /task-outputs: a completed output of `task_name`, by hand."""
    body = {
        "flow_execution_id": fe,
        "organization_id": str(tenant.org.id),
        "task_name": task_name,
        "output": output,
        "summary": {},
        "status": "completed",
        **fields,
    }
    return tenant.client.post("/task-outputs", body, format="json")


def corrections(fe: str) -> list[Correction]:
    return list(Correction.objects.filter(flow_execution_id=fe).order_by("created_at", "id"))


# --- Correction records ---------------------------------------------------------------------


def test_a_correction_with_execute_flow_leaves_one_record_linking_everything(tenant):
    fe = run_shape(tenant, SHAPES["chain"])  # a → b → c → d
    b = latest(fe, "b")
    old_output = b.output
    summary_before = FlowExecution.objects.get(pk=fe).task_outputs_summary["tasks"]["b"]
    response = correct(tenant, b, {"fixed": True}, "?execute_flow=true", reason="typo in b")
    assert response.status_code == 200, response.json()

    [record] = corrections(fe)
    assert response.json()["correction_id"] == str(record.id)
    assert record.operation == "task_execution_update"
    assert record.source == "api"
    assert record.modified_by == tenant.actor
    assert record.reason == "typo in b"
    assert record.task_execution_id == b.id
    assert record.task_name == "b"
    assert record.execute_flow is True
    assert record.before == {
        "status": "completed",
        "output": old_output,
        "error": None,
        "summary": summary_before,
    }
    assert record.after["output"] == {"fixed": True}
    assert record.after["status"] == "completed"
    assert (
        record.after["summary"]
        == FlowExecution.objects.get(pk=fe).task_outputs_summary["tasks"]["b"]
    )
    assert record.task_output.output == {"fixed": True}
    assert record.stale_tasks == ["c", "d"]
    # The stale set: exactly the attempts it made stale point back at it.
    stale = {a.task_name: a for a in record.stale_attempts.all()}
    assert set(stale) == {"c", "d"}
    assert {a.task_execution_idx for a in stale.values()} == {0}
    # The attempts it started: c and d ran again (d in a later wave, after c completed).
    started = {a.task_name: a for a in record.started_attempts.all()}
    assert set(started) == {"c", "d"}
    assert {a.task_execution_idx for a in started.values()} == {1}
    assert latest(fe, "d").id == started["d"].id

    body = get(tenant, f"/corrections/{record.id}")
    assert body["stale_tasks"] == ["c", "d"]
    assert body["reason"] == "typo in b"
    assert body["execute_flow"] is True
    assert body["task_execution_id"] == str(b.id)
    assert body["before"]["output"] == old_output
    assert {a["task_name"]: a["id"] for a in body["started_attempts"]} == {
        name: str(a.id) for name, a in started.items()
    }
    assert all(a["reused_from"] is None for a in body["started_attempts"])


def test_a_correction_without_execution_links_the_stale_set_only(tenant):
    fe = run_shape(tenant, SHAPES["diamond"])  # a → b, a → c, b/c → d; e alone
    response = correct(tenant, latest(fe, "a"), {"v": 2})
    assert response.status_code == 200
    [record] = corrections(fe)
    assert record.execute_flow is False
    assert record.stale_tasks == ["b", "c", "d"]
    assert {a.task_name for a in record.stale_attempts.all()} == {"b", "c", "d"}
    assert not record.started_attempts.exists()
    # Re-running the stale tasks later is not this correction's doing.
    assert tenant.client.post(f"/flow-executions/{fe}/execute?only=stale").status_code == 202
    assert not record.started_attempts.exists()
    assert get(tenant, f"/corrections/{record.id}")["started_attempts"] == []


def test_every_put_is_recorded_even_one_that_changes_no_output(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    b = latest(fe, "b")
    before = snapshot(fe)
    response = correct(tenant, b, b.output)  # the same output: nothing is outdated
    assert response.status_code == 200
    assert response.json()["stale_tasks"] == []
    [record] = corrections(fe)
    assert record.stale_tasks == []
    assert record.before["output"] == record.after["output"] == b.output
    after = snapshot(fe)
    assert {k: v for k, v in after.items() if k != b.id} == {
        k: v for k, v in before.items() if k != b.id
    }
    assert TaskOutput.objects.filter(flow_execution_id=fe, task_name="b").count() == 1


def test_reason_comes_from_the_body_or_the_header(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    response = tenant.client.put(
        f"/task-executions/{latest(fe, 'd').id}",
        {**get(tenant, f"/task-executions/{latest(fe, 'd').id}"), "output": {"v": 1}},
        format="json",
        HTTP_X_CORRECTION_REASON="Prüfung: der Wert war falsch".encode().decode("latin-1"),
    )
    assert response.status_code == 200, response.json()
    assert corrections(fe)[-1].reason == "Prüfung: der Wert war falsch"

    response = correct(tenant, latest(fe, "d"), {"v": 2}, reason="   ")
    assert response.status_code == 200
    assert corrections(fe)[-1].reason == ""
    assert get(tenant, f"/corrections/{corrections(fe)[-1].id}")["reason"] is None


def test_bad_reasons_are_422_and_change_nothing(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    d = latest(fe, "d")
    before = snapshot(fe)
    body = {**get(tenant, f"/task-executions/{d.id}"), "output": {"v": 1}}

    too_long = tenant.client.put(
        f"/task-executions/{d.id}", {**body, "reason": "x" * 1001}, format="json"
    )
    assert problems(assert_error(too_long, 422, "validation_error")) == {
        ("body", "reason"): "max_length"
    }
    header_too_long = tenant.client.put(
        f"/task-executions/{d.id}", body, format="json", HTTP_X_CORRECTION_REASON="x" * 1001
    )
    assert problems(assert_error(header_too_long, 422, "validation_error")) == {
        ("header", "X-Correction-Reason"): "max_length"
    }
    both = tenant.client.put(
        f"/task-executions/{d.id}",
        {**body, "reason": "one"},
        format="json",
        HTTP_X_CORRECTION_REASON="another",
    )
    assert ("body", "reason") in problems(assert_error(both, 422, "validation_error"))
    assert snapshot(fe) == before
    assert corrections(fe) == []

    same = tenant.client.put(
        f"/task-executions/{d.id}",
        {**body, "reason": "the same"},
        format="json",
        HTTP_X_CORRECTION_REASON="the same",
    )
    assert same.status_code == 200
    assert corrections(fe)[-1].reason == "the same"


def test_a_dry_run_records_no_correction(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    response = correct(tenant, latest(fe, "a"), {"v": 9}, "?dry_run=true", reason="checking")
    assert response.status_code == 200
    assert response.json()["correction_id"] is None
    assert corrections(fe) == []


def test_superseding_editing_and_deleting_outputs_are_corrections(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    previous = TaskOutput.objects.filter(flow_execution_id=fe, task_name="b").get()
    created = publish(
        tenant,
        fe,
        "b",
        {"from": "a person"},
        summary={"n": 1},
        reason="the extractor misread page 2",
    )
    assert created.status_code == 201, created.json()
    [record] = corrections(fe)
    assert record.operation == "task_output_create"
    assert record.reason == "the extractor misread page 2"
    assert str(record.task_output_id) == created.json()["id"]
    assert record.task_execution_id == latest(fe, "b").id
    assert record.before["task_output_id"] == str(previous.id)
    assert record.before["output"] == previous.output
    assert record.after["output"] == {"from": "a person"}
    assert record.after["summary"] == {"n": 1}
    assert record.stale_tasks == ["c", "d"]
    assert {a.task_name for a in record.stale_attempts.all()} == {"c", "d"}

    output = TaskOutput.objects.get(pk=created.json()["id"])
    body = get(tenant, f"/task-outputs/{output.id}")
    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    edited = tenant.client.patch(
        f"/task-outputs/{output.id}",
        {"output": {"from": "a second look"}, "id": body["id"]},
        format="json",
        HTTP_X_CORRECTION_REASON="second look",
    )
    assert edited.status_code == 200, edited.json()
    record = corrections(fe)[-1]
    assert record.operation == "task_output_update"
    assert record.reason == "second look"
    assert record.before["output"] == {"from": "a person"}
    assert record.after["output"] == {"from": "a second look"}
    assert record.stale_tasks == ["c", "d"]

    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    deleted = tenant.client.delete(
        f"/task-outputs/{output.id}", HTTP_X_CORRECTION_REASON="back to the original"
    )
    assert deleted.status_code == 204
    record = corrections(fe)[-1]
    assert record.operation == "task_output_delete"
    assert record.reason == "back to the original"
    assert record.before["task_output_id"] == str(output.id)
    assert record.after["task_output_id"] == str(previous.id)  # the earlier one is current again
    assert len(corrections(fe)) == 3


def test_a_tasks_first_output_is_not_a_correction(tenant):
    fe = tenant.flow_execution()
    response = tenant.client.post(
        "/task-outputs",
        {
            "flow_execution_id": str(fe.id),
            "organization_id": str(tenant.org.id),
            "task_name": "extract",
            "summary": {"pages": 1},
        },
        format="json",
    )
    assert response.status_code == 201
    assert not Correction.objects.exists()


def test_corrections_list_filters_and_is_tenant_scoped(tenant, other_tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    other_fe = run_shape(other_tenant, SHAPES["chain"])
    assert correct(other_tenant, latest(other_fe, "a"), {"v": 0}).status_code == 200
    for value in range(3):
        assert correct(tenant, latest(fe, "d"), {"v": value}).status_code == 200
    assert correct(tenant, latest(fe, "c"), {"v": 9}).status_code == 200
    mine = corrections(fe)

    assert get(tenant, "/corrections")["count"] == 4
    ids = [item["id"] for item in get(tenant, "/corrections?limit=100")["results"]]
    assert ids == [str(c.id) for c in mine]
    assert get(tenant, "/corrections?task_name=c")["results"][0]["id"] == str(mine[-1].id)
    assert len(get(tenant, f"/corrections?flow_execution_id={fe}")["results"]) == 4
    assert len(get(tenant, f"/corrections?flow_execution_id={other_fe}")["results"]) == 0
    assert len(get(tenant, f"/corrections?modified_by={tenant.actor}")["results"]) == 4
    assert len(get(tenant, "/corrections?modified_by=somebody-else")["results"]) == 0
    later = (mine[1].created_at).isoformat().replace("+00:00", "Z")
    response = tenant.client.get("/corrections", {"created_at_after": later})
    assert [i["id"] for i in response.json()["results"]] == [str(c.id) for c in mine[1:]]
    response = tenant.client.get("/corrections", {"created_at_before": later})
    assert [i["id"] for i in response.json()["results"]] == [str(c.id) for c in mine[:2]]
    newest_first = get(tenant, "/corrections?ordering=-created_at")["results"]
    assert [i["id"] for i in newest_first] == [str(c.id) for c in reversed(mine)]

    foreign = Correction.objects.get(flow_execution_id=other_fe)
    assert_error(tenant.client.get(f"/corrections/{foreign.id}"), 404, "not_found")
    assert_error(tenant.client.get("/corrections/not-a-uuid"), 404, "not_found")
    bad = tenant.client.get("/corrections?created_at_after=yesterday")
    assert ("query", "created_at_after") in problems(assert_error(bad, 422, "validation_error"))
    bad = tenant.client.get("/corrections?flow_execution_id=nope")
    assert ("query", "flow_execution_id") in problems(assert_error(bad, 422, "validation_error"))
    assert tenant.client.post("/corrections", {}, format="json").status_code == 405
    assert tenant.client.delete(f"/corrections/{mine[0].id}").status_code == 405


def test_listing_corrections_costs_the_same_queries_for_1_and_20(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    assert correct(tenant, latest(fe, "c"), {"v": -1}, "?execute_flow=true").status_code == 200
    with CaptureQueriesContext(connection) as one:
        assert len(get(tenant, "/corrections")["results"]) == 1
    for value in range(19):
        response = correct(tenant, latest(fe, "c"), {"v": value}, "?execute_flow=true")
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as twenty:
        body = get(tenant, "/corrections")
    assert len(body["results"]) == 20
    assert all(len(item["started_attempts"]) == 1 for item in body["results"])
    assert len(twenty) == len(one)


# --- Stale causes ----------------------------------------------------------------------------


def cause(tenant: Any, attempt: TaskExecution) -> dict | None:
    return get(tenant, f"/task-executions/{attempt.id}")["stale_cause"]


def test_each_stale_attempt_names_its_correction_and_the_corrected_task(tenant):
    fe = run_shape(tenant, SHAPES["fan"])  # root → x0..x4 → join; side alone
    response = correct(tenant, latest(fe, "root"), {"v": 1})
    record = Correction.objects.get(pk=response.json()["correction_id"])
    for name in ["x0", "x1", "x2", "x3", "x4", "join"]:
        stale_cause = cause(tenant, latest(fe, name))
        assert stale_cause["correction_id"] == str(record.id)
        assert stale_cause["upstream_task"] == "root"
        assert stale_cause["by"] == tenant.actor
        assert stale_cause["reason"] == "correction"
        at = stale_cause["at"].replace("Z", "+00:00")
        assert abs((timezone.datetime.fromisoformat(at) - record.created_at).total_seconds()) < 60
    for name in ["root", "side"]:
        assert cause(tenant, latest(fe, name)) is None
    listed = get(tenant, f"/task-executions?stale_correction_id={record.id}&limit=100")
    assert {item["task_name"] for item in listed["results"]} == {
        "x0",
        "x1",
        "x2",
        "x3",
        "x4",
        "join",
    }


def test_overlapping_corrections_name_the_nearest_corrected_ancestor(tenant):
    fe = run_shape(tenant, SHAPES["chain"])  # a → b → c → d
    first = correct(tenant, latest(fe, "c"), {"v": "c"}).json()["correction_id"]
    second = correct(tenant, latest(fe, "a"), {"v": "a"}).json()["correction_id"]
    # b and c were made stale by the second; d was already stale through c, which is nearer.
    assert cause(tenant, latest(fe, "b"))["correction_id"] == second
    assert cause(tenant, latest(fe, "c"))["upstream_task"] == "a"
    assert cause(tenant, latest(fe, "d"))["correction_id"] == first
    assert cause(tenant, latest(fe, "d"))["upstream_task"] == "c"


def test_a_nearer_later_correction_takes_over_the_cause(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    first = correct(tenant, latest(fe, "a"), {"v": "a"}).json()["correction_id"]
    assert cause(tenant, latest(fe, "d"))["correction_id"] == first
    superseded = publish(tenant, fe, "c", {"v": "c by hand"})
    assert superseded.status_code == 201
    second = corrections(fe)[-1]
    assert second.operation == "task_output_create"
    assert cause(tenant, latest(fe, "d")) | {"at": None} == {
        "correction_id": str(second.id),
        "upstream_task": "c",
        "upstream_iteration": None,
        "definition_change": None,
        "by": tenant.actor,
        "reason": "correction",
        "at": None,
    }
    assert cause(tenant, latest(fe, "b"))["correction_id"] == first  # a is still b's nearest


def test_on_a_tie_the_newer_correction_is_the_cause(tenant):
    fe = run_shape(tenant, SHAPES["diamond"])  # b → d and c → d
    correct(tenant, latest(fe, "b"), {"v": "b"})
    second = correct(tenant, latest(fe, "c"), {"v": "c"}).json()["correction_id"]
    assert cause(tenant, latest(fe, "d"))["correction_id"] == second
    assert cause(tenant, latest(fe, "d"))["upstream_task"] == "c"


def test_a_task_a_person_marks_stale_is_its_own_cause_and_runs_again(tenant):
    fe = run_shape(tenant, SHAPES["chain"], counted=True)
    b = latest(fe, "b")
    response = tenant.client.patch(
        f"/task-executions/{b.id}", {"status": "stale", "reason": "rerun b"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["stale_cause"]["upstream_task"] == "b"
    assert response.json()["stale_cause"]["correction_id"] == response.json()["correction_id"]
    assert Correction.objects.get(pk=response.json()["correction_id"]).stale_tasks == ["b"]
    CALLS.clear()
    assert tenant.client.post(f"/flow-executions/{fe}/execute?only=stale").status_code == 202
    # b itself runs again (its own result was doubted); c and d are reused: b's output is the
    # same, so their inputs are too.
    assert len(CALLS) == 1
    assert latest(fe, "b").task_execution_idx == 1
    assert latest(fe, "b").reused_from_id is None
    assert latest(fe, "c").reused_from_id is not None
    stale_c = attempts(fe)["c"][0]
    assert stale_c.stale_reason == "upstream_rerun"
    assert stale_c.stale_upstream_task == "b"


def test_a_whole_re_execution_is_a_cause_too_and_reuses_nothing(tenant):
    fe = run_shape(tenant, SHAPES["chain"], counted=True)
    CALLS.clear()
    assert tenant.client.post(f"/flow-executions/{fe}/execute").status_code == 202
    assert len(CALLS) == 4  # every task ran again
    for name in "abcd":
        first = attempts(fe)[name][0]
        assert first.stale_reason == "reexecution"
        assert first.stale_correction_id is None
        assert latest(fe, name).reused_from_id is None


# --- Binding previews ------------------------------------------------------------------------


def test_a_preview_token_applies_the_previewed_correction(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    a = latest(fe, "a")
    preview = correct(tenant, a, {"v": 1}, "?dry_run=true&execute_flow=true").json()
    token = preview["preview_token"]
    assert len(token) == 64
    assert preview["stale_tasks"] == ["b", "c", "d"]
    again = correct(tenant, a, {"v": 1}, "?dry_run=true&execute_flow=true").json()
    assert again["preview_token"] == token  # nothing changed: the same token
    applied = correct(tenant, a, {"v": 1}, f"?execute_flow=true&preview_token={token}")
    assert applied.status_code == 200, applied.json()
    assert applied.json()["stale_tasks"] == preview["stale_tasks"]
    assert applied.json()["preview_token"] is None
    assert latest(fe, "d").task_execution_idx == 1


def test_a_preview_followed_by_an_intervening_change_is_409_and_changes_nothing(tenant):
    fe = run_shape(tenant, SHAPES["diamond"])
    a = latest(fe, "a")
    token = correct(tenant, a, {"v": 1}, "?dry_run=true&execute_flow=true").json()["preview_token"]
    # Somebody else corrects c meanwhile: d's attempt changes.
    assert correct(tenant, latest(fe, "c"), {"v": "c"}).status_code == 200
    before = snapshot(fe)
    records = len(corrections(fe))
    outputs = TaskOutput.objects.count()

    response = correct(tenant, a, {"v": 1}, f"?execute_flow=true&preview_token={token}")
    body = assert_error(response, 409, "preview_outdated")
    fresh = body["error"]["details"]["preview"]
    assert fresh["dry_run"] is True
    assert fresh["preview_token"] != token
    assert fresh["stale_tasks"] == ["b", "c"]  # d is already stale now
    assert snapshot(fe) == before
    assert len(corrections(fe)) == records
    assert TaskOutput.objects.count() == outputs

    applied = correct(
        tenant, a, {"v": 1}, f"?execute_flow=true&preview_token={fresh['preview_token']}"
    )
    assert applied.status_code == 200, applied.json()


def test_a_token_binds_the_change_it_previewed(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    a = latest(fe, "a")
    token = correct(tenant, a, {"v": 1}, "?dry_run=true").json()["preview_token"]
    assert_error(correct(tenant, a, {"v": 2}, f"?preview_token={token}"), 409, "preview_outdated")
    assert_error(
        correct(tenant, a, {"v": 1}, f"?execute_flow=true&preview_token={token}"),
        409,
        "preview_outdated",
    )
    assert correct(tenant, a, {"v": 1}, f"?preview_token={token}").status_code == 200


def test_a_malformed_preview_token_is_422(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    response = correct(tenant, latest(fe, "a"), {"v": 1}, "?preview_token=abc")
    assert problems(assert_error(response, 422, "validation_error")) == {
        ("query", "preview_token"): "invalid"
    }


# --- Early cutoff ----------------------------------------------------------------------------


def test_a_correction_that_does_not_change_a_downstream_value_stops_there(tenant):
    fe = start(tenant, lossy_chain())
    old_c = latest(fe, "c")
    CALLS.clear()
    response = correct(tenant, latest(fe, "a"), {"x": 1, "y": 2}, "?execute_flow=true")
    assert response.status_code == 200, response.json()
    assert response.json()["stale_tasks"] == ["b", "c"]
    assert CALLS == []  # c's executor was not called
    b, c = latest(fe, "b"), latest(fe, "c")
    assert (b.task_execution_idx, b.status, b.reused_from_id) == (1, "completed", None)
    assert b.output == {"x": 1}  # b ran: its input changed, its output did not
    assert (c.task_execution_idx, c.status, c.reused_from_id) == (1, "completed", old_c.id)
    assert c.output == old_c.output
    assert c.input == old_c.input
    assert get(tenant, f"/task-executions/{c.id}")["reused_from"] == str(old_c.id)
    record = Correction.objects.get(pk=response.json()["correction_id"])
    assert {a.task_name: a.reused_from_id for a in record.started_attempts.all()} == {
        "b": None,
        "c": old_c.id,
    }
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert flow_execution.status == "completed"
    assert flow_execution.task_outputs_summary["status_counts"] == {"completed": 3}
    assert freshness_violations(flow_execution) == []


def test_rerun_always_runs_the_task_again(tenant):
    fe = start(tenant, lossy_chain({"rerun": "always"}))
    CALLS.clear()
    response = correct(tenant, latest(fe, "a"), {"x": 1, "y": 2}, "?execute_flow=true")
    assert response.status_code == 200
    assert len(CALLS) == 1  # c ran
    assert latest(fe, "c").reused_from_id is None
    assert latest(fe, "c").task_execution_idx == 1


def test_a_changed_value_is_not_cut_off(tenant):
    fe = start(tenant, lossy_chain())
    CALLS.clear()
    response = correct(tenant, latest(fe, "a"), {"x": 2, "y": 1}, "?execute_flow=true")
    assert response.status_code == 200
    assert len(CALLS) == 1
    assert latest(fe, "c").output["up"] == {"x": 2}
    assert latest(fe, "c").reused_from_id is None


def test_cutoff_also_applies_when_stale_tasks_are_executed_later(tenant):
    fe = start(tenant, lossy_chain())
    old_c = latest(fe, "c")
    assert correct(tenant, latest(fe, "a"), {"x": 1, "y": 5}).status_code == 200
    CALLS.clear()
    assert tenant.client.post(f"/flow-executions/{fe}/execute?only=stale").status_code == 202
    assert CALLS == []
    assert latest(fe, "c").reused_from_id == old_c.id
    assert FlowExecution.objects.get(pk=fe).status == "completed"


def test_a_persons_corrected_output_is_what_is_reused(tenant):
    fe = start(tenant, lossy_chain())
    c = latest(fe, "c")
    assert correct(tenant, c, {"checked": "by a person"}).status_code == 200
    CALLS.clear()
    response = correct(tenant, latest(fe, "a"), {"x": 1, "y": 3}, "?execute_flow=true")
    assert response.status_code == 200
    assert CALLS == []
    assert latest(fe, "c").output == {"checked": "by a person"}
    current = TaskOutput.objects.filter(flow_execution_id=fe, task_name="c").order_by(
        "-created_at"
    )[0]
    assert current.output == {"checked": "by a person"}
    assert current.status == "completed"


def test_the_previous_completed_attempt_is_found_behind_a_cancelled_one(tenant):
    """A human gate: the person approves; an upstream correction whose value does not reach the
    gate's input re-asks nothing."""
    tasks = [
        {"name": "a", "type": "transform", "input": {"x": 1, "y": 1}},
        {
            "name": "b",
            "type": "transform",
            "input": "${{ tasks.a.output }}",
            "config": {"expression": "{x: x}"},
        },
        {"name": "review", "type": "human", "input": "${{ tasks.b.output }}"},
    ]
    fe = start(tenant, tasks)
    review = latest(fe, "review")
    assert review.status == "running"
    approved = correct(tenant, review, {"approved": True})
    assert approved.status_code == 200
    response = correct(tenant, latest(fe, "a"), {"x": 1, "y": 2}, "?execute_flow=true")
    assert response.status_code == 200
    again = latest(fe, "review")
    assert again.status == "completed"
    assert again.output == {"approved": True}
    assert again.reused_from_id == review.id
    assert FlowExecution.objects.get(pk=fe).status == "completed"


def test_json_types_are_compared_exactly(tenant):
    """true is not 1, and 1 is not 1.0: a changed type is a changed input."""
    fe = start(tenant, lossy_chain())
    CALLS.clear()
    response = correct(tenant, latest(fe, "a"), {"x": True, "y": 1}, "?execute_flow=true")
    assert response.status_code == 200
    assert latest(fe, "c").reused_from_id is None
    assert len(CALLS) == 1
    CALLS.clear()
    response = correct(tenant, latest(fe, "a"), {"x": 1.0, "y": 1}, "?execute_flow=true")
    assert response.status_code == 200
    assert len(CALLS) == 1


@pytest.mark.parametrize("value", ["sometimes", 1, None, ["always"]])
def test_an_unknown_rerun_policy_is_refused_naming_the_task(tenant, value):
    definition = {"tasks": [{"name": "a", "type": "transform", "rerun": value}]}
    import yaml

    response = tenant.client.post(
        "/flows", {"name": "bad", "definition": yaml.safe_dump(definition)}, format="json"
    )
    body = assert_error(response, 422, "validation_error")
    assert any("rerun" in item["msg"] and "'a'" in item["msg"] for item in body["detail"])


@st.composite
def lossy_dags(draw: st.DrawFn) -> list[dict]:
    size = draw(st.integers(min_value=2, max_value=7))
    tasks = []
    for i in range(size):
        # A spine n0 → n1 → … keeps paths long enough for values to stop changing midway.
        extra = draw(st.lists(st.sampled_from(range(i - 1)), unique=True)) if i > 1 else []
        parents = [i - 1, *extra] if i else []
        reads = {f"n{p}": f"${{{{ tasks.n{p}.output.v }}}}" for p in parents}
        task = {
            "name": f"n{i}",
            "type": "python",
            "config": {"callable": "tests.helpers.callables:parity"},
            "input": {"up": reads, "seed": i if not parents else 0},
        }
        if parents and draw(st.integers(0, 3)) == 0:
            task["rerun"] = "always"
        tasks.append(task)
    return tasks


@settings(PROPERTY, max_examples=25)
@given(
    tasks=lossy_dags(),
    steps=st.lists(
        st.tuples(st.integers(0, 6), st.booleans(), st.integers(0, 3)), min_size=1, max_size=5
    ),
)
def test_early_cutoff_keeps_the_freshness_invariant(tenant, tasks, steps):
    fe = start(tenant, tasks)
    names = [t["name"] for t in tasks]
    always = {t["name"] for t in tasks if t.get("rerun") == "always"}
    drive_corrections(tenant, fe, names, steps, put=correct)
    for attempt in TaskExecution.objects.filter(flow_execution_id=fe, reused_from__isnull=False):
        source = TaskExecution.objects.get(pk=attempt.reused_from_id)
        assert attempt.task_name not in always
        assert attempt.input == source.input
        assert attempt.output == source.output
        assert attempt.status in ("completed", "stale")
    outputs = {
        name: TaskOutput.objects.filter(flow_execution_id=fe, task_name=name)
        .order_by("-created_at", "-id")[0]
        .output
        for name in names
    }
    assert outputs == {name: latest(fe, name).output for name in names}


def test_stale_marking_with_causes_costs_the_same_queries_at_10_and_2000_tasks(tenant):
    counts = {}
    tenant.client.get("/corrections")  # the key's last_used_at is fresh for both sizes
    for size in (10, 2000):
        _, first = chain_execution(tenant, size)
        with CaptureQueriesContext(connection) as queries:
            response = correct(tenant, first, {"v": size})
        assert response.status_code == 200
        assert len(response.json()["stale_tasks"]) == size - 1
        counts[size] = len(queries)
    assert counts[10] == counts[2000]


def test_cancelled_attempts_of_a_deleted_flow_execution_say_why(tenant):
    fe = start(
        tenant,
        [
            {"name": "a", "type": "transform", "input": 1},
            {"name": "review", "type": "human", "input": "${{ tasks.a.output }}"},
        ],
    )
    review = latest(fe, "review")
    assert tenant.client.delete(f"/flow-executions/{fe}").status_code == 204
    review.refresh_from_db()
    assert review.status == "stale"
    assert review.stale_reason == "flow_execution_deleted"
    assert review.stale_by == tenant.actor
    assert review.stale_at is not None
    assert timezone.now() - review.stale_at < timedelta(minutes=5)


def test_a_whole_re_execution_reruns_tasks_a_correction_had_made_stale(tenant):
    fe = start(tenant, lossy_chain())
    assert correct(tenant, latest(fe, "a"), {"x": 1, "y": 2}).status_code == 200
    CALLS.clear()
    assert tenant.client.post(f"/flow-executions/{fe}/execute").status_code == 202
    assert len(CALLS) == 1  # c ran, although its input is unchanged: everything runs again
    assert latest(fe, "c").reused_from_id is None
    assert attempts(fe)["c"][0].stale_reason == "correction"  # why it went stale is kept


def test_completing_a_waiting_human_task_is_a_correction_that_carries_the_flow_on(tenant):
    fe = start(
        tenant,
        [
            {"name": "a", "type": "transform", "input": 1},
            {"name": "review", "type": "human", "input": "${{ tasks.a.output }}"},
            counted_task("publish", "review"),
        ],
    )
    response = correct(tenant, latest(fe, "review"), {"approved": True}, reason="looks right")
    assert response.status_code == 200, response.json()
    record = Correction.objects.get(pk=response.json()["correction_id"])
    assert record.before["status"] == "running"
    assert record.after["status"] == "completed"
    assert record.execute_flow is True  # finishing pending work always carries the flow on
    assert [a.task_name for a in record.started_attempts.all()] == ["publish"]
    assert FlowExecution.objects.get(pk=fe).status == "completed"


def test_an_output_a_person_published_for_the_task_is_what_is_reused(tenant):
    fe = start(tenant, lossy_chain())
    replaced = publish(tenant, fe, "c", {"replaced": "by a person"}, summary={"checked": True})
    assert replaced.status_code == 201
    CALLS.clear()
    response = correct(tenant, latest(fe, "a"), {"x": 1, "y": 4}, "?execute_flow=true")
    assert response.status_code == 200
    assert CALLS == []
    c = latest(fe, "c")
    assert c.reused_from_id is not None
    assert c.output == {"replaced": "by a person"}
    current = TaskOutput.objects.filter(flow_execution_id=fe, task_name="c").order_by(
        "-created_at"
    )[0]
    assert (current.output, current.summary) == ({"replaced": "by a person"}, {"checked": True})
    assert FlowExecution.objects.get(pk=fe).task_outputs_summary["tasks"]["c"] == {"checked": True}


def test_corrections_are_in_admin_read_only(tenant, client, django_user_model):
    fe = run_shape(tenant, SHAPES["chain"])
    response = correct(tenant, latest(fe, "b"), {"v": 1}, reason="seen in admin")
    record = Correction.objects.get(pk=response.json()["correction_id"])
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    listed = client.get("/admin/executions/correction/")
    assert listed.status_code == 200
    assert "seen in admin" in listed.content.decode()  # the list shows who, what and why
    assert tenant.actor in listed.content.decode()
    page = client.get(f"/admin/executions/correction/{record.id}/change/")
    assert page.status_code == 200
    assert "seen in admin" in page.content.decode()
    assert client.get("/admin/executions/correction/add/").status_code == 403
    assert client.post(f"/admin/executions/correction/{record.id}/delete/").status_code == 403
    assert Correction.objects.filter(pk=record.id).exists()


# --- Regressions from review -----------------------------------------------------------------


def gated_flow(tenant: Any) -> str:
    """a → b (keeps only a's x) → review (human)."""
    return start(
        tenant,
        [
            {"name": "a", "type": "transform", "input": {"x": 1, "y": 1}},
            {
                "name": "b",
                "type": "transform",
                "input": "${{ tasks.a.output }}",
                "config": {"expression": "{x: x}"},
            },
            {"name": "review", "type": "human", "input": "${{ tasks.b.output }}"},
        ],
    )


@pytest.mark.parametrize("withdraw", ["person", "whole re-execution"])
def test_cutoff_never_brings_back_a_result_that_was_thrown_away(tenant, withdraw):
    fe = gated_flow(tenant)
    assert correct(tenant, latest(fe, "review"), {"approved": True}).status_code == 200
    if withdraw == "person":
        response = tenant.client.patch(
            f"/task-executions/{latest(fe, 'review').id}", {"status": "stale"}, format="json"
        )
        assert response.status_code == 200
        assert tenant.client.post(f"/flow-executions/{fe}/execute?only=stale").status_code == 202
    else:
        assert tenant.client.post(f"/flow-executions/{fe}/execute").status_code == 202
    assert latest(fe, "review").status == "running"  # asked again
    response = correct(tenant, latest(fe, "a"), {"x": 1, "y": 2}, "?execute_flow=true")
    assert response.status_code == 200
    review = latest(fe, "review")
    assert (review.status, review.reused_from_id) == ("running", None)


def test_a_token_covers_the_tasks_the_affected_ones_read_from(tenant):
    fe = run_shape(tenant, SHAPES["diamond"])  # b → d ← c
    assert correct(tenant, latest(fe, "b"), {"v": 1}).status_code == 200  # d is stale
    preview = correct(tenant, latest(fe, "b"), {"v": 2}, "?dry_run=true&execute_flow=true")
    assert preview.json()["started_tasks"] == ["d"]
    response = tenant.client.patch(
        f"/task-executions/{latest(fe, 'c').id}", {"status": "stale"}, format="json"
    )
    assert response.status_code == 200  # d cannot start now: c is not completed
    token = preview.json()["preview_token"]
    query = f"?execute_flow=true&preview_token={token}"
    response = correct(tenant, latest(fe, "b"), {"v": 2}, query)
    fresh = assert_error(response, 409, "preview_outdated")["error"]["details"]["preview"]
    assert fresh["started_tasks"] == []


def test_a_token_covers_the_content_of_current_outputs(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    a = latest(fe, "a")
    preview = correct(tenant, a, {"v": "X"}, "?dry_run=true")
    assert preview.json()["stale_tasks"] == ["b", "c", "d"]
    output = TaskOutput.objects.get(flow_execution_id=fe, task_name="a")
    response = tenant.client.patch(
        f"/task-outputs/{output.id}", {"output": {"v": "X"}, "id": str(output.id)}, format="json"
    )
    assert response.status_code == 200  # a's current output is already what the PUT sends
    token = preview.json()["preview_token"]
    fresh = assert_error(
        correct(tenant, a, {"v": "X"}, f"?preview_token={token}"), 409, "preview_outdated"
    )["error"]["details"]["preview"]
    assert fresh["stale_tasks"] == []


def test_a_first_output_that_takes_over_stale_causes_is_kept_as_a_correction(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    assert correct(tenant, latest(fe, "a"), {"v": 1}).status_code == 200
    only = TaskOutput.objects.get(flow_execution_id=fe, task_name="c")
    assert tenant.client.delete(f"/task-outputs/{only.id}").status_code == 204
    assert publish(tenant, fe, "c", {"v": "by hand"}).status_code == 201
    record = corrections(fe)[-1]
    assert record.operation == "task_output_create"
    assert cause(tenant, latest(fe, "d"))["correction_id"] == str(record.id)
    assert cause(tenant, latest(fe, "d"))["upstream_task"] == "c"


def test_a_cutoff_cascade_costs_the_same_queries_however_long(tenant):
    counts = {}
    for length in (5, 60):
        tasks = lossy_chain()[:2] + [
            {"name": f"t{i}", "type": "transform", "input": f"${{{{ tasks.{prev}.output }}}}"}
            for i, prev in enumerate(["b", *[f"t{j}" for j in range(length - 1)]])
        ]
        fe = start(tenant, tasks)
        tenant.client.get("/corrections")  # the key's last_used_at is fresh for both lengths
        with CaptureQueriesContext(connection) as queries:
            response = correct(tenant, latest(fe, "a"), {"x": 1, "y": 2}, "?execute_flow=true")
        assert response.status_code == 200
        reused = TaskExecution.objects.filter(flow_execution_id=fe, reused_from__isnull=False)
        assert reused.count() == length
        assert FlowExecution.objects.get(pk=fe).status == "completed"
        counts[length] = len(queries)
    assert counts[5] == counts[60]


def test_taking_over_earlier_causes_costs_the_same_queries_at_10_and_2000_tasks(tenant):
    counts = {}
    tenant.client.get("/corrections")
    for size in (10, 2000):
        _, first = chain_execution(tenant, size)
        fe = first.flow_execution_id
        middle = TaskExecution.objects.get(flow_execution_id=fe, task_name="t5")
        first_correction = correct(tenant, middle, {"v": "mid"}).json()["correction_id"]
        with CaptureQueriesContext(connection) as queries:
            response = correct(tenant, first, {"v": size})
        assert response.status_code == 200
        assert response.json()["stale_tasks"] == [f"t{i}" for i in range(1, 6)]
        last = TaskExecution.objects.get(
            flow_execution_id=first.flow_execution_id, task_name=f"t{size - 1}"
        )
        assert str(last.stale_correction_id) == first_correction  # t5 is nearer than t0
        counts[size] = len(queries)
    assert counts[10] == counts[2000]


def test_changing_an_outputs_json_type_is_a_correction(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    assert correct(tenant, latest(fe, "c"), {"v": 1}).status_code == 200
    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    output = TaskOutput.objects.filter(flow_execution_id=fe, task_name="c").latest("created_at")
    response = tenant.client.patch(
        f"/task-outputs/{output.id}", {"output": {"v": True}, "id": str(output.id)}, format="json"
    )
    assert response.status_code == 200
    assert corrections(fe)[-1].operation == "task_output_update"
    assert latest(fe, "d").status == "stale"


def test_the_correct_task_command_is_the_same_correction_path(tenant):
    from django.core.management import CommandError, call_command

    fe = start(tenant, lossy_chain())
    a = latest(fe, "a")
    out = io.StringIO()
    call_command(
        "correct_task",
        str(a.id),
        "--output",
        '{"x": 1, "y": 3}',
        "--execute-flow",
        "--dry-run",
        stdout=out,
    )
    preview = json.loads(out.getvalue())
    assert preview["dry_run"] is True
    assert preview["stale_tasks"] == ["b", "c"]
    assert corrections(fe) == []
    assert latest(fe, "a").output == {"x": 1, "y": 1}

    out = io.StringIO()
    call_command(
        "correct_task",
        str(a.id),
        "--output",
        '{"x": 1, "y": 3}',
        "--execute-flow",
        "--reason",
        "from a script",
        "--actor",
        "ops-bot",
        "--preview-token",
        preview["preview_token"],
        stdout=out,
    )
    done = json.loads(out.getvalue())
    [record] = corrections(fe)
    assert done["correction_id"] == str(record.id)
    assert record.source == "command"
    assert (record.reason, record.modified_by) == ("from a script", "ops-bot")
    assert latest(fe, "c").reused_from_id is not None  # b ran, c was cut off

    with pytest.raises(CommandError, match="no such task execution"):
        call_command("correct_task", str(uuid.uuid4()), "--output", "1")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("correct_task", str(a.id), "--output", "{nope")
    with pytest.raises(CommandError, match="cannot change from 'completed' to 'running'"):
        call_command("correct_task", str(a.id), "--status", "running")
    with pytest.raises(CommandError, match="preview_token"):
        call_command(
            "correct_task", str(a.id), "--output", "2", "--preview-token", preview["preview_token"]
        )
    assert len(corrections(fe)) == 1
