"""Worker faults at awkward moments: a stop signal inside the heartbeat's bookkeeping, a
database blip between a job's claim and its attempt's, a renewal racing the reaper, a task
that swallows exceptions, a flow execution the reaper cannot load. (Each was a defect.)"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import yaml
from django.db import OperationalError

from executions import leases
from executions.engine import reaper
from executions.management.commands.db_worker import Worker
from executions.models import TaskExecution
from executions.services import start_flow_execution
from flowplatform import rls
from flows.services import create_flow
from tests.helpers.callables import STOPPING
from tests.helpers.leases import run_python_task, stranded

# A worker's path: a job per attempt, the tasks here are transforms (see jobs_per_attempt).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_per_attempt")]


def worker(**overrides: Any) -> Worker:
    options = {
        "shutdown_timeout": 0.0,
        "reap_interval": 0.0,
        "queue_names": ["default"],
        "interval": 0.0,
        "batch": True,
        "backend_name": "default",
        "startup_delay": False,
        "max_tasks": None,
        "worker_id": "review",
        "excluded_queue_names": [],
        **overrides,
    }
    return Worker(**options)


def test_the_shutdown_timeout_landing_inside_hold_does_not_deadlock_the_worker(monkeypatch):
    """SIGALRM (or a second SIGTERM) is handled on the main thread, between any two bytecodes,
    possibly while that thread is inside heartbeat.hold() holding the heartbeat's lock: the
    handler's `leases.holding()` must not wait for that lock (it would wait forever)."""
    beat = leases._Heartbeat()
    monkeypatch.setattr(leases, "heartbeat", beat)
    stopping = worker()
    outcome: list[str] = []

    def signal_lands_while_hold_has_the_lock() -> None:
        with beat._lock:  # hold(): `self._held[attempt_id] = ...` / `self._held.pop(...)`
            beat._held[uuid.uuid4()] = (uuid.uuid4(), "me")
            try:
                stopping._interrupt("the task did not finish within 0s")  # the SIGALRM handler
            except leases.WorkerStopped:
                outcome.append("stopped")

    thread = threading.Thread(target=signal_lands_while_hold_has_the_lock, daemon=True)
    thread.start()
    thread.join(timeout=2)
    assert not thread.is_alive(), "the signal handler deadlocked on heartbeat._lock"
    assert outcome == ["stopped"]


def test_a_database_blip_between_the_job_claim_and_the_attempt_claim_does_not_orphan_it(
    tenant, settings, monkeypatch
):
    """The worker survives the outage, and the job it had just claimed (whose outcome could
    not be written either) goes back to READY when the database returns, so its attempt is not
    left queued with no job to run it."""
    from django_tasks_db.models import DBTaskResult

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    flow = create_flow(
        tenant.org,
        name="f",
        definition=yaml.safe_dump({"tasks": [{"name": "a", "type": "transform"}]}),
        actor="t",
    )
    with rls.tenant_scope(tenant.org.pk):
        fe = start_flow_execution(tenant.org, flow_id=flow.id, input=1, actor="t")
    assert TaskExecution.objects.get(flow_execution=fe).status == "queued"

    real_scope = rls.tenant_scope
    outage = {"left": 1}

    def scope_during_outage(*args: Any, **kwargs: Any) -> Any:
        if outage["left"]:
            outage["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_scope(*args, **kwargs)

    failed_to_record: list[str] = []

    def set_failed_during_outage(self: Any, exc: BaseException) -> None:
        failed_to_record.append(str(self.pk))
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(rls, "tenant_scope", scope_during_outage)
    monkeypatch.setattr(DBTaskResult, "set_failed", set_failed_during_outage)
    worker().run()  # survives the outage, then (batch) exits: nothing is ready any more
    monkeypatch.undo()
    assert outage["left"] == 0, "the injected outage did not happen"
    assert failed_to_record, "the job's outcome was written: the outage did not reach it"

    reaper.reap_expired()  # the database is back; the reaper runs
    attempt = TaskExecution.objects.get(flow_execution=fe)
    job_alive = DBTaskResult.objects.filter(
        status__in=["READY"], args_kwargs__args__0=str(attempt.pk)
    ).exists()
    assert attempt.status != "queued" or job_alive, (
        "attempt queued forever with its only job stuck RUNNING: "
        f"{list(DBTaskResult.objects.values_list('status', flat=True))}"
    )


def test_the_reaper_does_not_fail_an_attempt_whose_lease_was_renewed_after_it_looked(
    tenant, monkeypatch
):
    """A renewal that commits between the reaper's read and its update (a worker whose
    heartbeat was late but is alive) wins: the reaper's update is a compare-and-set on the
    expired lease, so the live worker's result is kept and the task does not run twice."""
    fe = stranded(tenant, retries=0)
    attempt = TaskExecution.objects.get(flow_execution=fe, task_name="a")
    real_now = reaper.timezone.now

    class Clock:
        renewed = False

        @classmethod
        def now(cls) -> Any:
            if not cls.renewed:  # the first call in _reap: right after it read the expired ones
                cls.renewed = True
                leases.heartbeat.renew({attempt.pk: (tenant.org.pk, "lost-host:4242")})
            return real_now()

    monkeypatch.setattr(reaper, "timezone", Clock)
    reaper.reap_expired()
    monkeypatch.undo()
    assert Clock.renewed, "the injected renewal did not happen"
    attempt.refresh_from_db()
    assert attempt.status == "running", attempt.error


def test_a_task_interrupted_at_the_shutdown_timeout_is_not_recorded_completed(tenant, settings):
    """A task's own `except Exception` must not swallow the stop (it would be recorded
    completed with whatever its fallback returned, and the worker would wait for it however
    long it takes): WorkerStopped is a BaseException, like KeyboardInterrupt, SystemExit and
    asyncio.CancelledError, for exactly this reason."""
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests.helpers.callables"]
    STOPPING["worker"] = worker()
    fe = run_python_task(tenant, "tests.helpers.callables:catches_everything")
    attempt = TaskExecution.objects.get(flow_execution=fe, task_execution_idx=0)
    assert (attempt.status, attempt.output) != ("completed", {"fallback": True})
    assert attempt.error
    assert attempt.error["type"] == "WorkerStopped"


def test_one_flow_execution_that_cannot_be_reaped_does_not_block_every_other(
    tenant, other_tenant, monkeypatch
):
    """One flow execution whose definition no longer loads (e.g. a task type whose executor
    was removed from FLOWPLATFORM_EXECUTORS) must not stop the pass: it comes first in every
    pass (oldest expiry first), so no other lease in any organization would be reaped."""
    from tests.helpers.faults import make_definition_unloadable

    poison = stranded(tenant)  # its lease expired first
    healthy = stranded(other_tenant)
    make_definition_unloadable(poison.flow_version_id)
    reaper.reap_expired()
    attempt = TaskExecution.objects.get(flow_execution=healthy, task_name="a", task_execution_idx=0)
    assert attempt.status == "failed", "the healthy flow execution's lost attempt was not reaped"


def test_a_job_whose_worker_died_before_claiming_its_attempt_is_queued_again(tenant, settings):
    """SIGKILL between django-tasks-db's claim of the job and run_attempt's claim of the
    attempt: the job stays RUNNING, the attempt queued. Once the job has been running for
    longer than a lease, the reaper puts it back (and leaves younger ones and other jobs)."""
    from datetime import timedelta

    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    flow = create_flow(
        tenant.org,
        name="f",
        definition=yaml.safe_dump(
            {"tasks": [{"name": "a", "type": "transform"}, {"name": "b", "type": "transform"}]}
        ),
        actor="t",
    )
    with rls.tenant_scope(tenant.org.pk):
        fe = start_flow_execution(tenant.org, flow_id=flow.id, input=1, actor="t")
    a, b = TaskExecution.objects.filter(flow_execution=fe).order_by("task_name")
    job_a = DBTaskResult.objects.get(args_kwargs__args__0=str(a.pk))
    job_b = DBTaskResult.objects.get(args_kwargs__args__0=str(b.pk))
    long_ago = timezone.now() - timedelta(seconds=settings.FLOWPLATFORM_LEASE_SECONDS + 5)
    DBTaskResult.objects.filter(pk=job_a.pk).update(status="RUNNING", started_at=long_ago)
    DBTaskResult.objects.filter(pk=job_b.pk).update(status="RUNNING", started_at=timezone.now())

    reaper.reap_expired()

    assert DBTaskResult.objects.get(pk=job_a.pk).status == "READY"  # another worker runs it
    assert DBTaskResult.objects.get(pk=job_b.pk).status == "RUNNING"  # may still claim it
    assert TaskExecution.objects.get(pk=a.pk).status == "queued"
