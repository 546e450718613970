"""Human-in-the-loop corrections: exactly the downstream tasks go stale, exactly they re-run."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from executions.corrections.task_executions import correct_task_execution
from executions.engine import staleness
from executions.models import FlowExecution, TaskExecution
from executions.selectors import freshness_violations, is_settled
from flows.definitions import spec_for
from flows.services import create_flow
from outputs.models import TaskOutput
from tests.helpers.callables import CALLS
from tests.helpers.corrections import (
    PROPERTY,
    SHAPES,
    chain_execution,
    correct_as_read,
    drive_corrections,
    run_shape,
    snapshot_attempts,
)
from tests.helpers.flows import attempts, latest

pytestmark = pytest.mark.django_db(transaction=True)

CASES = [
    ("chain", "b", ["c", "d"]),
    ("chain", "d", []),
    ("diamond", "b", ["d"]),
    ("diamond", "a", ["b", "c", "d"]),
    ("fan", "x2", ["join"]),
    ("fan", "root", ["x0", "x1", "x2", "x3", "x4", "join"]),
]


@pytest.mark.parametrize(("shape", "corrected", "expected"), CASES)
def test_correction_marks_exactly_the_descendants_stale(tenant, shape, corrected, expected):
    fe = run_shape(tenant, SHAPES[shape])
    target = latest(fe, corrected)
    before = snapshot_attempts(fe)

    response = correct_as_read(tenant, target, {"fixed": True})

    assert response.status_code == 200, response.json()
    assert response.json()["stale_tasks"] == expected  # dependency order
    assert response.json()["new_attempts"] == []
    after = snapshot_attempts(fe)
    assert set(after) == set(before), "no attempt added or removed"
    stale_ids = {latest(fe, name).id for name in expected}
    for attempt_id, (status, updated_at, output) in after.items():
        if attempt_id in stale_ids:
            assert (status, output) == ("stale", before[attempt_id][2])
        elif attempt_id != target.id:
            assert (status, updated_at, output) == before[attempt_id]
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert flow_execution.status == ("stale" if expected else "completed")
    assert flow_execution.task_outputs_summary["tasks"][corrected] == {"type": "object", "keys": 1}


@pytest.mark.parametrize(("shape", "corrected", "expected"), CASES)
def test_execute_flow_reruns_exactly_the_stale_tasks_and_keeps_history(
    tenant, shape, corrected, expected
):
    fe = run_shape(tenant, SHAPES[shape])
    target = latest(fe, corrected)
    before = snapshot_attempts(fe)
    old_outputs = {name: latest(fe, name).output for name in SHAPES[shape]}
    made_stale = {latest(fe, name).id for name in expected}

    response = correct_as_read(tenant, target, {"fixed": True}, "?execute_flow=true")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["stale_tasks"] == expected
    children = [t for t in expected if corrected in SHAPES[shape][t]]
    assert sorted(body["started_tasks"]) == sorted(children)
    assert len(body["new_attempts"]) == len(children)
    runs = attempts(fe)
    for name in SHAPES[shape]:
        if name in expected:
            old, new = runs[name]
            assert (old.status, old.output) == ("stale", old_outputs[name])  # history kept
            assert (new.task_execution_idx, new.status) == (1, "completed")
            if corrected in SHAPES[shape][name]:
                assert new.input["up"][corrected] == {"fixed": True}
        else:
            assert len(runs[name]) == 1, f"{name} must not run again"
    after = snapshot_attempts(fe)
    for attempt_id in set(before) - made_stale - {target.id}:
        assert after[attempt_id] == before[attempt_id]
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert flow_execution.status == "completed"
    assert is_settled(flow_execution)
    assert freshness_violations(flow_execution) == []


def test_stale_tasks_run_again_with_execute_only_stale(tenant):
    fe = run_shape(tenant, SHAPES["diamond"])
    correct_as_read(tenant, latest(fe, "b"), {"fixed": 1})
    assert FlowExecution.objects.get(pk=fe).status == "stale"

    response = tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")

    assert response.status_code == 202
    assert response.json()["status"] == "completed"
    runs = attempts(fe)
    assert {name: len(items) for name, items in runs.items()} == {
        "a": 1, "b": 1, "c": 1, "d": 2, "e": 1,
    }  # fmt: skip
    assert runs["d"][1].input["up"]["b"] == {"fixed": 1}
    assert freshness_violations(FlowExecution.objects.get(pk=fe)) == []


def test_bad_only_value_is_422(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    response = tenant.client.post(f"/flow-executions/{fe}/execute?only=everything")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "only"]


def test_superseding_a_task_output_marks_its_dependents_stale_without_rerunning(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    before = TaskExecution.objects.filter(flow_execution_id=fe).count()
    response = tenant.client.post(
        "/task-outputs",
        {
            "flow_execution_id": fe,
            "organization_id": str(tenant.org.id),
            "task_name": "b",
            "output": {"from": "reviewer"},
            "summary": {"edited": True},
            "status": "completed",
        },
        format="json",
    )
    assert response.status_code == 201
    assert [latest(fe, n).status for n in "abcd"] == ["completed", "completed", "stale", "stale"]
    assert TaskExecution.objects.filter(flow_execution_id=fe).count() == before
    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    assert latest(fe, "c").input["up"]["b"] == {"from": "reviewer"}


def test_a_stale_tasks_current_output_is_marked_stale_in_the_summary(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    correct_as_read(tenant, latest(fe, "b"), {"fixed": 1})
    summary = FlowExecution.objects.get(pk=fe).task_outputs_summary
    assert summary["status_counts"] == {"completed": 2, "stale": 2}
    assert set(TaskOutput.objects.filter(task_name="c").values_list("status", flat=True)) == {
        "stale"
    }


@pytest.mark.parametrize(
    ("stored", "requested"),
    [
        ("deleted", "completed"),
        ("stale", "completed"),
        ("queued", "completed"),
        ("completed", "running"),
        ("completed", "queued"),
        ("failed", "running"),
        ("running", "queued"),
        ("stale", "running"),
        ("queued", "queued"),
    ],
)
def test_forbidden_transitions_are_422_saying_from_what_to_what(tenant, stored, requested):
    attempt = tenant.task_execution(status=stored, output={"v": 1})
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body["status"] = requested
    response = tenant.client.put(f"/task-executions/{attempt.id}", body, format="json")
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "status"]
    assert f"'{stored}' to '{requested}'" in problem["msg"]
    attempt.refresh_from_db()
    assert attempt.status == stored


def test_a_queued_human_task_may_be_completed_by_a_person(tenant):
    attempt = tenant.task_execution(task_name="review", status="queued")
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body.update(status="completed", output={"approved": True})
    assert (
        tenant.client.put(f"/task-executions/{attempt.id}", body, format="json").status_code == 200
    )


def test_correcting_an_older_attempt_is_422_naming_the_current_one(tenant):
    fe = tenant.flow_execution()
    old = tenant.task_execution(fe, status="failed", task_execution_idx=0)
    current = tenant.task_execution(fe, status="completed", task_execution_idx=1)
    response = correct_as_read(tenant, old, {"late": True})
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "task_execution_idx"]
    assert str(current.id) in problem["msg"]
    assert "task_execution_idx 1" in problem["msg"]
    old.refresh_from_db()
    assert (old.status, old.output) == ("failed", None)


def test_another_organizations_task_execution_is_404_and_untouched(tenant, other_tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    target = latest(fe, "a")
    body = tenant.client.get(f"/task-executions/{target.id}").json()
    body["output"] = {"hijack": True}
    before = snapshot_attempts(fe)
    response = other_tenant.client.put(
        f"/task-executions/{target.id}?execute_flow=true", body, format="json"
    )
    assert response.status_code == 404
    assert snapshot_attempts(fe) == before


def test_dry_run_answers_what_would_happen_and_writes_nothing(tenant, settings):
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["tests.helpers.callables"]
    fe = run_shape(tenant, SHAPES["diamond"], counted=True)
    CALLS.clear()
    target = latest(fe, "a")
    tables = (TaskExecution, TaskOutput, FlowExecution)
    before = [list(model.objects.order_by("pk").values()) for model in tables]

    response = correct_as_read(tenant, target, {"fixed": True}, "?dry_run=true&execute_flow=true")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["dry_run"] is True
    assert body["stale_tasks"] == ["b", "c", "d"]
    assert sorted(body["started_tasks"]) == ["b", "c"]
    assert body["new_attempts"] == []
    assert body["output"] == {"fixed": True}
    assert (
        body["updated_at"]
        == tenant.client.get(f"/task-executions/{target.id}").json()["updated_at"]
    )
    assert [list(model.objects.order_by("pk").values()) for model in tables] == before
    assert CALLS == []  # no job ran


def test_dry_run_still_validates(tenant):
    attempt = tenant.task_execution(status="stale")
    response = correct_as_read(tenant, attempt, {"x": 1}, "?dry_run=true")
    assert response.status_code == 422


def test_correction_without_updated_at_is_last_write_wins_and_records_the_actor(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    target = latest(fe, "d")
    body = tenant.client.get(f"/task-executions/{target.id}").json()
    del body["updated_at"]
    body.update(output={"w": 1}, modified_by="3f0c8a52-0d0a-4b6e-9f43-4a7c8a9c1e11")
    assert (
        tenant.client.put(f"/task-executions/{target.id}", body, format="json").status_code == 200
    )
    target.refresh_from_db()
    assert target.modified_by == "3f0c8a52-0d0a-4b6e-9f43-4a7c8a9c1e11"
    assert (
        TaskOutput.objects.filter(task_name="d").latest("created_at").modified_by
        == target.modified_by
    )


def test_marking_stale_takes_the_same_number_of_queries_for_10_and_10000_tasks(tenant):
    counts = {}
    for size in (10, 10_000):
        fe, first = chain_execution(tenant, size)
        with CaptureQueriesContext(connection) as queries:
            result = correct_task_execution(
                first,
                changes={"status": "completed", "output": {"fixed": True}},
                identity={},
                expected_updated_at=None,
                actor="t",
            )
        assert len(result.stale_tasks) == size - 1
        assert TaskExecution.objects.filter(flow_execution=fe, status="stale").count() == size - 1
        counts[size] = len(queries)
    assert counts[10] == counts[10_000]


def test_marking_stale_is_six_statements_on_postgresql_for_10_and_2000_tasks(tenant):
    """mark_stale with every record it keeps, at a number of statements written down here:
    the latest attempts; their UPDATE with its history rows (one statement); the tasks'
    outputs; their UPDATE with its history rows; the summary's counts (lock, patch). SQLite
    has no data-modifying CTEs: each UPDATE and its history rows are two statements there."""
    expected = 6 if connection.vendor == "postgresql" else 8
    cause = staleness.upstream_rerun_cause(None, "t0")
    for size in (10, 2_000):
        fe, _ = chain_execution(tenant, size, outputs=True)
        spec = spec_for(fe.flow_version)
        dependents = spec.dag.descendants("t0")
        with transaction.atomic():
            fe = FlowExecution.objects.select_for_update().get(pk=fe.pk)
            with CaptureQueriesContext(connection) as queries:
                marked = staleness.mark_stale(fe, spec, dependents, actor="t", cause=cause)
        assert len(queries) == expected, [q["sql"][:60] for q in queries]
        assert marked.stale == [f"t{i}" for i in range(1, size)]
        stale = TaskExecution.objects.filter(flow_execution=fe, status="stale")
        assert set(stale.values_list("stale_reason", "stale_upstream_task", "stale_by")) == {
            ("upstream_rerun", "t0", "t")
        }
        assert stale.count() == size - 1
        reason = "stale: upstream_rerun of t0"
        for model in (TaskExecution, TaskOutput):
            assert model.objects.filter(flow_execution=fe, status="stale").count() == size - 1
            recorded = model.history.filter(flow_execution_id=fe.pk, history_change_reason=reason)
            assert recorded.filter(status="stale").count() == recorded.count() == size - 1
        fe.refresh_from_db()
        assert fe.task_outputs_summary["status_counts"] == {"completed": 1, "stale": size - 1}


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(min_value=2, max_value=7))
    shape: dict[str, list[str]] = {}
    for i in range(size):
        earlier = [f"n{j}" for j in range(i)]
        shape[f"n{i}"] = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
    return shape


@settings(PROPERTY, max_examples=20)
@given(
    shape=dags(),
    corrections=st.lists(
        st.tuples(st.integers(min_value=0, max_value=6), st.booleans(), st.integers(0, 3)),
        min_size=1,
        max_size=5,
    ),
)
def test_freshness_invariant_holds_after_any_sequence_of_corrections(tenant, shape, corrections):
    fe = run_shape(tenant, shape)
    drive_corrections(tenant, fe, list(shape), corrections)
    assert {latest(fe, n).status for n in shape} == {"completed"}


def start_document_review(tenant: Any) -> str:
    from pathlib import Path

    text = (
        Path(__file__).resolve().parent.parent / "examples" / "document-review.yaml"
    ).read_text()
    flow = create_flow(tenant.org, name="review", definition=text, actor="t")
    response = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id), "input": {"document": "a b c"}}, format="json"
    )
    assert response.json()["status"] == "in_progress"
    return response.json()["id"]


def test_correcting_upstream_of_a_waiting_human_task_cancels_it(tenant):
    fe = start_document_review(tenant)
    waiting = latest(fe, "review")
    response = correct_as_read(tenant, latest(fe, "extract"), {"pages": 9, "title": "new"})
    assert response.json()["stale_tasks"] == ["review"]
    waiting.refresh_from_db()
    assert waiting.status == "stale"
    late = tenant.client.get(f"/task-executions/{waiting.id}").json()
    late.update(status="completed", output={"approved": True})
    assert (
        tenant.client.put(f"/task-executions/{waiting.id}", late, format="json").status_code == 422
    )
    assert "publish" not in attempts(fe)


def test_with_execute_flow_the_human_task_waits_again_with_the_corrected_input(tenant):
    fe = start_document_review(tenant)
    correct_as_read(
        tenant, latest(fe, "extract"), {"pages": 9, "title": "new"}, "?execute_flow=true"
    )
    review = latest(fe, "review")
    assert (review.task_execution_idx, review.status) == (1, "running")
    assert review.input == {"pages": 9, "title": "new"}
    assert FlowExecution.objects.get(pk=fe).status == "in_progress"


def test_check_freshness_command_reports_violations_and_fails(tenant):
    from django.core.management import CommandError, call_command

    fe = run_shape(tenant, SHAPES["chain"])
    out = io.StringIO()
    call_command("check_freshness", fe, stdout=out)
    assert "0 violation(s)" in out.getvalue()

    TaskExecution.objects.filter(pk=latest(fe, "c").pk).update(input={"tampered": True})
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 freshness violation"):
        call_command("check_freshness", fe, stdout=out)
    assert "task 'c'" in out.getvalue()
    with pytest.raises(CommandError, match="no such flow execution"):
        call_command("check_freshness", str(uuid.uuid4()))


def test_approving_a_rerun_human_task_reruns_its_stale_dependents(tenant):
    fe = start_document_review(tenant)
    first = latest(fe, "review")
    approve = tenant.client.get(f"/task-executions/{first.id}").json()
    approve.update(status="completed", output={"approved": True})
    tenant.client.put(f"/task-executions/{first.id}", approve, format="json")
    correct_as_read(tenant, latest(fe, "extract"), {"pages": 3, "title": "t"}, "?execute_flow=true")
    rerun = latest(fe, "review")
    assert (rerun.task_execution_idx, rerun.status) == (1, "running")
    assert latest(fe, "publish").status == "stale"

    response = tenant.client.patch(
        f"/task-executions/{rerun.id}",
        {"status": "completed", "output": {"approved": False}},
        format="json",
    )

    assert response.json()["started_tasks"] == ["publish"]
    publish = latest(fe, "publish")
    assert (publish.task_execution_idx, publish.status) == (1, "completed")
    assert publish.input["pages"] == 3
    assert publish.input["approved"] is False
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert flow_execution.status == "completed"
    assert freshness_violations(flow_execution) == []


def test_patching_an_older_stale_attempt_names_the_current_one(tenant):
    fe = start_document_review(tenant)
    old = latest(fe, "review")
    correct_as_read(tenant, latest(fe, "extract"), {"pages": 3, "title": "t"}, "?execute_flow=true")
    response = tenant.client.patch(
        f"/task-executions/{old.id}", {"output": {"x": 1}}, format="json"
    )
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "task_execution_idx"]
    assert str(latest(fe, "review").id) in problem["msg"]


# --- regressions found in review ----------------------------------------------------------------


def output_of(fe: str, task_name: str) -> TaskOutput:
    return (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name=task_name)
        .exclude(status="deleted")
        .latest("created_at")
    )


def settle_and_check(tenant: Any, fe: str) -> FlowExecution:
    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert is_settled(flow_execution)
    assert freshness_violations(flow_execution) == []
    return flow_execution


def test_editing_or_deleting_a_current_output_makes_its_dependents_stale(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    a_output = output_of(fe, "a")
    body = tenant.client.get(f"/task-outputs/{a_output.id}").json()
    body["output"] = {"edited": True}
    assert tenant.client.put(f"/task-outputs/{a_output.id}", body, format="json").status_code == 200
    assert [latest(fe, n).status for n in "bcd"] == ["stale"] * 3
    assert settle_and_check(tenant, fe).status == "completed"
    assert latest(fe, "b").input["up"]["a"] == {"edited": True}

    b_output = output_of(fe, "b")
    assert tenant.client.delete(f"/task-outputs/{b_output.id}").status_code == 204
    assert [latest(fe, n).status for n in "cd"] == ["stale"] * 2
    settle_and_check(tenant, fe)


def test_a_task_rerun_outside_a_correction_invalidates_what_ran_on_its_old_output(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    a = latest(fe, "a")
    TaskOutput.objects.filter(flow_execution_id=fe, task_name="a").update(output={"old": True})
    response = tenant.client.patch(f"/task-executions/{a.id}", {"status": "stale"}, format="json")
    assert response.status_code == 200
    flow_execution = settle_and_check(tenant, fe)
    assert flow_execution.status == "completed"
    assert latest(fe, "b").task_execution_idx == 1  # re-ran on a's fresh output


def test_deleting_a_waiting_human_attempt_leaves_the_flow_stale_and_recoverable(tenant):
    fe = start_document_review(tenant)
    waiting = latest(fe, "review")
    assert tenant.client.delete(f"/task-executions/{waiting.id}").status_code == 204
    assert FlowExecution.objects.get(pk=fe).status == "stale"
    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    again = latest(fe, "review")
    assert (again.task_execution_idx, again.status) == (1, "running")
    assert FlowExecution.objects.get(pk=fe).status == "in_progress"


def test_a_deleted_flow_execution_cancels_its_work_and_stays_deleted(tenant):
    fe = start_document_review(tenant)
    waiting = latest(fe, "review")
    assert tenant.client.delete(f"/flow-executions/{fe}").status_code == 204
    waiting.refresh_from_db()
    assert waiting.status == "stale"
    response = tenant.client.patch(
        f"/task-executions/{waiting.id}", {"status": "completed", "output": {}}, format="json"
    )
    assert response.status_code == 409
    assert FlowExecution.objects.get(pk=fe).status == "deleted"


def test_posting_a_queued_attempt_runs_it_on_its_resolved_input(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    body = {"flow_execution_id": fe, "organization_id": str(tenant.org.id), "task_name": "c"}
    wrong = tenant.client.post("/task-executions", {**body, "input": {"made": "up"}}, format="json")
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "input"]
    created = tenant.client.post("/task-executions", body, format="json")
    assert created.status_code == 201, created.json()
    rerun = latest(fe, "c")
    assert (rerun.task_execution_idx, rerun.status) == (1, "completed")
    settle_and_check(tenant, fe)


def test_queueing_a_task_whose_upstream_is_not_completed_is_refused(tenant):
    fe = run_shape(tenant, SHAPES["chain"])
    correct_as_read(tenant, latest(fe, "a"), {"x": 1})  # b, c, d stale
    body = {"flow_execution_id": fe, "organization_id": str(tenant.org.id), "task_name": "c"}
    response = tenant.client.post("/task-executions", body, format="json")
    assert response.status_code == 422
    assert "b" in response.json()["detail"][0]["msg"]


def test_a_failure_message_the_database_cannot_store_still_fails_the_attempt(tenant, settings):
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["tests.helpers.callables"]
    flow = create_flow(
        tenant.org,
        name="nul",
        definition=json.dumps(
            {
                "tasks": [
                    {
                        "name": "t",
                        "type": "python",
                        "config": {"callable": "tests.helpers.callables:raise_nul"},
                    }
                ]
            }
        ),
        actor="t",
    )
    response = tenant.client.post("/flow-executions", {"flow_id": str(flow.id)}, format="json")
    assert response.json()["status"] == "failed"
    assert latest(response.json()["id"], "t").status == "failed"


def test_a_value_the_database_cannot_store_is_a_422_not_a_500(tenant):
    flow = create_flow(
        tenant.org,
        name="n",
        definition='{"tasks": [{"name": "t", "type": "transform"}]}',
        actor="t",
    )
    response = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id), "input": "a\x00b"}, format="json"
    )
    if connection.vendor == "postgresql":
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "unstorable_value"
    else:
        assert response.status_code == 201  # SQLite stores it


def test_a_python_callable_only_imported_into_an_allowed_module_is_refused(tenant):
    definition = json.dumps(
        {
            "tasks": [
                {
                    "name": "t",
                    "type": "python",
                    "config": {"callable": "examples.tasks:ExecutorResult"},
                }
            ]
        }
    )
    response = tenant.client.post(
        "/flows", {"name": "sneaky", "definition": definition}, format="json"
    )
    assert response.status_code == 422
    assert "executions.executors" in response.json()["detail"][0]["msg"]
