"""What the fuzz tests (tests/test_fuzz.py) found, each kept as a plain test.

Each test of what schemathesis found replays the input that failed and checks the answer the
way the fuzzer did: the status code is documented for the operation and the body matches the
documented schema. What the engine property (random DAGs with loops) found is at the end, as
the smallest example it shrank to; an `xfail(strict=True)` one is a product bug not fixed yet
(the property steps around it: tests/helpers/fuzz_dags.py, KNOWN_BUGS).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from rest_framework.test import APIClient

from executions.models import FlowExecution, TaskExecution
from flowplatform.tenancy.services import create_api_key
from outputs.models import TaskOutput
from tests.helpers.flows import start_execution
from tests.helpers.tenants import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def api_schema(django_db_blocker: Any) -> Any:
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    return schemathesis.openapi.from_dict(json.loads(response.content))


def assert_documented(api_schema: Any, response: Any, method: str, template: str) -> None:
    """The status code is documented for `method template` and the body matches its schema."""
    operation = api_schema[template][method]
    assert str(response.status_code) in operation.responses.status_codes, response.content
    request = requests.Request(method, f"http://testserver{response.request['PATH_INFO']}")
    operation.validate_response(
        schemathesis.Response(
            status_code=response.status_code,
            headers={name.lower(): [value] for name, value in response.items()},
            content=response.content,
            request=request.prepare(),
            elapsed=0.0,
            verify=True,
        )
    )


# GET /flows/{id}/versions answered a paginated list, documented as a single version.


def test_flow_versions_answer_the_documented_paginated_list(tenant: Tenant, api_schema) -> None:
    flow = tenant.flow()

    response = tenant.client.get(f"/flows/{flow.id}/versions?limit=1")

    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert_documented(api_schema, response, "GET", "/flows/{id}/versions")


def test_flow_versions_document_the_pagination_parameters(tenant: Tenant, api_schema) -> None:
    flow = tenant.flow()

    response = tenant.client.get(f"/flows/{flow.id}/versions?limit=0")

    assert response.status_code == 422
    assert_documented(api_schema, response, "GET", "/flows/{id}/versions")
    parameters = {p.name for p in api_schema["/flows/{id}/versions"]["GET"].iter_parameters()}
    assert {"limit", "offset"} <= parameters


# A null JSON value (a task output's `tags`, an attempt's `output` and `error`) violated the
# schema: drf-spectacular wrote nullable JSON fields as oneOf [{}, {"type": "null"}], and null
# matches both branches.


def test_null_tags_of_a_task_output_match_the_schema(tenant: Tenant, api_schema) -> None:
    output = tenant.task_output(tags=None)

    response = tenant.client.get(f"/task-outputs/{output.id}")

    assert response.json()["tags"] is None
    assert_documented(api_schema, response, "GET", "/task-outputs/{id}")


def test_null_output_and_error_of_an_attempt_match_the_schema(tenant: Tenant, api_schema) -> None:
    attempt = tenant.task_execution(status=TaskExecution.Status.RUNNING, output=None, error=None)

    one = tenant.client.get(f"/task-executions/{attempt.id}")
    many = tenant.client.get("/task-executions")

    assert (one.json()["output"], one.json()["error"]) == (None, None)
    assert_documented(api_schema, one, "GET", "/task-executions/{id}")
    assert_documented(api_schema, many, "GET", "/task-executions")


def test_a_correction_answer_with_a_null_error_matches_the_schema(
    tenant: Tenant, api_schema
) -> None:
    attempt = tenant.task_execution(status=TaskExecution.Status.COMPLETED, output={"pages": 1})

    response = tenant.client.patch(
        f"/task-executions/{attempt.id}",
        {"status": "completed", "output": {"pages": 2}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["error"] is None
    assert_documented(api_schema, response, "PATCH", "/task-executions/{id}")


def test_the_schema_has_no_unsatisfiable_nullable_any_value(api_schema) -> None:
    assert '"oneOf": [{}, {"type": "null"}]' not in json.dumps(api_schema.raw_schema)


# `?ordering=,,` (empty entries in the comma-separated list) was a 500: the empty name reached
# order_by(). Empty entries are skipped, as they are in `status`.

LISTS = ["/flows", "/flow-executions", "/task-executions", "/task-outputs", "/corrections"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("ordering", [",,", ",", ",created_at", "-created_at,,"])
def test_ordering_with_empty_entries_is_not_a_server_error(
    tenant: Tenant, api_schema, path: str, ordering: str
) -> None:
    response = tenant.client.get(path, {"ordering": ordering})

    assert response.status_code == 200, response.content
    assert_documented(api_schema, response, "GET", path)


def test_ordering_skips_empty_entries_but_keeps_the_others(tenant: Tenant) -> None:
    first = tenant.flow(name="a")
    second = tenant.flow(name="b")

    response = tenant.client.get("/flows", {"ordering": ",-name,"})

    assert [flow["id"] for flow in response.json()["results"]] == [str(second.id), str(first.id)]


# DELETE /task-outputs/{id} takes the X-Correction-Reason header: a reason over 1,000 characters
# was an undocumented 422. The header's limit and the 422 are documented now, so the fuzzer
# sends over-long reasons.


def test_a_too_long_reason_on_delete_is_a_documented_422(tenant: Tenant, api_schema) -> None:
    output = tenant.task_output()

    response = tenant.client.delete(
        f"/task-outputs/{output.id}", HTTP_X_CORRECTION_REASON="x" * 1001
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "X-Correction-Reason"]
    assert_documented(api_schema, response, "DELETE", "/task-outputs/{id}")
    header = next(
        p
        for p in api_schema["/task-outputs/{id}"]["DELETE"].iter_parameters()
        if p.name == "X-Correction-Reason"
    )
    assert header.definition["schema"]["maxLength"] == 1000


# A body that is not JSON is a 415 (schemathesis's media-type probes got it on every write),
# and one over the size limit a 413: neither was documented.


def test_a_body_that_is_not_json_is_a_documented_415(tenant: Tenant, api_schema) -> None:
    response = tenant.client.post("/flows", "name: x", content_type="text/plain")

    assert response.status_code == 415
    assert_documented(api_schema, response, "POST", "/flows")


def test_a_body_over_the_size_limit_is_a_documented_413(
    tenant: Tenant, api_schema, settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    flow = tenant.flow()

    response = tenant.client.patch(f"/flows/{flow.id}", {"description": "x" * 2048}, format="json")

    assert response.status_code == 413
    assert_documented(api_schema, response, "PATCH", "/flows/{id}")


# A key without the scope a request needs (a read-only key writing, a write-only key reading) is
# a 403 `insufficient_scope` on every operation; no operation documented 403.


@pytest.mark.parametrize(
    ("scope", "method", "template"),
    [("write", "GET", "/flows"), ("read", "POST", "/flows"), ("read", "DELETE", "/flows/{id}")],
)
def test_a_key_without_the_scope_is_a_documented_403(
    tenant: Tenant, api_schema, scope: str, method: str, template: str
) -> None:
    flow = tenant.flow()
    client = APIClient()
    secret = create_api_key(tenant.org, name=f"{scope}-only", scopes=[scope]).secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    response = client.generic(
        method, template.replace("{id}", str(flow.id)), "{}", content_type="application/json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"
    assert_documented(api_schema, response, method, template)


# The engine property of tests/test_fuzz.py (random DAGs with loops, random corrections,
# against a from-scratch evaluation, tests/helpers/fuzz_dags.py) found these.

UNTIL_THEN_READER = [
    {
        "name": "count",
        "type": "transform",
        "loop": {"until": "${{ output.n >= `1` }}", "max_iterations": 4},
        "input": {"prev": "${{ loop.previous.output.n }}", "base": 1, "i": "${{ loop.index }}"},
        "config": {"expression": "{n: sum([not_null(prev, min([base, `2`])), `1`])}"},
    },
    {"name": "reader", "type": "transform", "input": {"n": "${{ tasks.count.output.n }}"}},
]


def current_output(fe: str, task: str) -> Any:
    """The task's published output: its newest non-deleted TaskOutput."""
    return (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name=task).oldest_to_current().last()
    )


# An until loop whose condition held on its last round (count: n = 2 on round 0, until
# n >= 1), corrected on that round to {"n": 0} without execute_flow: the condition no longer
# holds, so the loop must go on (round 1: n = 0 + 1 = 1, which holds). No round after it could
# go stale, so the task stayed completed and ?only=stale re-ran only `reader`, on the old
# published {"n": 2}. Now the correction carries the loop on to round 1 (as completing a
# review round does); `reader` is stale until ?only=stale (or execute_flow) runs it.


@pytest.mark.django_db(transaction=True)
def test_an_until_loop_whose_last_round_no_longer_holds_resumes_with_execute_flow(tenant) -> None:
    fe = start_execution(tenant, UNTIL_THEN_READER)
    (last,) = TaskExecution.objects.filter(flow_execution_id=fe, task_name="count")
    body = tenant.client.get(f"/task-executions/{last.id}").json()
    body.update(output={"n": 0}, status="completed")
    response = tenant.client.put(
        f"/task-executions/{last.id}?execute_flow=true", body, format="json"
    )
    assert response.status_code == 200, response.json()

    assert FlowExecution.objects.get(pk=fe).status == "completed"
    rounds = TaskExecution.objects.filter(flow_execution_id=fe, task_name="count")
    assert [(a.iteration, a.output) for a in rounds.order_by("task_execution_idx")] == [
        (0, {"n": 0}),
        (1, {"n": 1}),
    ]
    assert current_output(fe, "count").output == {"n": 1}
    assert current_output(fe, "reader").output == {"n": 1}


@pytest.mark.django_db(transaction=True)
def test_an_until_loop_whose_last_round_no_longer_holds_resumes_on_only_stale(tenant) -> None:
    fe = start_execution(tenant, UNTIL_THEN_READER)
    (last,) = TaskExecution.objects.filter(flow_execution_id=fe, task_name="count")
    assert (last.iteration, last.output, current_output(fe, "count").output) == (0, *[{"n": 2}] * 2)
    body = tenant.client.get(f"/task-executions/{last.id}").json()
    body.update(output={"n": 0}, status="completed")
    assert tenant.client.put(f"/task-executions/{last.id}", body, format="json").status_code == 200
    response = tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    assert response.status_code == 202, response.json()

    assert FlowExecution.objects.get(pk=fe).status == "completed"
    rounds = TaskExecution.objects.filter(flow_execution_id=fe, task_name="count")
    assert [(a.iteration, a.input, a.output) for a in rounds.order_by("task_execution_idx")] == [
        (0, {"prev": None, "base": 1, "i": 0}, {"n": 0}),
        (1, {"prev": 0, "base": 1, "i": 1}, {"n": 1}),
    ]
    assert current_output(fe, "count").output == {"n": 1}
    assert current_output(fe, "reader").output == {"n": 1}


# Upgrades (the property's definition changes) found these.


def _put_output(tenant: Any, attempt: TaskExecution, output: Any) -> None:
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body.update(output=output, status="completed")
    response = tenant.client.put(
        f"/task-executions/{attempt.id}?execute_flow=true", body, format="json"
    )
    assert response.status_code == 200, response.json()


def _new_version(tenant: Any, fe: str, tasks: list[dict]) -> None:
    flow = FlowExecution.objects.get(pk=fe).flow_id
    definition = json.dumps({"tasks": tasks})
    response = tenant.client.patch(f"/flows/{flow}", {"definition": definition}, format="json")
    assert response.status_code == 200, response.json()
    response = tenant.client.post(
        f"/flow-executions/{fe}/upgrade?execute_flow=true", {}, format="json"
    )
    assert response.status_code == 200, response.json()


def _for_each(expression: str) -> list[dict]:
    return [
        {"name": "items", "type": "transform", "input": [1, 2, 3]},
        {
            "name": "each",
            "type": "transform",
            "for_each": "${{ tasks.items.output }}",
            "input": {"item": "${{ loop.item }}"},
            "config": {"expression": expression},
        },
    ]


# A for_each's iteration retired (its item left the list: items corrected to [1, 2]) keeps
# its result, so that the item coming back unchanged is reused. An upgrade then changed the
# looped task's config (item → item + 10): the current iterations ran again, but the retired
# one kept its result of the old definition, and when the item came back (items corrected to
# [1, 2, 3] again) early cutoff reused it: [11, 12, 3]. Now the upgrade marks the changed
# task's retired iterations as doubted of themselves (engine.upgrading), and iteration 2 runs.


@pytest.mark.django_db(transaction=True)
def test_an_item_that_comes_back_after_an_upgrade_changed_its_loop_runs_again(tenant) -> None:
    fe = start_execution(tenant, _for_each("item"))
    items = TaskExecution.objects.get(flow_execution_id=fe, task_name="items")
    _put_output(tenant, items, [1, 2])
    _new_version(tenant, fe, _for_each("sum([item, `10`])"))
    assert current_output(fe, "each").output == [11, 12]
    items = TaskExecution.objects.filter(flow_execution_id=fe, task_name="items").latest(
        "task_execution_idx"
    )
    _put_output(tenant, items, [1, 2, 3])

    assert current_output(fe, "each").output == [11, 12, 13]
    back = TaskExecution.objects.filter(flow_execution_id=fe, task_name="each", iteration=2)
    assert back.latest("task_execution_idx").reused_from_id is None


# The same for an until loop's round after the one whose condition now holds (count: n = 1,
# 2, 3 until n >= 3; round 1 corrected to {"n": 3}, so round 2 retires): an upgrade that
# changed only max_iterations re-ran the loop, round 1 gave n = 2 again, and round 2, on the
# same input as its retired attempt, reused that attempt's result of the old definition.


@pytest.mark.django_db(transaction=True)
def test_a_round_that_comes_back_after_an_upgrade_changed_its_loop_runs_again(tenant) -> None:
    tasks = [
        {
            **UNTIL_THEN_READER[0],
            "loop": {"until": "${{ output.n >= `3` }}", "max_iterations": 4},
            "input": {"prev": "${{ loop.previous.output.n }}", "base": 0, "i": "${{ loop.index }}"},
        }
    ]
    fe = start_execution(tenant, tasks)
    round_1 = TaskExecution.objects.get(flow_execution_id=fe, task_name="count", iteration=1)
    _put_output(tenant, round_1, {"n": 3})  # round 2 retires
    tasks[0]["loop"]["max_iterations"] = 5
    _new_version(tenant, fe, tasks)

    assert FlowExecution.objects.get(pk=fe).status == "completed"
    assert current_output(fe, "count").output == {"n": 3}
    rounds = TaskExecution.objects.filter(flow_execution_id=fe, task_name="count")
    round_2 = rounds.filter(iteration=2).latest("task_execution_idx")
    assert (round_2.status, round_2.input["prev"]) == ("completed", 2)
    assert round_2.reused_from_id is None


# After an upgrade removed a task, its retired attempts are still among the flow execution's
# attempts; a wave (engine.waves) read every task's latest attempt and asked the new version's
# definition about each (cutoff.reusable_attempts: spec.tasks[name]): KeyError on the removed
# one, so every later wave failed, was logged as an error and ran again one attempt at a time
# (the outcome is right; the property checks outcomes, and skips this log check for it).


@pytest.mark.django_db(transaction=True)
def test_waves_after_an_upgrade_removed_a_task_run_as_waves(tenant, caplog) -> None:
    tasks = [
        {"name": "a", "type": "transform", "input": {"v": 1}},
        {"name": "b", "type": "transform", "input": {"a": "${{ tasks.a.output }}"}},
        {"name": "side", "type": "transform", "input": {"a": "${{ tasks.a.output }}"}},
    ]
    fe = start_execution(tenant, tasks)
    _new_version(tenant, fe, tasks[:2])
    a = TaskExecution.objects.get(flow_execution_id=fe, task_name="a")
    with caplog.at_level("ERROR", logger="flowplatform.engine"):
        _put_output(tenant, a, {"v": 2})

    assert current_output(fe, "b").output == {"a": {"v": 2}}
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
