"""Upgrade jobs on real `db_worker`s (PostgreSQL): 1,000 executions upgraded in batches, a
worker killed mid-job, the job resumed by another; nothing upgraded twice, exact counts."""

from __future__ import annotations

import json
import os

import pytest

from executions.corrections import upgrade_jobs
from executions.models import Correction, FlowExecution, TaskExecution, UpgradeJob
from executions.selectors import freshness_violations
from executions.services import start_flow_execution
from flows.services import create_flow, update_flow
from tests.helpers.workers import start_worker, stop, wait_for

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

EXECUTIONS = int(os.environ.get("UPGRADE_TEST_EXECUTIONS", 1000))
FAST = {
    "FLOWPLATFORM_LEASE_SECONDS": "2",
    "FLOWPLATFORM_REAP_INTERVAL_SECONDS": "0.5",
    "FLOWPLATFORM_UPGRADE_BATCH": "20",
    "FLOWPLATFORM_UPGRADE_LEASE_SECONDS": "6",
}


def definition(expression: str) -> str:
    tasks = [
        {"name": "a", "type": "transform", "input": {"v": "${{ flow.input.v }}"}},
        {
            "name": "b",
            "type": "transform",
            "input": {"v": "${{ tasks.a.output.v }}"},
            "config": {"expression": expression},
        },
        {"name": "c", "type": "transform", "input": {"b": "${{ tasks.b.output }}"}},
    ]
    return json.dumps({"tasks": tasks})


def test_a_bulk_upgrade_survives_a_worker_killed_mid_job_and_upgrades_each_once(
    tenant, settings, tmp_path
):
    flow = create_flow(tenant.org, name="bulk", definition=definition("v"), actor="t")
    executions = [
        start_flow_execution(tenant.org, flow_id=flow.id, input={"v": i}, actor="t").pk
        for i in range(EXECUTIONS)
    ]
    update_flow(flow, actor="t", definition=definition("{x: v}"))
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    doomed = start_worker("doomed", tmp_path, **FAST)
    survivor = None
    try:
        job = upgrade_jobs.create_job(flow, actor="t", execute_flow=True, reason="fix b")
        progressed = wait_for(
            lambda: UpgradeJob.objects.filter(pk=job.pk, upgraded__gte=100).exists(), 120
        )
        assert progressed
        # SIGKILL mid-job, just after a batch committed (where a job enqueued on commit would
        # be lost): the next batch rolls back, its job row stays RUNNING.
        doomed.kill()
        doomed.wait()
        halfway = UpgradeJob.objects.get(pk=job.pk)
        assert halfway.status == "running"
        assert halfway.upgraded < EXECUTIONS
        survivor = start_worker("survivor", tmp_path, **FAST)
        finished = wait_for(
            lambda: UpgradeJob.objects.filter(pk=job.pk, status="completed").first(), 240
        )
        wait_for(
            lambda: not TaskExecution.objects.filter(status__in=["queued", "running"]).exists(),
            120,
        )
    finally:
        stop([w for w in (doomed, survivor) if w is not None])
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    assert (finished.matched, finished.upgraded, finished.skipped, finished.failed) == (
        EXECUTIONS,
        EXECUTIONS,
        0,
        0,
    ), logs
    records = Correction.objects.filter(operation="upgrade", upgrade_job=job)
    assert records.count() == EXECUTIONS
    assert set(records.values_list("flow_execution_id", flat=True)) == set(executions)
    assert set(FlowExecution.objects.values_list("flow_version__version", flat=True)) == {2}
    assert set(FlowExecution.objects.values_list("status", flat=True)) == {"completed"}
    # Each execution ran b and c once more: two new attempts each, nothing twice.
    assert TaskExecution.objects.count() == EXECUTIONS * 5
    for pk in executions:  # the freshness invariant, definitions included, for every one
        assert freshness_violations(FlowExecution.objects.get(pk=pk)) == []
