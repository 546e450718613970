"""A worker that survives a database outage loses nothing it did: the outcome it ran into the
outage is recorded once the database is back (not failed as lost, not run again), and a claim
whose commit it could not confirm is handed back to run, never stranded."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.db import OperationalError, connection
from django_tasks_db.models import DBTaskResult

from executions import jobs, leases, transitions
from executions.engine import worker
from executions.models import FlowExecution, TaskExecution
from executions.services import start_flow_execution
from flowplatform import rls
from flows.services import create_flow
from tests.helpers.callables import CALLS
from tests.helpers.database import app_database_url, database_address
from tests.helpers.proxy import DatabaseProxy, through_proxy
from tests.helpers.workers import start_worker, stop, wait_until_settled

pytestmark = pytest.mark.django_db(transaction=True)


def definition(callable_path: str, input: dict[str, Any]) -> str:
    return json.dumps(
        {
            "tasks": [
                {
                    "name": "a",
                    "type": "python",
                    "config": {"callable": callable_path},
                    "input": input,
                },
                {"name": "b", "type": "transform", "input": "${{ tasks.a.output.value }}"},
            ]
        }
    )


@pytest.mark.postgresql
def test_an_outcome_cut_off_from_the_database_is_recorded_once_it_is_back(
    tenant, settings, tmp_path
) -> None:
    """The connection is cut exactly between the executor returning and the outcome being
    written, for longer than a lease: the worker keeps the outcome and the attempt's lease,
    records it when the database answers again, and its own reaper does not take it for
    lost. The task ran once; the job row is settled, not run again."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.outage_tasks"]
    flow = create_flow(
        tenant.org,
        name="cut",
        definition=definition(
            "tests.helpers.outage_tasks:handshake", {"dir": "${{ flow.input.dir }}", "value": 7}
        ),
        actor="t",
    )
    proxy = DatabaseProxy(database_address())
    process = start_worker(
        "outage",
        tmp_path,
        DATABASE_URL=through_proxy(app_database_url(), proxy.port),
        FLOWPLATFORM_PYTHON_CALLABLES="examples,tests.helpers.outage_tasks",
        FLOWPLATFORM_LEASE_SECONDS="3",
        FLOWPLATFORM_REAP_INTERVAL_SECONDS="0.5",
        LOG_LEVEL="info",
    )
    try:
        fe = start_flow_execution(
            tenant.org, flow_id=flow.id, input={"dir": str(tmp_path)}, actor="t"
        )
        deadline = time.monotonic() + 60
        while not (tmp_path / "returning").exists():
            assert time.monotonic() < deadline, (tmp_path / "outage.log").read_text()
            assert process.poll() is None, (tmp_path / "outage.log").read_text()
            time.sleep(0.02)
        proxy.cut()  # the executor is about to return: its outcome cannot be written
        (tmp_path / "go").write_text("go")
        time.sleep(5)  # longer than the 3-second lease
        proxy.restore()
        status = wait_until_settled(fe.pk, timeout=60)
    finally:
        stop([process])
        proxy.stop()
    log = (tmp_path / "outage.log").read_text()
    assert status == "completed", log[-4000:]
    a = TaskExecution.objects.get(flow_execution=fe, task_name="a")  # one attempt: never retried
    assert (a.status, a.output["value"], a.error) == ("completed", 7, None)
    assert (tmp_path / "runs").read_text() == "ran\n"  # it ran once
    b = TaskExecution.objects.get(flow_execution=fe, task_name="b")
    assert (b.status, b.input) == ("completed", 7)
    assert not TaskExecution.objects.filter(error__type=leases.WORKER_LOST).exists()
    assert "recorded the outcome of attempt" in log
    job = DBTaskResult.objects.get(args_kwargs__args__0=str(a.pk))
    assert job.status == "SUCCESSFUL"
    assert not DBTaskResult.objects.filter(status="RUNNING").exists()


# The same, in-process: the database fails exactly at the recording, or at the claim's commit.


@pytest.fixture
def flow_with_a_counted_task(tenant, settings) -> Any:
    """a (counted: every run is in CALLS; its output is its input) → b."""
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.callables"]
    CALLS.clear()
    return create_flow(
        tenant.org,
        name="counted",
        definition=definition("tests.helpers.callables:counted", {"value": "${{ flow.input }}"}),
        actor="t",
    )


def queued(tenant, flow, monkeypatch) -> TaskExecution:
    """A flow execution whose first attempt is queued and has no job yet."""
    with monkeypatch.context() as patch:
        patch.setattr(jobs, "enqueue_after_commit", lambda *args: None)
        with rls.tenant_scope(tenant.org.pk):
            fe = start_flow_execution(tenant.org, flow_id=flow.id, input=3, actor="t")
    return TaskExecution.objects.get(flow_execution=fe, task_name="a")


def test_an_outcome_that_could_not_be_written_is_kept_and_recorded_later(
    tenant, flow_with_a_counted_task, monkeypatch
) -> None:
    attempt = queued(tenant, flow_with_a_counted_task, monkeypatch)
    real_finish = worker.finish_in_scope
    fired: list[str] = []

    def outage(*args: Any, **kwargs: Any) -> Any:
        fired.append("outage")
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(worker, "finish_in_scope", outage)
    with pytest.raises(OperationalError):
        worker.run_attempt(attempt.pk, tenant.org.pk)
    assert fired, "the injected outage did not happen"
    attempt.refresh_from_db()
    assert attempt.status == "running"  # not failed: the outcome is held, with its lease
    assert leases.heartbeat._kept.get(attempt.pk) == (tenant.org.pk, attempt.lease_owner)

    assert worker.record_held() == set()  # the database is still away: still held
    monkeypatch.setattr(worker, "finish_in_scope", real_finish)
    assert worker.record_held() == {attempt.pk}

    attempt.refresh_from_db()
    assert (attempt.status, attempt.output, attempt.lease_owner) == ("completed", {"value": 3}, "")
    assert CALLS == ['{"value": 3}']
    assert attempt.pk not in leases.heartbeat._kept
    fe = FlowExecution.objects.get(pk=attempt.flow_execution_id)
    assert fe.status == "completed"  # b ran on a's recorded output


def test_an_outcome_that_can_never_be_written_is_handed_back_and_runs_again(
    tenant, flow_with_a_counted_task, monkeypatch
) -> None:
    """Recording fails every time it is tried (MAX_RECORD_TRIES after the first): the attempt
    goes back to queued, with a new job, and runs again (its first result was never written)."""
    attempt = queued(tenant, flow_with_a_counted_task, monkeypatch)
    real_finish = worker.finish_in_scope
    failures: list[str] = []

    def outage(*args: Any, **kwargs: Any) -> Any:
        if len(failures) <= worker.MAX_RECORD_TRIES:
            failures.append("outage")
            raise OperationalError("could not write")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(worker, "finish_in_scope", outage)
    with pytest.raises(OperationalError):
        worker.run_attempt(attempt.pk, tenant.org.pk)
    for _ in range(worker.MAX_RECORD_TRIES - 1):
        assert worker.record_held() == set()
    assert worker.record_held() == {attempt.pk}  # handed back; its new job ran it again
    assert len(failures) == worker.MAX_RECORD_TRIES + 1
    attempt.refresh_from_db()
    assert (attempt.status, attempt.task_execution_idx) == ("completed", 0)
    assert CALLS == ['{"value": 3}'] * 2  # the first result was never written: it ran again


def test_a_claim_whose_commit_could_not_be_confirmed_is_handed_back_not_stranded(
    tenant, flow_with_a_counted_task, monkeypatch
) -> None:
    """The database goes away as the claim commits, after it landed: the attempt is running
    with this worker's lease and nobody runs it. The worker hands it back; it runs once."""
    attempt = queued(tenant, flow_with_a_counted_task, monkeypatch)
    real_claim, real_commit = transitions.claim, connection._commit
    armed: list[str] = []
    fired: list[str] = []

    def claim(*args: Any, **kwargs: Any) -> bool:
        armed.append("claim")
        return real_claim(*args, **kwargs)

    def commit() -> None:
        real_commit()
        if armed and not fired:
            fired.append("commit")
            raise OperationalError("the connection broke as the commit was acknowledged")

    monkeypatch.setattr(transitions, "claim", claim)
    monkeypatch.setattr(connection, "_commit", commit)
    with pytest.raises(OperationalError):
        worker.run_attempt(attempt.pk, tenant.org.pk)
    assert fired, "the injected failure did not happen"
    attempt.refresh_from_db()
    assert attempt.status == "running"  # the claim landed; nothing runs it
    assert CALLS == []

    worker.record_held()
    attempt.refresh_from_db()
    assert attempt.status == "completed"
    assert CALLS == ['{"value": 3}']
    assert not worker.outcomes


@pytest.fixture(autouse=True)
def nothing_left_held() -> Any:
    yield
    held, doubted = worker.outcomes.take()
    for item in held:
        leases.heartbeat.release(item.attempt.pk)
    assert (held, doubted) == ([], {}), "a test left an outcome held"
