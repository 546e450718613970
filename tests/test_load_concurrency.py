"""Many clients at once, and the transactions PostgreSQL aborts to let a concurrent one through.

The load test (PostgreSQL): 16 clients released together send a few hundred mixed requests at the
same flow executions — corrections with and without `execute_flow` and the `updated_at` lock,
reads, re-executions, new task outputs — and afterwards nothing is lost, duplicated or stale.
The retry tests make a request's transaction fail like a deadlock's victim, in its handler or at
its commit (and, on PostgreSQL, cause a real deadlock): the client sees the normal answer and
the work is done once; when the retries run out it sees a 503 and nothing was written.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import IntegrityError, OperationalError, connection, transaction
from rest_framework.test import APIClient

from executions import locking, selectors, transitions
from executions.corrections import task_executions
from executions.engine import staleness, worker
from executions.models import Correction, FlowExecution, TaskExecution
from executions.selectors import freshness_violations, is_settled
from flowplatform import dbretry
from flowplatform.tenancy.models import IdempotencyKey
from flows.models import Flow
from outputs.models import TaskOutput
from tests.helpers.tenants import Tenant

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEXT = "the quick brown fox jumps over the lazy dog"
UPDATE = Correction.Operation.TASK_EXECUTION_UPDATE


def word_stats(tenant: Tenant) -> Flow:
    """examples/word-stats.yaml: python and transform tasks, fan-out and fan-in, no person."""
    definition = (EXAMPLES / "word-stats.yaml").read_text()
    return tenant.flow(name="word-stats", definition=definition)


def start(tenant: Tenant, flow: Flow) -> str:
    response = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id), "input": {"text": TEXT}}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "completed"  # embedded: it ran inline
    return response.json()["id"]


def current_attempt(client: APIClient, flow_execution_id: str, task: str) -> dict[str, Any]:
    response = client.get(
        "/task-executions",
        {
            "flow_execution_id": flow_execution_id,
            "task_name": task,
            "ordering": "-task_execution_idx",
            "limit": 1,
        },
    )
    assert response.status_code == 200, response.content
    return response.json()["results"][0]


def deadlock() -> OperationalError:
    """What Django raises in the transaction PostgreSQL picked as a deadlock's victim."""
    cause = psycopg.errors.DeadlockDetected("deadlock detected")
    error = OperationalError(*cause.args)
    error.__cause__ = cause
    return error


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flowplatform.dbretry"]


class Faults:
    """Wraps a function so that its first `failures` calls end in a deadlock (after the
    function did its writes, so there is something to roll back); it counts every call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            result = function(*args, **kwargs)
            if self.calls <= self.failures:
                raise deadlock()
            return result

        return failing


class Counted:
    """Records the calls of a function, e.g. the jobs that ran."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        return self.function(*args, **kwargs)


# The retry helper ----------------------------------------------------------------------------


def test_only_deadlocks_and_serialization_failures_are_retryable() -> None:
    serialization = OperationalError("could not serialize access")
    serialization.__cause__ = psycopg.errors.SerializationFailure("could not serialize access")
    unique = IntegrityError("duplicate key")
    unique.__cause__ = psycopg.errors.UniqueViolation("duplicate key")
    assert dbretry.is_retryable(deadlock())
    assert dbretry.is_retryable(serialization)
    assert dbretry.is_retryable(psycopg.errors.DeadlockDetected("met unwrapped"))
    assert not dbretry.is_retryable(unique)
    assert not dbretry.is_retryable(OperationalError("connection refused"))
    assert not dbretry.is_retryable(ValueError("deadlock detected"))


def test_retrying_reruns_only_deadlocks_and_gives_up_after_its_retries(caplog: Any) -> None:
    calls = []

    def transaction_fn() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise deadlock()
        return "done"

    assert dbretry.retrying(transaction_fn, retries=2, what="the test") == "done"
    assert len(calls) == 3
    assert [m.split(",")[0] for m in retry_warnings(caplog)] == [
        "the test: deadlock_detected (SQLSTATE 40P01)"
    ] * 2
    calls.clear()
    with pytest.raises(OperationalError):
        dbretry.retrying(transaction_fn, retries=1)
    assert len(calls) == 2

    def broken() -> None:
        calls.append(1)
        raise OperationalError("connection refused")

    calls.clear()
    with pytest.raises(OperationalError, match="refused"):
        dbretry.retrying(broken, retries=5)
    assert len(calls) == 1  # anything else propagates at once


@pytest.mark.django_db(transaction=True)
def test_retrying_inside_an_open_transaction_runs_once() -> None:
    """Only the outer transaction's owner can roll back what holds the other's locks."""
    calls = []

    def transaction_fn() -> None:
        calls.append(1)
        raise deadlock()

    with transaction.atomic(), pytest.raises(OperationalError):
        dbretry.retrying(transaction_fn, retries=3)
    assert calls == [1]


# A request whose transaction deadlocks --------------------------------------------------------


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> Counted:
    """Every job the embedded backend runs (one per queued attempt)."""
    counted = Counted(worker.run_attempt)
    monkeypatch.setattr(worker, "run_attempt", counted)
    return counted


def inject(where: str, faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    """`handler`: the correction's stale marking deadlocks, after the Correction row, the saved
    attempt and its published output were written. `commit`: the request's COMMIT fails."""
    if where == "handler":
        monkeypatch.setattr(staleness, "mark_stale", faults.wrap(staleness.mark_stale))
        return
    armed = threading.Event()
    real_commit = connection.commit
    real_correct = task_executions.correct_task_execution

    def correct_then_arm(*args: Any, **kwargs: Any) -> Any:
        result = real_correct(*args, **kwargs)
        faults.calls += 1
        if faults.calls <= faults.failures:
            armed.set()  # the request's next COMMIT fails; Django then rolls back
        return result

    def commit() -> None:
        if armed.is_set():
            armed.clear()
            raise deadlock()
        real_commit()

    monkeypatch.setattr(task_executions, "correct_task_execution", correct_then_arm)
    monkeypatch.setattr(connection, "commit", commit)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["handler", "commit"])
@pytest.mark.usefixtures("jobs_per_attempt")  # it counts one job per new attempt
def test_a_correction_whose_transaction_deadlocks_is_run_again_and_applied_once(
    tenant: Tenant, jobs: Counted, monkeypatch: pytest.MonkeyPatch, caplog: Any, where: str
) -> None:
    flow_execution_id = start(tenant, word_stats(tenant))
    record = current_attempt(tenant.client, flow_execution_id, "lengths")
    jobs.calls.clear()
    faults = Faults(failures=2)
    inject(where, faults, monkeypatch)

    def correct() -> Any:
        return tenant.client.put(
            f"/task-executions/{record['id']}?execute_flow=true",
            {**record, "output": [7, 7, 7]},
            format="json",
            HTTP_IDEMPOTENCY_KEY="fix-lengths",
        )

    response = correct()

    assert response.status_code == 200, response.content
    body = response.json()
    assert sorted(body["stale_tasks"]) == ["longest", "report", "total"]
    assert faults.calls == 3
    assert len(retry_warnings(caplog)) == 2
    # The work happened once: one correction, one history entry, one new attempt per stale
    # task, one job per new attempt (the rolled-back runs' jobs were dropped with them).
    corrections = Correction.objects.filter(flow_execution_id=flow_execution_id)
    assert [str(c.pk) for c in corrections] == [body["correction_id"]]
    saves = TaskExecution.history.filter(
        id=record["id"], history_type="~", history_change_reason="correction (api)"
    )
    assert [h.output for h in saves] == [[7, 7, 7]]
    attempts = defaultdict(list)
    for name, idx in TaskExecution.objects.filter(flow_execution_id=flow_execution_id).values_list(
        "task_name", "task_execution_idx"
    ):
        attempts[name].append(idx)
    assert {name: sorted(idxs) for name, idxs in attempts.items()} == {
        "lengths": [0],
        "total": [0, 1],
        "longest": [0, 1],
        "report": [0, 1],
    }
    assert len(jobs.calls) == 3
    report = TaskExecution.objects.get(
        flow_execution_id=flow_execution_id, task_name="report", task_execution_idx=1
    )
    assert report.status == "completed"
    assert report.input == {"total": 21, "words": 3, "longest": 7}
    flow_execution = FlowExecution.objects.get(pk=flow_execution_id)
    assert is_settled(flow_execution)
    assert freshness_violations(flow_execution) == []
    # The Idempotency-Key stores the one answer; sending the request again replays it.
    (key,) = IdempotencyKey.objects.all()
    assert (key.state, key.response_status) == (IdempotencyKey.State.COMPLETED, 200)
    replay = correct()
    assert replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == body
    assert faults.calls == 3
    assert corrections.count() == 1


@pytest.mark.django_db(transaction=True)
def test_when_the_retries_run_out_the_client_gets_503_and_nothing_was_written(
    tenant: Tenant, jobs: Counted, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.FLOWPLATFORM_DB_RETRIES = 2
    flow_execution_id = start(tenant, word_stats(tenant))
    record = current_attempt(tenant.client, flow_execution_id, "lengths")
    before = {
        "attempts": list(TaskExecution.objects.values_list("id", "status", "output", "updated_at")),
        "outputs": TaskOutput.objects.count(),
        "history": TaskExecution.history.count(),
    }
    jobs.calls.clear()
    faults = Faults(failures=1000)
    inject("handler", faults, monkeypatch)

    def correct() -> Any:
        return tenant.client.put(
            f"/task-executions/{record['id']}?execute_flow=true",
            {**record, "output": [7, 7, 7]},
            format="json",
            HTTP_IDEMPOTENCY_KEY="fix-lengths",
        )

    response = correct()

    assert response.status_code == 503
    error = response.json()
    assert set(error) == {"error", "request_id"}
    assert error["error"]["code"] == "service_unavailable"
    assert error["request_id"] == response["X-Request-ID"]
    assert faults.calls == 3  # the first run and FLOWPLATFORM_DB_RETRIES retries
    assert not Correction.objects.exists()
    assert {
        "attempts": list(TaskExecution.objects.values_list("id", "status", "output", "updated_at")),
        "outputs": TaskOutput.objects.count(),
        "history": TaskExecution.history.count(),
    } == before
    assert jobs.calls == []
    assert not IdempotencyKey.objects.exists()  # released: the work did not happen
    # Once the database lets it through, the same request with the same key does the work.
    faults.failures = 0
    assert correct().status_code == 200
    assert Correction.objects.count() == 1
    assert jobs.calls, "the job counter saw no job: `jobs.calls == []` above proved nothing"


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_real_deadlock_between_two_corrections_is_retried_and_both_apply(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Each request locks its own flow execution, then (injected) the other's: PostgreSQL
    aborts one of them (after deadlock_timeout, 1 s); the service runs it again."""
    flow = word_stats(tenant)
    ids = [start(tenant, flow), start(tenant, flow)]
    records = [current_attempt(tenant.client, fe, "total") for fe in ids]
    barrier = threading.Barrier(2)
    local = threading.local()
    lock_for_write = locking.flow_execution_for_write
    crossed: list[str] = []

    def lock_then_cross(organization: Any, flow_execution_id: Any) -> FlowExecution:
        locked = lock_for_write(organization, flow_execution_id)
        if not getattr(local, "crossed", False):
            local.crossed = True
            crossed.append(str(locked.pk))
            barrier.wait(timeout=10)  # both hold their own flow execution's row lock
            other = ids[1] if str(locked.pk) == ids[0] else ids[0]
            locking.lock_flow_execution(uuid.UUID(other))  # each waits for the other
        return locked

    monkeypatch.setattr(locking, "flow_execution_for_write", lock_then_cross)
    statuses: dict[int, int] = {}

    def correct(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.secret}")
        body = {**records[index], "output": {"total": index, "count": 1}}
        try:
            response = client.put(f"/task-executions/{body['id']}", body, format="json")
            statuses[index] = response.status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=correct, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(crossed) == sorted(ids), "the injected lock of the other did not happen"
    assert statuses == {0: 200, 1: 200}
    (warning,) = retry_warnings(caplog)
    assert "deadlock_detected (SQLSTATE 40P01), rolled back" in warning
    for index, flow_execution_id in enumerate(ids):
        (correction,) = Correction.objects.filter(flow_execution_id=flow_execution_id)
        assert correction.after["output"] == {"total": index, "count": 1}
        total = TaskExecution.objects.get(pk=records[index]["id"])
        assert total.output == {"total": index, "count": 1}


# Many clients at once (PostgreSQL) ------------------------------------------------------------

THREADS = 16
ROUNDS = 12  # per client, after the first round that all clients play on one attempt
CORRECTED_TASKS = ("lengths", "total", "report")
DOCUMENTED = {  # kind → status → the error codes (409) or validation types (422) allowed
    "correct": {
        200: set(),
        409: {"concurrent_update"},
        # Between a client's read and its PUT, a re-execution (or a correction upstream with
        # execute_flow) may have made the attempt stale or given the task a newer one.
        422: {"invalid_transition", "not_current_attempt"},
    },
    "read": {200: set()},
    "reexecute": {202: set()},
    "task_output": {201: set()},
}


@dataclass
class Sent:
    """One request a client sent, and what it got back."""

    kind: str
    status: int
    body: Any
    round: int
    marker: str = ""
    target: str = ""  # the task execution a correction was sent to
    output: Any = None
    updated_at: str | None = None  # the optimistic lock sent, if any
    key: str | None = None  # the Idempotency-Key sent, if any

    def error_codes(self) -> set[str]:
        if self.status == 422:
            return {item["type"] for item in self.body["detail"]}
        if self.status >= 400:
            return {self.body["error"]["code"]}
        return set()


def corrected_output(task: str, client_index: int, round: int, marker: str) -> Any:
    """A value the task's dependents can compute from, unique to this request."""
    if task == "lengths":
        return [client_index + 1, round + 1, 3]
    if task == "total":
        return {"total": 100 * client_index + round, "count": 3, "marker": marker}
    return {"marker": marker}


def send_correction(
    client: APIClient,
    record: dict[str, Any],
    *,
    marker: str,
    output: Any,
    lock: bool,
    execute_flow: bool,
    key: str | None,
    round: int,
) -> Sent:
    body = {**record, "output": output, "status": "completed"}
    if not lock:
        del body["updated_at"]  # last write wins
    headers = {"HTTP_X_CORRECTION_REASON": marker}
    if key:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    response = client.put(
        f"/task-executions/{record['id']}?execute_flow={str(execute_flow).lower()}",
        body,
        format="json",
        **headers,
    )
    return Sent(
        "correct",
        response.status_code,
        response.json(),
        round,
        marker=marker,
        target=record["id"],
        output=output,
        updated_at=body.get("updated_at"),
        key=key,
    )


def client_session(
    index: int,
    secret: str,
    organization_id: str,
    flow_execution_ids: list[str],
    first_target: dict[str, Any],
    barrier: threading.Barrier,
) -> list[Sent]:
    """One client: a first round in which every client corrects the same attempt with the same
    `updated_at`, then ROUNDS requests of a seeded random mix."""
    rng = random.Random(index)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    sent: list[Sent] = []
    barrier.wait(timeout=30)
    marker = f"c{index}-r0"
    sent.append(
        send_correction(
            client,
            first_target,
            marker=marker,
            output=corrected_output("total", index, 0, marker),
            lock=True,
            execute_flow=False,
            key=None,
            round=0,
        )
    )
    barrier.wait(timeout=30)  # the first round is over for everybody
    for round in range(1, ROUNDS + 1):
        flow_execution_id = rng.choice(flow_execution_ids)
        kind = rng.choices(["correct", "read", "reexecute", "task_output"], [6, 3, 1, 1])[0]
        if kind == "correct":
            task = rng.choice(CORRECTED_TASKS)
            record = current_attempt(client, flow_execution_id, task)
            marker = f"c{index}-r{round}"
            sent.append(
                send_correction(
                    client,
                    record,
                    marker=marker,
                    output=corrected_output(task, index, round, marker),
                    lock=rng.random() < 0.5,
                    execute_flow=rng.random() < 0.5,
                    key=f"key-{marker}" if rng.random() < 0.3 else None,
                    round=round,
                )
            )
        elif kind == "read":
            path = rng.choice(
                [
                    f"/task-executions?flow_execution_id={flow_execution_id}",
                    f"/flow-executions/{flow_execution_id}",
                    f"/corrections?flow_execution_id={flow_execution_id}",
                ]
            )
            response = client.get(path)
            sent.append(Sent(kind, response.status_code, response.json(), round))
        elif kind == "reexecute":
            query = rng.choice(["", "?only=stale", "?task=total"])
            response = client.post(f"/flow-executions/{flow_execution_id}/execute{query}")
            sent.append(Sent(kind, response.status_code, response.json(), round))
        else:
            response = client.post(
                "/task-outputs",
                {
                    "flow_execution_id": flow_execution_id,
                    "organization_id": organization_id,
                    "task_name": "longest",
                    "output": 1000 + 100 * index + round,
                    "summary": {"by": index},
                    "status": "completed",
                },
                format="json",
            )
            sent.append(Sent(kind, response.status_code, response.json(), round))
    return sent


def run_clients(tenant: Tenant, flow_execution_ids: list[str]) -> list[Sent]:
    first_target = current_attempt(tenant.client, flow_execution_ids[0], "total")
    barrier = threading.Barrier(THREADS)
    results: dict[int, list[Sent]] = {}
    failures: list[BaseException] = []

    def thread(index: int) -> None:
        try:
            results[index] = client_session(
                index,
                tenant.secret,
                str(tenant.org.id),
                flow_execution_ids,
                first_target,
                barrier,
            )
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=thread, args=(index,)) for index in range(THREADS)]
    for each in threads:
        each.start()
    for each in threads:
        each.join(timeout=120)
    assert not failures, failures
    assert not any(each.is_alive() for each in threads)
    return [sent for index in sorted(results) for sent in results[index]]


def latest_attempts(flow_execution_id: str) -> dict[str, TaskExecution]:
    latest: dict[str, TaskExecution] = {}
    for attempt in TaskExecution.objects.filter(flow_execution_id=flow_execution_id).order_by(
        "task_name", "task_execution_idx"
    ):
        latest[attempt.task_name] = attempt
    return latest


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_many_clients_correcting_and_reading_the_same_flow_executions(tenant: Tenant) -> None:
    flow = word_stats(tenant)
    flow_execution_ids = [start(tenant, flow) for _ in range(3)]

    sent = run_clients(tenant, flow_execution_ids)

    assert len(sent) == THREADS * (ROUNDS + 1)
    # No server error (a deadlock PostgreSQL reported was retried, not shown); every answer is
    # one the API documents for what was asked.
    assert [s for s in sent if s.status >= 500] == []
    for s in sent:
        assert s.status in DOCUMENTED[s.kind], (s.kind, s.status, s.body)
        assert s.error_codes() <= DOCUMENTED[s.kind][s.status], (s.kind, s.status, s.body)
    # Sixteen corrections of one attempt with the same updated_at: one applies, fifteen lose.
    assert Counter(s.status for s in sent if s.round == 0) == Counter({200: 1, 409: THREADS - 1})

    corrections = [s for s in sent if s.kind == "correct"]
    applied = [s for s in corrections if s.status == 200]
    # No lost update: every applied correction is recorded exactly once, with what was sent;
    # nothing is recorded for one that was refused.
    recorded = Correction.objects.filter(operation=UPDATE)
    assert Counter(recorded.values_list("reason", flat=True)) == Counter(s.marker for s in applied)
    by_reason = {c.reason: c for c in recorded}
    for s in applied:
        correction = by_reason[s.marker]
        assert str(correction.pk) == s.body["correction_id"]
        assert str(correction.task_execution_id) == s.target
        assert correction.after["output"] == s.output
        saves = TaskExecution.history.filter(
            id=s.target, history_type="~", history_change_reason=s.marker, output=s.output
        )
        assert saves.count() == 1, s.marker
    # Optimistic-lock losers got 409 with the record as it is now.
    for s in corrections:
        if s.status == 409:
            current = s.body["error"]["details"]["current"]
            assert current["id"] == s.target
            assert s.updated_at is not None
            assert current["updated_at"] != s.updated_at
    # An Idempotency-Key stores the one answer its client got.
    keyed = {s.key: s.status for s in corrections if s.key}
    stored = dict(
        IdempotencyKey.objects.filter(key__in=keyed).values_list("key", "response_status")
    )
    assert stored == keyed

    for flow_execution_id in flow_execution_ids:
        latest = latest_attempts(flow_execution_id)
        # The last applied correction of a task's current attempt is its output, and the
        # task's current output.
        for task in CORRECTED_TASKS:
            last = recorded.filter(task_execution=latest[task]).order_by("created_at").last()
            if last is not None:
                assert latest[task].output == last.after["output"]
                current = selectors.current_outputs(
                    FlowExecution.objects.get(pk=flow_execution_id), [task]
                )
                assert current[task] == last.after["output"]
        # No duplicate attempt: each task's indexes are 0..n-1, and nothing is left live.
        indexes = defaultdict(list)
        for name, idx, status in TaskExecution.objects.filter(
            flow_execution_id=flow_execution_id
        ).values_list("task_name", "task_execution_idx", "status"):
            indexes[name].append(idx)
            assert status not in transitions.LIVE
        for name, idxs in indexes.items():
            assert sorted(idxs) == list(range(len(idxs))), (name, idxs)
        # The freshness invariant holds.
        flow_execution = FlowExecution.objects.get(pk=flow_execution_id)
        assert is_settled(flow_execution)
        assert freshness_violations(flow_execution) == []
    call_command("check_freshness", *flow_execution_ids, stdout=StringIO())

    # Re-running what is stale completes every flow execution, still fresh.
    for flow_execution_id in flow_execution_ids:
        response = tenant.client.post(f"/flow-executions/{flow_execution_id}/execute?only=stale")
        assert response.status_code == 202, response.content
        flow_execution = FlowExecution.objects.get(pk=flow_execution_id)
        assert flow_execution.status == "completed"
        assert {a.status for a in latest_attempts(flow_execution_id).values()} == {"completed"}
        assert freshness_violations(flow_execution) == []
