"""A write that fails half-way leaves nothing behind, and its retry does the work exactly once.

An error is injected in the middle of the product's real paths (the correction path, a
re-execution, a worker finishing an attempt) after some of their writes have happened. The
request must answer a 500 in the standard error shape, every tenant table must be as it was
before the request, and the same request sent again with the same Idempotency-Key must do the
work once. A worker's attempt must end failed (or retried), never half-finished or running.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from executions import transitions
from executions.engine import planning, publishing
from executions.engine import status as flow_status
from executions.models import Correction, FlowExecution, TaskExecution
from outputs import summary
from outputs.models import TaskOutput
from tests.helpers.corrections import correction
from tests.helpers.database import snapshot_tenant_tables
from tests.helpers.flows import start_extract_chain

pytestmark = pytest.mark.django_db(transaction=True)

INTERNAL_ERROR = {
    "code": "internal_error",
    "message": "An unexpected error occurred.",
    "details": {},
}


class Injected(Exception):
    """The failure the tests inject; its message must never reach a client."""


def inject(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    *,
    caller: str | None = None,
    after: bool = True,
) -> list[str]:
    """Make `owner.name` raise Injected once: `after` it did its work (its writes happened) or
    before, and only when called from the function named `caller`. Returns a list that records
    the failure, so a test can check it really happened."""
    real = getattr(owner, name)
    fired: list[str] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        armed = not fired and (caller is None or sys._getframe(1).f_code.co_name == caller)
        if armed and not after:
            fired.append(name)
            raise Injected(f"injected failure in {name}")
        result = real(*args, **kwargs)
        if armed:
            fired.append(name)
            raise Injected(f"injected failure after {name}")
        return result

    monkeypatch.setattr(owner, name, failing)
    return fired


def assert_internal_error(response: Any) -> None:
    assert response.status_code == 500, response.content[:2000]
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": INTERNAL_ERROR, "request_id": response["X-Request-ID"]}
    text = response.content.decode()
    assert "injected" not in text
    assert "Traceback" not in text


def attempts(flow_execution: FlowExecution) -> dict[str, list[tuple[int, str]]]:
    """task → [(idx, status), …] in idx order."""
    found: dict[str, list[tuple[int, str]]] = {}
    for name, idx, status in (
        TaskExecution.objects.filter(flow_execution=flow_execution)
        .order_by("task_name", "task_execution_idx")
        .values_list("task_name", "task_execution_idx", "status")
    ):
        found.setdefault(name, []).append((idx, status))
    return found


def current_output(flow_execution: FlowExecution, task_name: str) -> Any:
    row = (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name=task_name)
        .oldest_to_current()
        .last()
    )
    return None if row is None else (row.status, row.output)


def fails_then_succeeds_once(send: Callable[[], Any]) -> tuple[Any, Any]:
    """Send the request with the injected failure armed; nothing may change. Then send it
    again (the failure fires only once) and a third time: the third is the second's replay."""
    before = snapshot_tenant_tables()
    assert_internal_error(send())
    assert snapshot_tenant_tables() == before, "the failed request left partial state"
    retried = send()
    assert retried.status_code < 300, retried.content[:2000]
    assert "Idempotent-Replayed" not in retried  # the 500 was not kept: the work ran now
    after_retry = snapshot_tenant_tables()
    replayed = send()
    assert replayed["Idempotent-Replayed"] == "true"
    assert (replayed.status_code, replayed.content) == (retried.status_code, retried.content)
    assert snapshot_tenant_tables() == after_retry
    return retried, replayed


# The correction path: PUT /task-executions/{id} ----------------------------------------------


# (target, name, caller, after): where the correction path fails.
CORRECTION_FAULTS = {
    # between marking stale and creating the new attempts: schedule did its work, then failed
    "schedule after mark_stale": (planning, "schedule", "propagate_new_output", True),
    # after the dependents' attempts and outputs were marked stale: the summary's counts
    "summary counts in mark_stale": (
        summary,
        "move_status_counts",
        "_mark_outputs_stale",
        True,
    ),
    # in mark_stale, right after its first UPDATE (the attempts, with their history rows)
    "mark_stale after its first update": (transitions, "go_stale", "mark_stale", True),
    # the very end: the flow execution's status after everything else was written
    "status after propagation": (flow_status, "refresh_status", "propagate_new_output", True),
}


@pytest.mark.parametrize("execute_flow", [True, False], ids=["execute_flow", "no_execute_flow"])
@pytest.mark.parametrize("fault", list(CORRECTION_FAULTS))
def test_a_correction_that_fails_half_way_leaves_nothing_and_its_retry_works_once(
    tenant, monkeypatch, fault, execute_flow
):
    flow_execution = start_extract_chain(tenant)
    assert attempts(flow_execution) == {
        t: [(0, "completed")] for t in ("count", "extract", "report", "side")
    }
    send = correction(tenant, flow_execution, execute_flow=execute_flow)
    owner, name, caller, after = CORRECTION_FAULTS[fault]
    fired = inject(monkeypatch, owner, name, caller=caller, after=after)

    retried, _ = fails_then_succeeds_once(send)

    assert fired, "the injected failure did not happen"
    assert Correction.objects.filter(flow_execution=flow_execution).count() == 1
    body = retried.json()
    assert body["stale_tasks"] == ["count", "report"]
    assert body["output"] == {"pages": 7}
    if execute_flow:
        assert body["started_tasks"] == ["count"]  # report starts when count completes
        expected = {
            "extract": [(0, "completed")],
            "count": [(0, "stale"), (1, "completed")],
            "report": [(0, "stale"), (1, "completed")],
            "side": [(0, "completed")],
        }
        assert current_output(flow_execution, "count") == ("completed", {"pages": 7})
    else:
        assert body["started_tasks"] == []
        expected = {
            "extract": [(0, "completed")],
            "count": [(0, "stale")],
            "report": [(0, "stale")],
            "side": [(0, "completed")],
        }
        assert current_output(flow_execution, "count") == ("stale", {"pages": 1})
    assert attempts(flow_execution) == expected
    assert current_output(flow_execution, "extract") == ("completed", {"pages": 7})
    assert (
        TaskOutput.objects.filter(flow_execution=flow_execution, task_name="extract").count() == 2
    )


# Re-execution: POST /flow-executions/{id}/execute --------------------------------------------


@pytest.mark.parametrize(
    ("query", "caller", "owner", "name", "rerun"),
    [
        # the whole flow: every attempt marked stale, then the new ones created, then failure
        ("", "reexecute", planning, "schedule", ["count", "extract", "report", "side"]),
        # one task and its dependents, failing at the very end (the flow's status)
        ("?task=count", "reexecute", flow_status, "refresh_status", ["count", "report"]),
    ],
    ids=["whole_flow", "one_task"],
)
def test_a_reexecution_that_fails_half_way_leaves_nothing_and_its_retry_works_once(
    tenant, monkeypatch, query, caller, owner, name, rerun
):
    flow_execution = start_extract_chain(tenant)
    key = str(uuid.uuid4())
    url = f"/flow-executions/{flow_execution.pk}/execute{query}"
    tenant.client.get(f"/flow-executions/{flow_execution.pk}")  # the key's last use is recorded
    fired = inject(monkeypatch, owner, name, caller=caller)

    retried, _ = fails_then_succeeds_once(lambda: tenant.client.post(url, HTTP_IDEMPOTENCY_KEY=key))

    assert fired, "the injected failure did not happen"
    assert retried.status_code == 202
    assert retried.json()["status"] == "completed"
    expected = {
        task: [(0, "stale"), (1, "completed")] if task in rerun else [(0, "completed")]
        for task in ("count", "extract", "report", "side")
    }
    assert attempts(flow_execution) == expected


# A worker finishing an attempt: worker.run_attempt → worker.finish ---------------------------


@pytest.mark.usefixtures("jobs_per_attempt")
def test_a_worker_failing_after_publishing_the_output_records_the_attempt_failed(
    tenant, monkeypatch
):
    """finish() published the output, then failed: its transaction is rolled back (no output,
    no completed attempt, no dependents started) and the attempt is recorded failed."""
    fired = inject(monkeypatch, publishing, "publish_output", caller="finish")

    flow_execution = start_extract_chain(tenant)

    assert fired, "the injected failure did not happen"
    flow_execution.refresh_from_db()
    assert flow_execution.status == FlowExecution.Status.FAILED
    assert attempts(flow_execution) == {"extract": [(0, "failed")], "side": [(0, "completed")]}
    extract = TaskExecution.objects.get(flow_execution=flow_execution, task_name="extract")
    assert extract.error["type"] == "Injected"
    assert extract.output is None
    assert extract.completed_at is None
    assert current_output(flow_execution, "extract") is None
    assert set(flow_execution.task_outputs_summary["tasks"]) == {"side"}


@pytest.mark.usefixtures("jobs_per_attempt")
def test_a_worker_failing_after_publishing_the_output_retries_and_publishes_once(
    tenant, monkeypatch
):
    fired = inject(monkeypatch, publishing, "publish_output", caller="finish")

    flow_execution = start_extract_chain(tenant, extract_retries=1)

    assert fired, "the injected failure did not happen"
    flow_execution.refresh_from_db()
    assert flow_execution.status == FlowExecution.Status.COMPLETED
    assert attempts(flow_execution) == {
        "extract": [(0, "failed"), (1, "completed")],
        "count": [(0, "completed")],
        "report": [(0, "completed")],
        "side": [(0, "completed")],
    }
    outputs = TaskOutput.objects.filter(flow_execution=flow_execution, task_name="extract")
    assert list(outputs.values_list("output", flat=True)) == [{"pages": 1}]


def fail_to_record_the_failure(tenant: Any, monkeypatch: pytest.MonkeyPatch) -> FlowExecution:
    """finish() fails after publishing, and recording the failure fails too (retry() raises),
    so run_attempt falls back to a bare update of the attempt. No other job runs after it."""
    published = inject(monkeypatch, publishing, "publish_output", caller="finish")
    retried = inject(monkeypatch, planning, "retry", caller="finish", after=False)
    flow_execution = start_extract_chain(tenant, extract_retries=1, side=False)
    assert published, "the injected failure after publishing did not happen"
    assert retried, "the injected failure while recording the failure did not happen"
    flow_execution.refresh_from_db()
    return flow_execution


@pytest.mark.usefixtures("jobs_per_attempt")
def test_a_worker_that_cannot_even_record_the_failure_leaves_no_attempt_running(
    tenant, monkeypatch
):
    flow_execution = fail_to_record_the_failure(tenant, monkeypatch)

    assert attempts(flow_execution) == {"extract": [(0, "failed")]}
    extract = TaskExecution.objects.get(flow_execution=flow_execution, task_name="extract")
    assert extract.error == {"type": "Injected", "message": "the error could not be recorded"}
    assert current_output(flow_execution, "extract") is None


@pytest.mark.usefixtures("jobs_per_attempt")
def test_a_worker_that_cannot_even_record_the_failure_does_not_leave_the_flow_running(
    tenant, monkeypatch
):
    flow_execution = fail_to_record_the_failure(tenant, monkeypatch)

    assert flow_execution.status == FlowExecution.Status.FAILED
