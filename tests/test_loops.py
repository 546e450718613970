"""Loops: for_each (once per item) and until (until a condition holds), every iteration an
attempt with its `iteration`; corrections of one iteration re-run only what depends on it."""

from __future__ import annotations

from typing import Any

import pytest

from executions.models import FlowExecution, TaskExecution
from outputs.models import TaskOutput
from tests.helpers.callables import allow_test_callables  # noqa: F401 - autouse
from tests.helpers.flows import get_json, start_execution

pytestmark = pytest.mark.django_db(transaction=True)


def split_pages(count: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "split",
            "type": "transform",
            "input": {"pages": "${{ flow.input.pages }}"},
        },
        {
            "name": "extract",
            "type": "transform",
            "for_each": "${{ tasks.split.output.pages }}",
            "input": {"page": "${{ loop.item }}", "n": "${{ loop.index }}"},
        },
        {
            "name": "classify",
            "type": "transform",
            "for_each": "${{ tasks.extract.output }}",
            "input": {"kind": "${{ loop.item.page.kind }}", "n": "${{ loop.item.n }}"},
        },
        {
            "name": "report",
            "type": "transform",
            "input": {"kinds": "${{ tasks.classify.output[*].kind }}"},
        },
    ]


def pages(count: int) -> dict[str, Any]:
    return {"pages": [{"kind": "text" if i % 2 else "image", "no": i} for i in range(count)]}


def iterations_of(fe: str, task: str) -> list[TaskExecution]:
    return list(
        TaskExecution.objects.filter(flow_execution_id=fe, task_name=task).order_by(
            "task_execution_idx"
        )
    )


def test_a_for_each_runs_once_per_item_and_publishes_the_list_in_order(tenant):
    fe = start_execution(tenant, split_pages(5), pages(5))
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    extract = iterations_of(fe, "extract")
    assert [a.iteration for a in extract] == [0, 1, 2, 3, 4]
    assert [a.task_execution_idx for a in extract] == [0, 1, 2, 3, 4]
    output = TaskOutput.objects.filter(flow_execution_id=fe, task_name="classify").get()
    assert [o["n"] for o in output.output] == [0, 1, 2, 3, 4]
    report = TaskOutput.objects.get(flow_execution_id=fe, task_name="report")
    assert report.output == {"kinds": ["image", "text", "image", "text", "image"]}
    assert output.summary["iterations"] == {"total": 5, "completed": 5, "failed": 0}
    listed = get_json(
        tenant, f"/task-executions?flow_execution_id={fe}&task_name=extract&iteration=3"
    )
    assert [r["iteration"] for r in listed["results"]] == [3]


def current(fe: str, task: str) -> dict[int, TaskExecution]:
    """iteration → its current attempt (the highest idx)."""
    found: dict[int, TaskExecution] = {}
    for attempt in iterations_of(fe, task):
        if attempt.iteration is not None:
            found[attempt.iteration] = attempt
    return found


def put(tenant: Any, attempt: TaskExecution, output: Any, query: str = "") -> Any:
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body.update(output=output, status="completed")
    return tenant.client.put(f"/task-executions/{attempt.id}{query}", body, format="json")


def test_correcting_one_item_reruns_exactly_that_item_downstream(tenant):
    fe = start_execution(tenant, split_pages(300), pages(300))
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    before = {
        t: set(
            TaskExecution.objects.filter(flow_execution_id=fe, task_name=t).values_list(
                "id", flat=True
            )
        )
        for t in ("extract", "classify", "report")
    }
    assert len(before["extract"]) == 300
    assert sorted(a.iteration for a in iterations_of(fe, "extract")) == list(range(300))
    item = current(fe, "extract")[17]
    response = put(
        tenant, item, {"page": {"kind": "table", "no": 17}, "n": 17}, "?execute_flow=true"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["iteration"] == 17
    assert body["stale_tasks"] == ["classify", "report"]
    assert sorted(body["stale_iterations"]["classify"]) == list(range(300))
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    new_classify = TaskExecution.objects.filter(flow_execution_id=fe, task_name="classify").exclude(
        pk__in=before["classify"]
    )
    ran = {a.iteration for a in new_classify if a.reused_from_id is None}
    reused = {a.iteration for a in new_classify if a.reused_from_id is not None}
    assert ran == {17}
    assert reused == set(range(300)) - {17}
    assert (
        set(
            TaskExecution.objects.filter(flow_execution_id=fe, task_name="extract").values_list(
                "id", flat=True
            )
        )
        == before["extract"]
    )
    report = (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name="report")
        .order_by("created_at")
        .last()
    )
    assert report.output["kinds"][17] == "table"
    extract_output = (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name="extract")
        .order_by("created_at")
        .last()
    )
    assert extract_output.output[17]["page"]["kind"] == "table"
    assert extract_output.output[16]["page"]["kind"] == "image"
    from executions.selectors import freshness_violations

    assert freshness_violations(FlowExecution.objects.get(pk=fe)) == []


def shrink_flow() -> list[dict[str, Any]]:
    return [
        {"name": "split", "type": "transform", "input": {"items": "${{ flow.input.items }}"}},
        {
            "name": "double",
            "type": "transform",
            "for_each": "${{ tasks.split.output.items }}",
            "input": {"v": "${{ loop.item }}"},
        },
        {"name": "total", "type": "transform", "input": {"all": "${{ tasks.double.output }}"}},
    ]


def test_a_list_change_reuses_runs_and_retires_the_right_iterations(tenant):
    fe = start_execution(tenant, shrink_flow(), {"items": [1, 2, 3, 4]})
    first = current(fe, "double")
    split = TaskExecution.objects.get(flow_execution_id=fe, task_name="split")
    response = put(tenant, split, {"items": [1, 20, 3]}, "?execute_flow=true")
    assert response.status_code == 200, response.json()
    now = current(fe, "double")
    assert now[0].reused_from_id == first[0].pk
    assert now[2].reused_from_id == first[2].pk
    assert now[1].reused_from_id is None
    assert now[1].input == {"v": 20}
    assert now[3].pk == first[3].pk
    assert now[3].status == "stale"
    assert now[3].stale_reason == "iteration_removed"
    total = (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name="total")
        .order_by("created_at")
        .last()
    )
    assert total.output == {"all": [{"v": 1}, {"v": 20}, {"v": 3}]}
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    # and it grows again: the new item runs, the others are kept
    split = (
        TaskExecution.objects.filter(flow_execution_id=fe, task_name="split")
        .order_by("task_execution_idx")
        .last()
    )
    assert put(tenant, split, {"items": [1, 20, 3, 4, 5]}, "?execute_flow=true").status_code == 200
    grown = current(fe, "double")
    assert grown[3].reused_from_id == first[3].pk  # its item came back unchanged
    assert grown[4].reused_from_id is None
    assert grown[4].status == "completed"
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    # an empty list completes the task with []
    split = (
        TaskExecution.objects.filter(flow_execution_id=fe, task_name="split")
        .order_by("task_execution_idx")
        .last()
    )
    assert put(tenant, split, {"items": []}, "?execute_flow=true").status_code == 200
    total = (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name="total")
        .order_by("created_at")
        .last()
    )
    assert total.output == {"all": []}
    assert FlowExecution.objects.get(pk=fe).status == "completed"


def until_flow(max_iterations: int = 10, until: str = "${{ output.n >= `3` }}") -> list[dict]:
    return [
        {"name": "seed", "type": "transform", "input": {"start": "${{ flow.input.start }}"}},
        {
            "name": "count",
            "type": "transform",
            "loop": {"until": until, "max_iterations": max_iterations},
            "input": {
                "n": "${{ sum([loop.index, tasks.seed.output.start]) }}",
                "previous": "${{ loop.previous.output.n }}",
            },
        },
        {"name": "after", "type": "transform", "input": {"last": "${{ tasks.count.output.n }}"}},
    ]


def test_an_until_loop_runs_until_its_condition_holds(tenant):
    fe = start_execution(tenant, until_flow(), {"start": 0})
    rounds = iterations_of(fe, "count")
    assert [(a.iteration, a.task_execution_idx) for a in rounds] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert [a.input["previous"] for a in rounds] == [None, 0, 1, 2]
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    after = TaskOutput.objects.get(flow_execution_id=fe, task_name="after")
    assert after.output == {"last": 3}
    count = TaskOutput.objects.get(flow_execution_id=fe, task_name="count")
    assert count.output == {"n": 3, "previous": 2}
    assert count.summary["iterations"]["total"] == 4


def test_an_until_loop_that_never_holds_fails_naming_its_limit(tenant):
    fe = start_execution(
        tenant, until_flow(max_iterations=3, until="${{ output.n > `100` }}"), {"start": 0}
    )
    rounds = iterations_of(fe, "count")
    assert [a.iteration for a in rounds] == [0, 1, 2, None]
    assert rounds[-1].status == "failed"
    assert "max_iterations" in rounds[-1].error["message"]
    assert "3" in rounds[-1].error["message"]
    assert FlowExecution.objects.get(pk=fe).status == "failed"
    assert not TaskExecution.objects.filter(flow_execution_id=fe, task_name="after").exists()


def test_correcting_a_round_resumes_the_loop_after_it(tenant):
    fe = start_execution(tenant, until_flow(), {"start": 0})
    rounds = current(fe, "count")
    # round 1 says n = 2: round 2 now reads 2 as previous, runs, and the loop holds at round 3
    response = put(tenant, rounds[1], {"n": 2, "previous": 0}, "?dry_run=true")
    assert response.status_code == 200
    assert response.json()["stale_iterations"] == {"count": [2, 3]}
    assert TaskExecution.objects.filter(flow_execution_id=fe).count() == 6  # nothing written
    response = put(tenant, rounds[1], {"n": 2, "previous": 0}, "?execute_flow=true")
    assert response.status_code == 200, response.json()
    assert response.json()["stale_tasks"] == ["count", "after"]
    now = current(fe, "count")
    # round 3's input (previous: 2) did not change: reused, and its stale attempt keeps the cause
    assert now[3].reused_from_id == rounds[3].pk
    rounds[3].refresh_from_db()
    assert rounds[3].stale_reason == "correction"
    assert str(rounds[3].stale_correction_id) == response.json()["correction_id"]
    assert rounds[3].stale_upstream_iteration == 1
    assert now[0].pk == rounds[0].pk
    assert now[1].pk == rounds[1].pk
    assert now[2].pk != rounds[2].pk
    assert now[2].input["previous"] == 2
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    # a correction that makes the condition hold ends the loop there; later rounds retire
    response = put(tenant, now[1], {"n": 5, "previous": 0}, "?execute_flow=true")
    assert response.status_code == 200, response.json()
    now = current(fe, "count")
    assert now[2].stale_reason == "iteration_removed"
    assert now[3].stale_reason == "iteration_removed"
    after = (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name="after")
        .order_by("created_at")
        .last()
    )
    assert after.output == {"last": 5}
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    from executions.selectors import freshness_violations

    assert freshness_violations(FlowExecution.objects.get(pk=fe)) == []


def test_a_human_review_loop_repeats_until_approved(tenant):
    fe = start_execution(
        tenant,
        [
            {"name": "draft", "type": "transform", "input": {"text": "${{ flow.input.text }}"}},
            {
                "name": "review",
                "type": "human",
                "loop": {"until": "${{ output.approved }}", "max_iterations": 5},
                "input": {
                    "text": "${{ tasks.draft.output.text }}",
                    "notes": "${{ loop.previous.output.notes }}",
                },
            },
            {"name": "publish", "type": "transform", "input": {"ok": "${{ tasks.review.output }}"}},
        ],
        {"text": "hello"},
    )
    for round_ in range(3):
        waiting = TaskExecution.objects.get(
            flow_execution_id=fe, task_name="review", status="running"
        )
        assert waiting.iteration == round_
        approved = round_ == 2
        response = put(tenant, waiting, {"approved": approved, "notes": f"round {round_}"})
        assert response.status_code == 200, response.json()
    rounds = iterations_of(fe, "review")
    assert [a.iteration for a in rounds] == [0, 1, 2]
    assert rounds[2].input["notes"] == "round 1"
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    published = TaskOutput.objects.get(flow_execution_id=fe, task_name="publish")
    assert published.output == {"ok": {"approved": True, "notes": "round 2"}}


def test_max_parallel_bounds_the_iterations_in_flight(tenant, monkeypatch):
    from executions import jobs
    from executions.engine import worker

    started: list[Any] = []
    monkeypatch.setattr(jobs, "enqueue_after_commit", lambda org, ids: started.extend(ids))
    fe = start_execution(
        tenant,
        [
            {
                "name": "fetch",
                "type": "python",
                "config": {"callable": "tests.helpers.callables:counted"},
                "for_each": [10, 11, 12, 13, 14],
                "max_parallel": 2,
                "input": {"v": "${{ loop.item }}"},
            }
        ],
    )
    assert TaskExecution.objects.filter(flow_execution_id=fe, status="queued").count() == 5
    ran = []
    while started:
        in_flight = (
            len(started)
            + TaskExecution.objects.filter(flow_execution_id=fe, status="running").count()
        )
        assert in_flight <= 2
        attempt = TaskExecution.objects.get(pk=started.pop(0))
        ran.append(attempt.iteration)
        worker.run_attempt(attempt.pk, attempt.organization_id)
    assert ran == [0, 1, 2, 3, 4]
    output = TaskOutput.objects.get(flow_execution_id=fe, task_name="fetch")
    assert output.output == [{"v": v} for v in (10, 11, 12, 13, 14)]
    assert FlowExecution.objects.get(pk=fe).status == "completed"


def tolerant(tolerate: bool) -> list[dict]:
    return [
        {
            "name": "each",
            "type": "transform",
            "config": {"expression": "abs(v)"},
            "for_each": [1, "x", 3],
            "tolerate_failures": tolerate,
            "retries": 1,
            "input": {"v": "${{ loop.item }}"},
        },
        {"name": "sum", "type": "transform", "input": {"all": "${{ tasks.each.output }}"}},
    ]


def test_a_failed_iteration_fails_the_task_unless_tolerated(tenant):
    fe = start_execution(tenant, tolerant(False))
    failed = TaskExecution.objects.filter(flow_execution_id=fe, task_name="each", iteration=1)
    assert [a.status for a in failed.order_by("task_execution_idx")] == ["failed", "failed"]
    assert FlowExecution.objects.get(pk=fe).status == "failed"
    assert not TaskExecution.objects.filter(flow_execution_id=fe, task_name="sum").exists()
    fe = start_execution(tenant, tolerant(True))
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    each = TaskOutput.objects.get(flow_execution_id=fe, task_name="each")
    assert each.output == [1, None, 3]
    assert each.summary["iterations"] == {"total": 3, "completed": 2, "failed": 1}


def post_tasks(tenant: Any, tasks: list[dict]) -> Any:
    import yaml

    text = yaml.safe_dump({"tasks": tasks})
    return tenant.client.post("/flows", {"name": "loops", "definition": text}, format="json")


SPLIT = {"name": "split", "type": "transform", "input": {"items": [1, 2]}}


@pytest.mark.parametrize(
    ("task", "where", "kind", "words"),
    [
        (
            {"for_each": [1], "loop": {"until": "${{ output.ok }}"}},
            "loop",
            "invalid_definition",
            "for_each or loop, not both",
        ),
        ({"for_each": 5}, "for_each", "invalid_definition", "must be a list or one expression"),
        ({"for_each": "pages"}, "for_each", "invalid_definition", "must be a list or one"),
        (
            {"for_each": "${{ loop.item }}"},
            "for_each",
            "invalid_expression",
            "loop.… is read only in a task with for_each or loop",
        ),
        ({"input": {"x": "${{ loop.item }}"}}, "input", "invalid_expression", "loop.…"),
        (
            {"for_each": [1], "input": {"x": "${{ loop.previous.output }}"}},
            "input",
            "invalid_expression",
            "a for_each task's input reads loop.item or loop.index",
        ),
        (
            {"loop": {"until": "${{ output.ok }}", "max_iterations": 20000}},
            "loop.max_iterations",
            "limit_exceeded",
            "from 1 to 10000",
        ),
        ({"loop": {"max_iterations": 3}}, "loop.until", "required", "loop.until must be one"),
        (
            {"loop": {"until": "${{ tasks.split.output }}"}},
            "loop.until",
            "invalid_expression",
            "output…",
        ),
        ({"max_parallel": 2}, "max_parallel", "invalid_definition", "only to a task with for_each"),
        (
            {"for_each": [1], "max_parallel": 0},
            "max_parallel",
            "invalid_definition",
            "integer of 1 or more",
        ),
    ],
)
def test_a_loop_that_cannot_work_is_refused_naming_the_place(tenant, task, where, kind, words):
    from tests.helpers.contract import assert_error

    body = assert_error(
        post_tasks(tenant, [SPLIT, {"name": "t", "type": "transform", **task}]),
        422,
        "validation_error",
    )
    found = {
        ".".join(map(str, item["loc"][4:])): (item["type"], item["msg"]) for item in body["detail"]
    }
    assert where in found, found
    assert found[where][0] == kind
    assert words in found[where][1]
    assert "task 't'" in found[where][1]


def test_the_iteration_limit_holds_at_save_time_and_at_run_time(tenant, settings):
    from tests.helpers.contract import assert_error

    settings.FLOWPLATFORM_MAX_ITERATIONS = 3
    body = assert_error(
        post_tasks(tenant, [{"name": "t", "type": "transform", "for_each": [1, 2, 3, 4]}]),
        422,
        "validation_error",
    )
    assert "more than the limit of 3" in body["detail"][0]["msg"]
    fe = start_execution(
        tenant,
        [
            {"name": "split", "type": "transform", "input": {"items": "${{ flow.input }}"}},
            {"name": "t", "type": "transform", "for_each": "${{ tasks.split.output.items }}"},
        ],
        [1, 2, 3, 4],
    )
    failed = TaskExecution.objects.get(flow_execution_id=fe, task_name="t")
    assert failed.status == "failed"
    assert failed.iteration is None
    assert "more than the limit of 3 (FLOWPLATFORM_MAX_ITERATIONS)" in failed.error["message"]
    assert FlowExecution.objects.get(pk=fe).status == "failed"
    fe = start_execution(
        tenant,
        [
            {"name": "split", "type": "transform", "input": {"items": "${{ flow.input }}"}},
            {"name": "t", "type": "transform", "for_each": "${{ tasks.split.output }}"},
        ],
        "x",
    )
    failed = TaskExecution.objects.get(flow_execution_id=fe, task_name="t")
    assert failed.error == {
        "type": "LoopError",
        "message": "for_each gave an object, not a list: {'items': 'x'}",
    }


def test_marking_a_looped_task_stale_costs_the_same_queries_for_10_and_10000_iterations(tenant):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from executions.corrections.task_executions import correct_task_execution

    counts = {}
    for size in (10, 10_000):
        fe = start_execution(
            tenant,
            [
                {"name": "root", "type": "transform", "input": {"items": "${{ flow.input }}"}},
                {
                    "name": "each",
                    "type": "transform",
                    "for_each": "${{ tasks.root.output.items }}",
                    "input": {"v": "${{ loop.item }}"},
                },
                {
                    "name": "after",
                    "type": "transform",
                    "input": {"n": "${{ length(tasks.each.output) }}"},
                },
            ],
            list(range(size)),
        )
        assert FlowExecution.objects.get(pk=fe).status == "completed"
        root = TaskExecution.objects.get(flow_execution_id=fe, task_name="root")
        with CaptureQueriesContext(connection) as queries:
            result = correct_task_execution(
                root,
                changes={"status": "completed", "output": {"items": [1]}},
                identity={},
                expected_updated_at=None,
                actor="t",
            )
        assert result.stale_tasks == ["each", "after"]
        assert result.stale_iterations == {"each": list(range(size))}
        stale = TaskExecution.objects.filter(flow_execution_id=fe, status="stale")
        assert stale.filter(task_name="each").count() == size
        assert stale.get(task_name="after").stale_upstream_task == "root"
        counts[size] = len(queries)
    assert counts[10] == counts[10_000]


def test_reexecuting_a_looped_task_runs_every_iteration_again(tenant):
    fe = start_execution(tenant, shrink_flow(), {"items": [1, 2, 3]})
    first = current(fe, "double")
    response = tenant.client.post(f"/flow-executions/{fe}/execute?task=double")
    assert response.status_code == 202, response.json()
    again = current(fe, "double")
    assert all(again[i].pk != first[i].pk and again[i].reused_from_id is None for i in range(3))
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    total = (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name="total")
        .order_by("created_at")
        .last()
    )
    assert total.output == {"all": [{"v": 1}, {"v": 2}, {"v": 3}]}


def test_the_freshness_check_covers_every_iteration(tenant):
    from executions.selectors import freshness_violations

    fe = start_execution(tenant, shrink_flow(), {"items": [1, 2, 3]})
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert freshness_violations(flow_execution) == []
    second = current(fe, "double")[1]
    TaskExecution.objects.filter(pk=second.pk).update(input={"v": 99})
    found = freshness_violations(flow_execution)
    assert [(v.task_name, v.iteration, v.expected_input) for v in found] == [
        ("double", 1, {"v": 2})
    ]
    assert "task 'double' iteration 1" in str(found[0])
    # an iteration missing for an item is a violation too
    TaskExecution.objects.filter(pk=current(fe, "double")[2].pk).delete()
    TaskExecution.objects.filter(pk=second.pk).update(input={"v": 2})
    found = freshness_violations(flow_execution)
    assert len(found) == 1
    assert found[0].stored_input == [0, 1]


def test_records_causes_and_preview_tokens_name_the_iteration(tenant):
    fe = start_execution(tenant, split_pages(4), pages(4))
    item = current(fe, "extract")[2]
    new = {"page": {"kind": "table", "no": 2}, "n": 2}
    preview = put(tenant, item, new, "?dry_run=true")
    assert preview.status_code == 200
    body = preview.json()
    assert body["dry_run"] is True
    assert body["iteration"] == 2
    assert body["stale_tasks"] == ["classify", "report"]
    assert body["stale_iterations"] == {"classify": [0, 1, 2, 3]}
    token = body["preview_token"]
    # another iteration of the same task changes: the preview is out of date
    other = current(fe, "extract")[0]
    changed = {"page": {"kind": "text", "no": 0}, "n": 0}
    assert put(tenant, other, changed, "?execute_flow=true").status_code == 200
    outdated = put(tenant, current(fe, "extract")[2], new, f"?preview_token={token}")
    assert outdated.status_code == 409, outdated.json()
    assert outdated.json()["error"]["code"] == "preview_outdated"
    response = put(tenant, current(fe, "extract")[2], new)
    assert response.status_code == 200
    record = get_json(tenant, f"/corrections/{response.json()['correction_id']}")
    assert record["iteration"] == 2
    assert record["task_name"] == "extract"
    assert record["stale_iterations"] == {"classify": [0, 1, 2, 3]}
    stale = get_json(
        tenant,
        f"/task-executions?flow_execution_id={fe}&task_name=classify&iteration=1&status=stale",
    )
    cause = stale["results"][-1]["stale_cause"]
    assert cause["upstream_task"] == "extract"
    assert cause["upstream_iteration"] == 2
    assert cause["correction_id"] == response.json()["correction_id"]


def test_a_human_for_each_waits_for_a_person_per_item(tenant):
    fe = start_execution(
        tenant,
        [
            {
                "name": "check",
                "type": "human",
                "for_each": ["a", "b", "c"],
                "input": {"item": "${{ loop.item }}"},
            },
            {"name": "done", "type": "transform", "input": {"all": "${{ tasks.check.output }}"}},
        ],
    )
    waiting = list(
        TaskExecution.objects.filter(flow_execution_id=fe, status="running").order_by("iteration")
    )
    assert [(a.iteration, a.input) for a in waiting] == [
        (0, {"item": "a"}),
        (1, {"item": "b"}),
        (2, {"item": "c"}),
    ]
    for attempt in (waiting[2], waiting[0]):
        assert put(tenant, attempt, {"ok": attempt.input["item"]}).status_code == 200
    assert not TaskOutput.objects.filter(flow_execution_id=fe, task_name="check").exists()
    assert FlowExecution.objects.get(pk=fe).status == "in_progress"
    assert put(tenant, waiting[1], {"ok": "b"}).status_code == 200
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert flow_execution.status == "completed"
    done = TaskOutput.objects.get(flow_execution_id=fe, task_name="done")
    assert done.output == {"all": [{"ok": "a"}, {"ok": "b"}, {"ok": "c"}]}
    counted = flow_execution.task_outputs_summary["tasks"]["check"]["iterations"]
    assert counted == {"total": 3, "completed": 3, "failed": 0}


def test_a_looped_task_cannot_be_given_attempts_by_hand(tenant):
    from tests.helpers.contract import assert_error

    fe = start_execution(tenant, shrink_flow(), {"items": [1]})
    flow_execution = FlowExecution.objects.get(pk=fe)
    response = tenant.client.post(
        "/task-executions",
        {
            "flow_execution_id": fe,
            "organization_id": str(flow_execution.organization_id),
            "task_name": "double",
        },
        format="json",
    )
    body = assert_error(response, 422, "validation_error")
    assert body["detail"][0]["type"] == "looped_task"


def test_a_lowered_limit_holds_at_run_time_for_a_stored_until_loop(tenant, settings):
    from tests.helpers.flows import create_flow

    flow_id = create_flow(tenant, {"tasks": until_flow(10, "${{ output.n > `100` }}")})
    settings.FLOWPLATFORM_MAX_ITERATIONS = 2
    response = tenant.client.post(
        "/flow-executions", {"flow_id": flow_id, "input": {"start": 0}}, format="json"
    )
    assert response.status_code == 201, response.json()
    fe = response.json()["id"]
    rounds = iterations_of(fe, "count")
    assert [a.iteration for a in rounds] == [0, 1, None]
    assert "its 2 iterations (FLOWPLATFORM_MAX_ITERATIONS)" in rounds[-1].error["message"]
    assert FlowExecution.objects.get(pk=fe).status == "failed"


def test_a_long_for_each_runs_in_waves_of_at_most_the_wave_limit(tenant, settings):
    from flowplatform.tasks import jobs_run_here

    settings.FLOWPLATFORM_WAVE_TASKS = 10
    before = jobs_run_here()
    fe = start_execution(tenant, shrink_flow(), {"items": list(range(25))})
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    # At most 10 tasks a group: split and 9 iterations; 10 iterations; the last 6 and total.
    assert jobs_run_here() - before == 3
    total = TaskOutput.objects.get(flow_execution_id=fe, task_name="total")
    assert total.output == {"all": [{"v": v} for v in range(25)]}
