"""Leases and the reaper: an attempt whose worker was lost is failed and retried, never left
running; a live worker's lease is renewed, and a slow worker that was reaped changes nothing.

Real worker processes killed mid-task are in tests/test_workers.py (PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from executions import leases
from executions.engine import reaper, worker
from executions.executors import ExecutorResult
from executions.models import FlowExecution, TaskExecution
from executions.selectors import freshness_violations
from executions.services import start_flow_execution
from flowplatform import rls
from flows.services import create_flow
from tests.helpers.callables import SEEN
from tests.helpers.leases import run_python_task, stranded

# A worker's path: a job per attempt, the tasks here are transforms (see jobs_per_attempt).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_per_attempt")]


@pytest.fixture(autouse=True)
def callables(settings: Any) -> None:
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.callables"]
    SEEN.clear()


def history(fe: FlowExecution, task: str = "a") -> list[TaskExecution]:
    return list(
        TaskExecution.objects.filter(flow_execution=fe, task_name=task).order_by(
            "task_execution_idx"
        )
    )


def test_a_worker_holds_a_lease_while_the_task_runs_and_releases_it(tenant, settings):
    before = timezone.now()
    fe = run_python_task(tenant, "tests.helpers.callables:look_at_my_lease")
    fe.refresh_from_db()
    assert fe.status == "completed"
    [seen] = SEEN
    assert seen["owner"] == leases.worker_identity()
    lease = timedelta(seconds=settings.FLOWPLATFORM_LEASE_SECONDS)
    assert before + lease - timedelta(seconds=5) < seen["expires"] <= timezone.now() + lease
    [done] = history(fe)
    assert (done.lease_owner, done.lease_expires_at) == ("", None)


def test_the_reaper_fails_a_lost_workers_attempt_and_the_retry_completes_the_flow(tenant):
    fe = stranded(tenant, retries=1)
    reaped = reaper.reap_expired()
    assert [(r.task_name, r.idx, r.lease_owner) for r in reaped] == [("a", 0, "lost-host:4242")]
    lost, retried = history(fe)
    assert lost.status == "failed"
    assert lost.error["type"] == "WorkerLost"
    assert "lost-host:4242" in lost.error["message"]
    assert (retried.task_execution_idx, retried.status, retried.input) == (1, "completed", "x")
    assert reaped[0].retry_id == retried.pk
    fe.refresh_from_db()
    assert fe.status == "completed"
    assert [a.status for a in history(fe, "b")] == ["completed"]
    assert freshness_violations(fe) == []


def test_without_retries_left_the_flow_execution_fails_and_says_why(tenant):
    fe = stranded(tenant, retries=0)
    [reaped] = reaper.reap_expired()
    assert reaped.retry_id is None
    [lost] = history(fe)
    assert (lost.status, lost.error["type"]) == ("failed", "WorkerLost")
    fe.refresh_from_db()
    assert fe.status == "failed"
    assert history(fe, "b") == []


def test_live_leases_human_waits_and_queued_attempts_are_not_reaped(tenant):
    live = stranded(tenant, expired=False)
    flow = create_flow(
        tenant.org,
        name="h",
        definition=yaml.safe_dump({"tasks": [{"name": "person", "type": "human"}]}),
        actor="t",
    )
    with rls.tenant_scope(tenant.org.pk):
        human = start_flow_execution(tenant.org, flow_id=flow.id, actor="t")
    queued = tenant.task_execution(tenant.flow_execution(), status="queued")
    before = {a.pk: a.status for a in TaskExecution.objects.all()}
    assert reaper.reap_expired() == []
    assert {a.pk: a.status for a in TaskExecution.objects.all()} == before
    assert history(live)[0].status == "running"
    assert TaskExecution.objects.get(flow_execution=human).status == "running"
    assert TaskExecution.objects.get(pk=queued.pk).status == "queued"


def test_a_slow_worker_that_was_reaped_changes_nothing_when_it_finishes(tenant):
    fe = stranded(tenant, retries=0)
    attempt = history(fe)[0]
    reaper.reap_expired()
    with rls.tenant_scope(tenant.org.pk):
        assert worker.finish(attempt, ExecutorResult("late", None)) is False
    [lost] = history(fe)
    assert (lost.status, lost.output) == ("failed", None)


def test_the_heartbeat_renews_only_running_attempts_its_process_owns(tenant, other_tenant):
    fe = stranded(tenant, expired=True)
    mine = history(fe)[0]
    other = stranded(other_tenant, expired=True)
    theirs = history(other)[0]
    owner = "lost-host:4242"
    renewed = leases.heartbeat.renew(
        {mine.pk: (tenant.org.pk, owner), theirs.pk: (theirs.organization_id, "someone-else")}
    )
    assert renewed == 1
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.lease_expires_at > timezone.now()  # renewed: no longer expired
    assert theirs.lease_expires_at < timezone.now()  # another worker's lease: untouched
    assert [r.attempt_id for r in reaper.reap_expired()] == [theirs.pk]


def test_reap_expired_command_lists_in_a_dry_run_then_reaps(tenant):
    fe = stranded(tenant, retries=1)
    out = StringIO()
    call_command("reap_expired", "--dry-run", stdout=out)
    assert f"of flow execution {fe.pk}" in out.getvalue()
    assert "1 attempt(s) would be reaped (dry run)" in out.getvalue()
    assert history(fe)[0].status == "running"
    out = StringIO()
    call_command("reap_expired", stdout=out)
    assert "a#0" in out.getvalue()
    assert "lost-host:4242 lost; retrying as attempt" in out.getvalue()
    assert "1 attempt(s) reaped" in out.getvalue()
    assert [a.status for a in history(fe)] == ["failed", "completed"]
    out = StringIO()
    call_command("reap_expired", stdout=out)
    assert "0 attempt(s) reaped" in out.getvalue()


@pytest.mark.postgresql
def test_reapers_racing_on_one_attempt_retry_it_once(tenant):
    fe = stranded(tenant, retries=3)
    barrier = threading.Barrier(4)
    results: list[int] = []

    def reap() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(len(reaper.reap_expired()))
        finally:
            connection.close()

    threads = [threading.Thread(target=reap) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 0, 0, 1]
    assert [(a.task_execution_idx, a.status) for a in history(fe)] == [
        (0, "failed"),
        (1, "completed"),
    ]
