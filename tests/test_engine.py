"""Flows that run: scheduling, inputs from upstream outputs, retries, human tasks, re-execution.

Transactional tests: jobs are enqueued on commit, as in production, and the embedded backend
runs them in-process before POST /flow-executions answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from executions.engine import worker
from executions.executors import ExecutorResult
from executions.models import FlowExecution, TaskExecution
from outputs.models import TaskOutput
from tests.helpers.callables import CALLS
from tests.helpers.flows import attempts, create_flow, latest

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def allow_test_callables(settings: Any) -> Iterator[None]:
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.callables"]
    CALLS.clear()
    yield
    CALLS.clear()


def run(tenant: Any, definition: dict | str, flow_input: Any = None, **extra: Any) -> dict:
    flow_id = create_flow(tenant, definition)
    response = tenant.client.post(
        "/flow-executions", {"flow_id": flow_id, "input": flow_input, **extra}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()


def task(name: str, type_: str = "transform", **fields: Any) -> dict:
    return {"name": name, "type": type_, **fields}


def test_chain_passes_each_output_to_the_next_task(tenant):
    fe = run(
        tenant,
        {
            "tasks": [
                task("a", input={"n": "${{ flow.input.n }}"}),
                task(
                    "b", input={"m": "${{ tasks.a.output.n }}", "note": "n=${{ tasks.a.output.n }}"}
                ),
                task("c", config={"expression": "m"}, input="${{ tasks.b.output }}"),
            ]
        },
        {"n": 7},
    )
    assert fe["status"] == "completed"
    runs = attempts(fe["id"])
    assert {name: len(items) for name, items in runs.items()} == {"a": 1, "b": 1, "c": 1}
    assert runs["b"][0].input == {"m": 7, "note": "n=7"}
    assert runs["c"][0].output == 7
    assert all(items[0].task_execution_idx == 0 for items in runs.values())


def test_diamond_runs_the_join_once_with_both_branches(tenant):
    fe = run(
        tenant,
        {
            "tasks": [
                task("root", input="${{ flow.input }}"),
                task("left", config={"expression": "x"}, input="${{ tasks.root.output }}"),
                task("right", config={"expression": "y"}, input="${{ tasks.root.output }}"),
                task(
                    "join",
                    input={"l": "${{ tasks.left.output }}", "r": "${{ tasks.right.output }}"},
                ),
            ]
        },
        {"x": 1, "y": 2},
    )
    assert fe["status"] == "completed"
    runs = attempts(fe["id"])
    assert len(runs["join"]) == 1
    assert runs["join"][0].output == {"l": 1, "r": 2}


def test_fan_out_and_fan_in(tenant):
    branches = [
        task(f"b{i}", input={"i": i, "seed": "${{ tasks.root.output }}"}) for i in range(20)
    ]
    join = task("join", input={f"b{i}": f"${{{{ tasks.b{i}.output.i }}}}" for i in range(20)})
    fe = run(tenant, {"tasks": [task("root", input=5), *branches, join]})
    assert fe["status"] == "completed"
    runs = attempts(fe["id"])
    assert len(runs) == 22
    assert all(len(items) == 1 for items in runs.values())
    assert runs["join"][0].output == {f"b{i}": i for i in range(20)}


def test_human_task_waits_for_a_person_then_releases_its_dependents(tenant):
    fe = run(tenant, (EXAMPLES / "document-review.yaml").read_text(), {"document": "one two three"})
    assert fe["status"] == "in_progress"
    runs = attempts(fe["id"])
    assert runs["review"][0].status == "running"
    assert runs["review"][0].input == {"pages": 1, "title": "one two three"}
    assert "publish" not in runs

    review = tenant.client.get(f"/task-executions/{runs['review'][0].id}").json()
    review.update(status="completed", output={"approved": True})
    response = tenant.client.put(f"/task-executions/{review['id']}", review, format="json")
    assert response.status_code == 200

    publish = latest(fe["id"], "publish")
    assert publish.status == "completed"
    assert publish.output == {"pages": 1, "approved": True, "headline": "one two three (1 pages)"}
    flow_execution = FlowExecution.objects.get(pk=fe["id"])
    assert flow_execution.status == "completed"
    assert flow_execution.task_outputs_summary["tasks"]["review"] == {"type": "object", "keys": 1}


def test_failing_task_with_two_retries_leaves_three_failed_attempts_and_a_failed_flow(tenant):
    fe = run(
        tenant,
        {
            "tasks": [
                task(
                    "flaky",
                    "python",
                    config={"callable": "tests.helpers.callables:always_fails"},
                    retries=2,
                    input=1,
                ),
                task("after", input="${{ tasks.flaky.output }}"),
                task("independent", input="still runs"),
            ]
        },
    )
    assert fe["status"] == "failed"
    runs = attempts(fe["id"])
    assert [a.task_execution_idx for a in runs["flaky"]] == [0, 1, 2]
    assert {a.status for a in runs["flaky"]} == {"failed"}
    assert runs["flaky"][0].error == {"type": "ValueError", "message": "cannot handle 1"}
    assert "after" not in runs
    assert runs["independent"][0].status == "completed"


def test_retry_that_succeeds_completes_the_flow_and_keeps_the_failed_attempt(tenant):
    fe = run(
        tenant,
        {
            "tasks": [
                task(
                    "t",
                    "python",
                    config={"callable": "tests.helpers.callables:fails_once"},
                    retries=1,
                )
            ]
        },
    )
    assert fe["status"] == "completed"
    first, second = attempts(fe["id"])["t"]
    assert (first.status, first.error["type"]) == ("failed", "RuntimeError")
    assert (second.task_execution_idx, second.status, second.output) == (
        1,
        "completed",
        {"ok": True},
    )


def test_expression_that_fails_at_run_time_fails_the_task(tenant):
    fe = run(tenant, {"tasks": [task("t", input="${{ length(flow.input.n) }}")]}, {"n": 5})
    assert fe["status"] == "failed"
    attempt = latest(fe["id"], "t")
    assert attempt.error["type"] == "ExpressionError"


def test_python_callable_with_its_own_summary(tenant):
    fe = run(tenant, (EXAMPLES / "word-stats.yaml").read_text(), {"text": "a bb ccc"})
    assert fe["status"] == "completed"
    runs = attempts(fe["id"])
    assert runs["report"][0].output == {"total": 6, "words": 3, "longest": 3}
    summary = FlowExecution.objects.get(pk=fe["id"]).task_outputs_summary
    assert summary["tasks"]["total"] == {"total": 6}
    assert summary["tasks"]["lengths"] == {"type": "array", "items": 3}
    assert summary["status_counts"] == {"completed": 4}


def test_summary_matches_the_published_outputs(tenant):
    fe = run(tenant, (EXAMPLES / "word-stats.yaml").read_text(), {"text": "x yy"})
    outputs = TaskOutput.objects.filter(flow_execution_id=fe["id"])
    summary = FlowExecution.objects.get(pk=fe["id"]).task_outputs_summary
    assert summary["tasks"] == {o.task_name: o.summary for o in outputs}
    assert {o.task_name: o.output for o in outputs} == {
        name: items[-1].output for name, items in attempts(fe["id"]).items()
    }


def test_custom_executor_from_settings_runs(tenant, settings):
    settings.FLOWPLATFORM_EXECUTORS = {"shout": "tests.helpers.callables.ShoutWithSummaryExecutor"}
    fe = run(tenant, {"tasks": [task("s", "shout", input="${{ flow.input }}")]}, "hi")
    assert latest(fe["id"], "s").output == "HI"
    assert TaskOutput.objects.get(flow_execution_id=fe["id"]).summary == {"loud": True}


def test_reexecuting_the_whole_flow_adds_an_attempt_per_task_and_keeps_history(tenant):
    definition = {
        "tasks": [
            task(
                "a",
                "python",
                config={"callable": "tests.helpers.callables:counted"},
                input="${{ flow.input }}",
            ),
            task(
                "b",
                "python",
                config={"callable": "tests.helpers.callables:counted"},
                input="${{ tasks.a.output }}",
            ),
        ]
    }
    fe = run(tenant, definition, 3)
    first = {name: items[0] for name, items in attempts(fe["id"]).items()}
    response = tenant.client.post(f"/flow-executions/{fe['id']}/execute")
    assert response.status_code == 202
    assert response.json()["status"] == "completed"
    runs = attempts(fe["id"])
    for name in ("a", "b"):
        old, new = runs[name]
        assert old.id == first[name].id
        assert (old.status, old.output) == ("stale", 3)
        assert (new.task_execution_idx, new.status, new.output) == (1, "completed", 3)
    assert CALLS == ["3", "3", "3", "3"]


def test_execution_runs_the_pinned_version(tenant):
    flow_id = create_flow(tenant, {"tasks": [task("v", input="one")]})
    tenant.client.patch(
        f"/flows/{flow_id}",
        {"definition": yaml.safe_dump({"tasks": [task("v", input="two")]})},
        format="json",
    )
    old = tenant.client.post(
        "/flow-executions", {"flow_id": flow_id, "flow_version": 1}, format="json"
    )
    new = tenant.client.post("/flow-executions", {"flow_id": flow_id}, format="json")
    assert (old.json()["flow_version"], latest(old.json()["id"], "v").output) == (1, "one")
    assert (new.json()["flow_version"], latest(new.json()["id"], "v").output) == (2, "two")


def test_a_cancelled_attempt_that_finishes_late_changes_nothing(tenant):
    fe = run(tenant, {"tasks": [task("a", input=1), task("b", input="${{ tasks.a.output }}")]})
    a = latest(fe["id"], "a")
    TaskExecution.objects.filter(pk=a.pk).update(status="stale")
    before = list(TaskExecution.objects.order_by("id").values())
    outputs_before = TaskOutput.objects.count()

    assert worker.finish(a, ExecutorResult({"late": True})) is False
    assert worker.finish(a, error={"type": "Boom", "message": "late"}) is False
    worker.run_attempt(a.pk)  # a duplicate job for an attempt that is not queued

    assert list(TaskExecution.objects.order_by("id").values()) == before
    assert TaskOutput.objects.count() == outputs_before


def test_thousand_task_chain_runs_in_one_request_on_the_embedded_backend(tenant):
    tasks = [task("t0", input="${{ flow.input }}")]
    tasks += [task(f"t{i}", input=f"${{{{ tasks.t{i - 1}.output }}}}") for i in range(1, 1000)]
    fe = run(tenant, {"tasks": tasks}, "carried")
    assert fe["status"] == "completed"
    assert (
        TaskExecution.objects.filter(flow_execution_id=fe["id"], status="completed").count() == 1000
    )
    assert latest(fe["id"], "t999").output == "carried"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"flow_id": "00000000-0000-0000-0000-000000000000"}, 404, "Flow not found"),
        ({"flow_id": "not-a-uuid"}, 422, None),
        ({"flow_version": 1}, 422, None),
        ({"flow_id": None, "colour": "red"}, 422, None),
    ],
)
def test_starting_with_a_bad_body_is_refused_and_writes_nothing(tenant, body, status, message):
    response = tenant.client.post("/flow-executions", body, format="json")
    assert response.status_code == status
    if message:
        assert response.json()["error"]["message"] == message
    assert not FlowExecution.objects.exists()


def test_starting_a_missing_version_or_another_orgs_flow_is_refused(tenant, other_tenant):
    flow_id = create_flow(tenant, {"tasks": [task("a")]})
    response = tenant.client.post(
        "/flow-executions", {"flow_id": flow_id, "flow_version": 9}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "flow_version"]
    foreign = other_tenant.client.post("/flow-executions", {"flow_id": flow_id}, format="json")
    assert foreign.status_code == 404
    assert not FlowExecution.objects.exists()


def test_starting_a_deleted_flow_is_a_conflict(tenant):
    flow_id = create_flow(tenant, {"tasks": [task("a")]})
    tenant.client.delete(f"/flows/{flow_id}")
    response = tenant.client.post("/flow-executions", {"flow_id": flow_id}, format="json")
    assert response.status_code == 409


def test_reexecuting_another_orgs_flow_execution_is_a_404(tenant, other_tenant):
    fe = run(tenant, {"tasks": [task("a")]})
    response = other_tenant.client.post(f"/flow-executions/{fe['id']}/execute")
    assert response.status_code == 404
    assert TaskExecution.objects.filter(flow_execution_id=fe["id"]).count() == 1


class JsonHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        received = json.loads(self.rfile.read(length) or b"null")
        if self.path == "/echo":
            self._send(200, json.dumps({"received": received, "auth": self.headers.get("X-Token")}))
        elif self.path == "/error":
            self._send(500, "{}")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/elsewhere")
            self.end_headers()
        elif self.path == "/huge":
            self._send(200, json.dumps({"blob": "x" * 5000}))
        elif self.path == "/text":
            self._send(200, "not json")

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server(settings: Any) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), JsonHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES = 1000
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_task_sends_its_input_and_stores_the_json_response(tenant, http_server):
    config = {"url": f"{http_server}/echo", "headers": {"X-Token": "t"}, "timeout": 5}
    fe = run(
        tenant,
        {"tasks": [task("call", "http", config=config, input={"q": "${{ flow.input }}"})]},
        4,
    )
    assert fe["status"] == "completed"
    assert latest(fe["id"], "call").output == {"received": {"q": 4}, "auth": "t"}


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/error", "answered 500"),
        ("/redirect", "redirects are not followed"),
        ("/huge", "larger than"),
        ("/text", "not JSON"),
    ],
)
def test_http_task_failures_are_recorded_not_raised(tenant, http_server, path, fragment):
    fe = run(tenant, {"tasks": [task("call", "http", config={"url": f"{http_server}{path}"})]})
    attempt = latest(fe["id"], "call")
    assert attempt.status == "failed"
    assert fragment in attempt.error["message"]
    assert fe["status"] == "failed"


def test_http_host_removed_from_the_allow_list_after_saving_is_refused_at_run_time(
    tenant, http_server, settings
):
    flow_id = create_flow(
        tenant, {"tasks": [task("call", "http", config={"url": f"{http_server}/echo"})]}
    )
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = []
    fe = tenant.client.post("/flow-executions", {"flow_id": flow_id}, format="json").json()
    assert latest(fe["id"], "call").error["type"] == "NotAllowed"


def test_jobs_are_enqueued_only_after_commit_so_a_rolled_back_start_runs_nothing(tenant):
    from django.db import transaction

    from executions.services import start_flow_execution

    flow_id = create_flow(
        tenant,
        {"tasks": [task("a", "python", config={"callable": "tests.helpers.callables:counted"})]},
    )

    seen_inside: dict[str, Any] = {}

    def start_then_fail() -> None:
        with transaction.atomic():
            start_flow_execution(tenant.org, flow_id=flow_id, input="x", actor="t")
            seen_inside["queued"] = TaskExecution.objects.filter(status="queued").count()
            seen_inside["calls"] = list(CALLS)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        start_then_fail()
    assert seen_inside == {"queued": 1, "calls": []}  # created; its job waits for the commit
    assert CALLS == []
    assert not FlowExecution.objects.exists()
    assert not TaskExecution.objects.exists()
