"""Webhook deliveries to a real receiver on 127.0.0.1: every event once, signed; retries with
backoff on a failure or a timeout, with the same id; a lost worker's delivery sent again;
nothing for a rolled-back transaction or a dry run; never another organization's events."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from executions.corrections.task_executions import correct_task_execution
from executions.engine import reaper
from executions.management.commands.db_worker import Worker
from executions.models import TaskExecution
from flowplatform import rls
from flowplatform.webhooks import delivering
from flowplatform.webhooks.models import WebhookDelivery, WebhookEvent
from tests.helpers.tenants import Tenant
from tests.helpers.webhooks import Receiver
from tests.helpers.workers import start_worker, stop, wait_for

# Jobs run when their transaction commits, as in production (the embedded backend's hooks).
pytestmark = pytest.mark.django_db(transaction=True)

ALL_EVENTS = [
    "task_execution.waiting",
    "correction.applied",
    "correction.settled",
    "flow_execution.settled",
    "upgrade_job.finished",
]
REVIEW = """\
name: review
tasks:
  - name: extract
    type: transform
    input: {pages: 2}
  - name: review
    type: human
    depends_on: [extract]
  - name: publish
    type: transform
    input: "${{ tasks.review.output }}"
"""


@pytest.fixture(autouse=True)
def _webhook_settings(settings: Any) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS = 0.5
    settings.FLOWPLATFORM_WEBHOOK_BACKOFF_SECONDS = 0.05
    settings.FLOWPLATFORM_WEBHOOK_MAX_BACKOFF_SECONDS = 0.2
    settings.FLOWPLATFORM_WEBHOOK_RETRY_SECONDS = 30


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def database_backend(settings: Any) -> None:
    """Jobs are rows that a db_worker (here in-process: run_worker) takes, as in production."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def subscribe(tenant: Tenant, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = tenant.client.post(
        "/webhook-endpoints", {"url": url, "events": events or ALL_EVENTS}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()


def start_review(tenant: Tenant, flow_id: str | None = None) -> dict[str, Any]:
    if flow_id is None:
        flow = tenant.client.post("/flows", {"name": "review", "definition": REVIEW}, format="json")
        assert flow.status_code == 201, flow.json()
        flow_id = flow.json()["id"]
    run = tenant.client.post("/flow-executions", {"flow_id": flow_id}, format="json")
    assert run.status_code == 201, run.json()
    return run.json()


def review_attempt(run: dict[str, Any]) -> TaskExecution:
    return TaskExecution.objects.get(flow_execution_id=run["id"], task_name="review")


def approve(tenant: Tenant, attempt: TaskExecution, query: str = "execute_flow=true") -> Any:
    return tenant.client.patch(
        f"/task-executions/{attempt.pk}?{query}",
        {"status": "completed", "output": {"approved": True}},
        format="json",
    )


def approve_by_service(attempt: TaskExecution, **options: Any) -> None:
    """The correction approve() makes, by its service, in the caller's transaction."""
    correct_task_execution(
        TaskExecution.objects.get(pk=attempt.pk),
        changes={"status": "completed", "output": {"approved": True}},
        identity={},
        expected_updated_at=None,
        actor="t",
        **options,
    )


def run_worker(until: Any, timeout: float = 15, max_tasks: int | None = None) -> None:
    """An in-process db_worker, run batch after batch until `until()` holds (a retry's job is
    deferred, so a batch can end before it is due)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        Worker(
            shutdown_timeout=0.0,
            reap_interval=0.0,
            queue_names=["default"],
            interval=0.0,
            batch=True,
            backend_name="default",
            startup_delay=False,
            max_tasks=max_tasks,
            worker_id="webhooks",
            excluded_queue_names=[],
        ).run()
        time.sleep(0.02)


def deliveries() -> list[WebhookDelivery]:
    with rls.bypass("test", "reading the delivery log"):
        return list(WebhookDelivery.objects.select_related("event").order_by("created_at"))


# --- what is sent ------------------------------------------------------------------------


def test_each_event_arrives_once_signed_with_the_resource_as_the_api_shows_it(tenant, receiver):
    endpoint = subscribe(tenant, receiver.url)
    run = start_review(tenant)
    [waiting] = receiver.of_type("task_execution.waiting")
    attempt = review_attempt(run)
    assert waiting.event["data"] == tenant.client.get(f"/task-executions/{attempt.pk}").json()

    assert approve(tenant, attempt).status_code == 200

    types = [r.event["type"] for r in receiver.requests]
    assert sorted(types) == sorted(
        ["task_execution.waiting", "correction.applied", "flow_execution.settled",
         "correction.settled"]
    )  # fmt: skip
    assert len({r.id for r in receiver.requests}) == len(receiver.requests)
    for received in receiver.requests:
        assert received.signed_by(endpoint["secret"]), received.headers
        assert received.event["id"] == received.id
        assert received.event["organization"] == str(tenant.org.pk)
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
    [settled] = receiver.of_type("flow_execution.settled")
    assert settled.event["data"] == tenant.client.get(f"/flow-executions/{run['id']}").json()
    assert settled.event["data"]["status"] == "completed"
    [applied] = receiver.of_type("correction.applied")
    correction = tenant.client.get(f"/corrections/{applied.event['data']['id']}").json()
    assert applied.event["data"] == correction
    assert receiver.of_type("correction.settled")[0].event["data"]["id"] == correction["id"]
    assert {d.state for d in deliveries()} == {"succeeded"}
    assert {d.attempts for d in deliveries()} == {1}


def test_an_endpoint_gets_only_the_event_types_it_subscribed_to(tenant, receiver):
    subscribe(tenant, receiver.url, ["flow_execution.settled"])
    run = start_review(tenant)
    assert receiver.requests == []
    approve(tenant, review_attempt(run))
    assert [r.event["type"] for r in receiver.requests] == ["flow_execution.settled"]


def test_a_disabled_endpoint_gets_nothing(tenant, receiver):
    endpoint = subscribe(tenant, receiver.url)
    tenant.client.patch(f"/webhook-endpoints/{endpoint['id']}", {"enabled": False}, format="json")
    start_review(tenant)
    assert receiver.requests == []


def test_another_organizations_endpoint_never_sees_an_event(tenant, other_tenant):
    with Receiver() as mine, Receiver() as theirs:
        subscribe(tenant, mine.url)
        subscribe(other_tenant, theirs.url)
        run = start_review(tenant)
        approve(tenant, review_attempt(run))
        assert len(mine.requests) == 4
        assert theirs.requests == []
        assert {r.event["organization"] for r in mine.requests} == {str(tenant.org.pk)}


def test_nothing_is_sent_for_a_dry_run(tenant, receiver):
    run = start_review(tenant)
    subscribe(tenant, receiver.url)
    response = approve(tenant, review_attempt(run), "execute_flow=true&dry_run=true")
    assert response.status_code == 200, response.json()
    assert receiver.requests == []
    assert not WebhookEvent.objects.exists()


def test_nothing_is_sent_for_a_rolled_back_transaction(tenant, receiver):
    run = start_review(tenant)
    subscribe(tenant, receiver.url)
    attempt = review_attempt(run)

    def correct_then_fail() -> None:
        with rls.tenant_scope(tenant.org), transaction.atomic():
            approve_by_service(attempt, execute_flow=True)
            assert WebhookEvent.objects.count() >= 1  # recorded in the transaction …
            raise RuntimeError("the request failed after the correction")

    with pytest.raises(RuntimeError):
        correct_then_fail()
    assert receiver.requests == []  # … and gone with it
    assert not WebhookEvent.objects.exists()


def test_an_event_is_sent_only_after_its_transaction_commits(tenant, receiver):
    run = start_review(tenant)
    subscribe(tenant, receiver.url, ["correction.applied"])
    attempt = review_attempt(run)
    with rls.tenant_scope(tenant.org):
        approve_by_service(attempt)
        assert receiver.requests == []  # recorded, not sent: the transaction is open
    assert [r.event["type"] for r in receiver.requests] == ["correction.applied"]


# --- retries --------------------------------------------------------------------------------


def test_a_receiver_failing_twice_gets_three_deliveries_with_the_same_id(
    tenant, receiver, database_backend
):
    subscribe(tenant, receiver.url, ["task_execution.waiting"])
    receiver.answers.extend([500, 503])
    start_review(tenant)
    run_worker(until=lambda: deliveries() and deliveries()[0].state == "succeeded")

    assert len(receiver.requests) == 3
    assert len({r.id for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1  # the same document
    [delivery] = deliveries()
    assert (delivery.attempts, delivery.last_error) == (3, "")
    assert delivery.latency_ms is not None


def test_a_hanging_receiver_is_timed_out_and_tried_again(tenant, receiver, database_backend):
    subscribe(tenant, receiver.url, ["task_execution.waiting"])
    receiver.answers.append("hang")
    start_review(tenant)
    started = time.monotonic()
    run_worker(until=lambda: deliveries() and deliveries()[0].state == "succeeded")

    assert time.monotonic() - started < 5  # the hang cost a timeout (0.5 s), not 30 s
    assert len(receiver.requests) == 2
    assert receiver.requests[0].id == receiver.requests[1].id
    assert deliveries()[0].attempts == 2


def test_a_delivery_is_given_up_after_the_retry_period(
    tenant, receiver, database_backend, settings
):
    settings.FLOWPLATFORM_WEBHOOK_RETRY_SECONDS = 0.3
    subscribe(tenant, receiver.url, ["task_execution.waiting"])
    receiver.answers.extend([500] * 50)
    start_review(tenant)
    run_worker(until=lambda: deliveries() and deliveries()[0].state == "failed")

    [delivery] = deliveries()
    assert 2 <= delivery.attempts == len(receiver.requests) < 10
    assert "answered 500" in delivery.last_error
    arrivals = [r.at for r in receiver.requests]
    for attempt, (before, after) in enumerate(itertools.pairwise(arrivals), 1):
        assert after - before >= delivering.backoff(attempt) * 0.9  # waited its backoff


def test_the_backoff_doubles_up_to_its_cap():
    assert [delivering.backoff(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.2, 0.2]


def test_a_killed_worker_mid_delivery_leads_to_a_redelivery(tenant, receiver, database_backend):
    """The worker claimed the delivery and sent its request, then died (SIGKILL) before the
    answer was recorded: the delivery is left `sending`, its job RUNNING. Once the claim's
    lease has passed, the reaper hands it to a new job, which sends the same event again."""
    from django_tasks_db.models import DBTaskResult

    subscribe(tenant, receiver.url, ["task_execution.waiting"])
    start_review(tenant)
    run_worker(until=deliveries, max_tasks=1)  # the run's first job: the review waits
    [job] = DBTaskResult.objects.filter(task_path=delivering.deliver_webhooks.module_path)
    [delivery] = deliveries()
    receiver.answers.append("hang")  # the dying worker's request
    with rls.tenant_scope(tenant.org):
        claimed = delivering._claim(delivery.endpoint_id, tenant.org.pk)
    assert claimed is not None
    delivering.sending.send(receiver.url, claimed[2], str(delivery.event_id), claimed[3].encode())
    started = timezone.now() - timedelta(seconds=30)  # its worker took the job a while ago
    DBTaskResult.objects.filter(pk=job.pk).update(status="RUNNING", started_at=started)
    assert deliveries()[0].state == "sending"

    reaper.reap_expired()  # the lease is still running: not yet lost
    assert not DBTaskResult.objects.filter(status="READY").exists()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    reaper.reap_expired()
    assert DBTaskResult.objects.get(pk=job.pk).status == "FAILED"  # the lost worker's job
    run_worker(until=lambda: deliveries()[0].state == "succeeded")

    assert len(receiver.requests) == 2
    assert receiver.requests[0].id == receiver.requests[1].id == str(delivery.event_id)
    assert deliveries()[0].attempts == 2


def test_deliveries_to_one_endpoint_go_out_in_the_order_of_their_events(tenant, receiver):
    subscribe(tenant, receiver.url, ["task_execution.waiting", "flow_execution.settled"])
    first = start_review(tenant)
    runs = [first] + [start_review(tenant, first["flow_id"]) for _ in range(2)]
    for run in runs:
        approve(tenant, review_attempt(run))
    order = [(r.event["type"], r.event["data"].get("flow_execution_id", r.event["data"]["id"]))
             for r in receiver.requests]  # fmt: skip
    expected = [("task_execution.waiting", run["id"]) for run in runs] + [
        ("flow_execution.settled", run["id"]) for run in runs
    ]
    assert order == expected


@pytest.mark.postgresql
def test_a_db_worker_killed_mid_delivery_is_followed_by_a_redelivery(
    tenant, receiver, database_backend, tmp_path
):
    """For real: a db_worker process sends a delivery to a receiver that does not answer, and
    is SIGKILLed while it waits; a second db_worker's reaper finds the delivery's lease run out
    and sends the same event again."""
    fast = {
        "FLOWPLATFORM_HTTP_ALLOWED_HOSTS": "127.0.0.1",
        "FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS": "1",  # a claim's lease: 3 s
        "FLOWPLATFORM_REAP_INTERVAL_SECONDS": "0.2",
    }
    subscribe(tenant, receiver.url, ["task_execution.waiting"])
    receiver.answers.append("hang")
    start_review(tenant)
    doomed = start_worker("doomed", tmp_path, **fast)
    survivor = None
    try:
        assert receiver.arrived.wait(60), "the first worker never sent the delivery"
        doomed.kill()
        doomed.wait()
        assert deliveries()[0].state == "sending"
        survivor = start_worker("survivor", tmp_path, **fast)
        wait_for(lambda: deliveries()[0].state == "succeeded", 60)
    finally:
        stop([w for w in (doomed, survivor) if w is not None])
    assert len(receiver.requests) == 2
    assert receiver.requests[0].id == receiver.requests[1].id
    assert deliveries()[0].attempts == 2
