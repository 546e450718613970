"""Waves: pure tasks run in the scheduling loop (executions.engine.waves), many per transaction.

What a user depends on: the records are exactly the ones a job per attempt writes (every
attempt with its input and output or error, every output, the summary, the statuses, retries,
early cutoff, human and impure tasks in between); the statements a run costs do not grow with
the number of tasks in a group; and a group that fails half-way leaves nothing of itself
behind and loses nothing committed before it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import yaml
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from executions import jobs, transitions
from executions.engine import publishing, reaper, worker
from executions.models import FlowExecution, TaskExecution
from flows.services import create_flow
from outputs.models import TaskOutput
from tests.helpers.callables import allow_test_callables  # noqa: F401 (a fixture)
from tests.helpers.workers import start_worker, stop, wait_until_settled

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_test_callables"),
]


# Records -----------------------------------------------------------------------------------


def records(flow_execution_id: Any) -> dict[str, Any]:
    """Every durable record of a flow execution, without ids and times: what must be the same
    whether its tasks ran in waves or as a job each."""
    fe = FlowExecution.objects.get(pk=flow_execution_id)
    attempts = {
        (a.task_name, a.task_execution_idx): (
            a.status,
            a.input,
            a.output,
            a.error,
            a.reused_from_id is not None,
            a.started_by_correction_id is not None,
            a.stale_reason,
            a.stale_upstream_task,
            a.lease_owner,
            a.completed_at is not None,
        )
        for a in TaskExecution.objects.filter(flow_execution=fe)
    }
    outputs: dict[str, list] = {}
    for o in TaskOutput.objects.filter(flow_execution=fe).order_by("created_at", "id"):
        outputs.setdefault(o.task_name, []).append(
            (o.output, o.summary, o.status, o.tags, o.modified_by, o.flow_version)
        )
    return {
        "status": fe.status,
        "summary": fe.task_outputs_summary,
        "attempts": attempts,
        "outputs": outputs,
    }


def start(tenant: Any, tasks: list[dict], flow_input: Any = 3) -> str:
    flow = create_flow(
        tenant.org,
        name=f"f-{uuid.uuid4().hex[:8]}",
        definition=yaml.safe_dump({"tasks": tasks}),
        actor="t",
    )
    response = tenant.client.post(
        "/flow-executions", {"flow_id": str(flow.id), "input": flow_input}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def correct(tenant: Any, flow_execution_id: str, task: str, output: Any) -> dict:
    attempt = (
        TaskExecution.objects.filter(flow_execution_id=flow_execution_id, task_name=task)
        .order_by("-task_execution_idx")
        .first()
    )
    body = tenant.client.get(f"/task-executions/{attempt.pk}").json()
    body.update(status="completed", output=output)
    response = tenant.client.put(
        f"/task-executions/{attempt.pk}?execute_flow=true", body, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def in_both_modes(settings: Any, run: Any) -> tuple[dict, dict]:
    """`run()` (returns a flow execution id) in waves, then with a job per attempt."""
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = True
    waves = records(run())
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = False
    jobs = records(run())
    return waves, jobs


MIXED = [
    {"name": "a", "type": "transform", "input": "${{ flow.input }}"},
    {"name": "b", "type": "transform", "input": ["${{ tasks.a.output }}", 1]},
    {
        "name": "c",
        "type": "transform",
        "input": "${{ tasks.a.output }}",
        "config": {"expression": "abs(@)"},
    },
    {
        "name": "py",
        "type": "python",
        "input": "${{ tasks.b.output }}",
        "config": {"callable": "tests.helpers.callables:counted"},
    },
    {"name": "d", "type": "transform", "input": {"b": "${{ tasks.b.output }}", "py": 1}},
    {
        "name": "e",
        "type": "transform",
        "input": ["${{ tasks.py.output }}", "${{ tasks.d.output }}"],
    },
    {"name": "review", "type": "human", "input": "${{ tasks.e.output }}"},
    {"name": "after", "type": "transform", "input": "${{ tasks.review.output }}"},
]


def test_a_run_writes_the_same_records_in_waves_as_with_a_job_per_attempt(tenant, settings):
    waves, jobs = in_both_modes(settings, lambda: start(tenant, MIXED))
    assert waves == jobs
    assert waves["status"] == "in_progress"  # the person is awaited
    assert waves["attempts"][("review", 0)][0] == "running"
    assert waves["attempts"][("e", 0)][0] == "completed"


def test_a_failing_pure_task_is_retried_and_fails_the_same_way(tenant, settings):
    tasks = [
        {"name": "a", "type": "transform", "input": "${{ flow.input }}"},
        {
            "name": "bad",
            "type": "transform",
            "retries": 2,
            "input": "${{ tasks.a.output }}",
            "config": {"expression": "abs(@)"},  # abs of a string: an invalid-type error
        },
        {"name": "after", "type": "transform", "input": "${{ tasks.bad.output }}"},
        {"name": "side", "type": "transform", "input": "${{ tasks.a.output }}"},
    ]
    waves, jobs = in_both_modes(settings, lambda: start(tenant, tasks, flow_input="text"))
    assert waves == jobs
    assert [waves["attempts"][("bad", i)][0] for i in range(3)] == ["failed"] * 3
    assert ("after", 0) not in waves["attempts"]
    assert waves["status"] == "failed"


def test_a_correction_re_runs_the_same_attempts_with_the_same_cutoff(tenant, settings):
    tasks = [
        {"name": "a", "type": "transform", "input": "${{ flow.input }}"},
        {
            "name": "sign",
            "type": "transform",
            "input": "${{ tasks.a.output }}",
            "config": {"expression": "to_string(@ > `0`)"},
        },
        {"name": "uses_sign", "type": "transform", "input": ["${{ tasks.sign.output }}", 2]},
        {"name": "copy", "type": "transform", "input": "${{ tasks.a.output }}"},
        {"name": "last", "type": "transform", "input": ["${{ tasks.copy.output }}", 3]},
    ]

    def run() -> str:
        fe = start(tenant, tasks)
        body = correct(tenant, fe, "a", 5)  # sign stays "true": uses_sign is reused
        assert body["stale_tasks"] == ["copy", "last", "sign", "uses_sign"] or sorted(
            body["stale_tasks"]
        ) == ["copy", "last", "sign", "uses_sign"]
        return fe

    waves, jobs = in_both_modes(settings, run)
    assert waves == jobs
    assert waves["attempts"][("uses_sign", 1)][4] is True  # reused
    assert waves["attempts"][("last", 1)][2] == [5, 3]
    assert waves["status"] == "completed"


@st.composite
def pure_dags(draw: Any) -> tuple[list[dict], str, int]:
    """A random DAG of transforms (each the max of its parents' outputs and a constant), a
    task to correct and the value it is corrected to."""
    size = draw(st.integers(min_value=2, max_value=9))
    tasks = []
    for i in range(size):
        parents = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        reads = [f"${{{{ tasks.t{p}.output }}}}" for p in sorted(parents)] or ["${{ flow.input }}"]
        tasks.append(
            {
                "name": f"t{i}",
                "type": "transform",
                "input": [*reads, draw(st.integers(0, 9))],
                "config": {"expression": "max(@)"},
            }
        )
    return tasks, f"t{draw(st.integers(0, size - 1))}", draw(st.integers(0, 12))


@hypothesis_settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(dag=pure_dags())
def test_any_pure_dag_and_correction_give_the_same_records_in_waves(tenant, settings, dag):
    tasks, corrected, value = dag

    def run() -> str:
        fe = start(tenant, tasks, flow_input=4)
        correct(tenant, fe, corrected, value)
        return fe

    waves, jobs = in_both_modes(settings, run)
    assert waves == jobs
    assert waves["status"] == "completed"


# Statements --------------------------------------------------------------------------------


def chain(size: int) -> list[dict]:
    tasks = [{"name": "t0", "type": "transform", "input": "${{ flow.input }}"}]
    tasks += [
        {"name": f"t{i}", "type": "transform", "input": [f"${{{{ tasks.t{i - 1}.output }}}}"]}
        for i in range(1, size)
    ]
    return tasks


def fanout(size: int) -> list[dict]:
    tasks = [{"name": "root", "type": "transform", "input": "${{ flow.input }}"}]
    tasks += [
        {"name": f"leaf{i}", "type": "transform", "input": ["${{ tasks.root.output }}", i]}
        for i in range(size - 2)
    ]
    tasks.append(
        {
            "name": "join",
            "type": "transform",
            "input": [f"${{{{ tasks.leaf{i}.output }}}}" for i in range(size - 2)],
        }
    )
    return tasks


def statements_of_a_run(tenant: Any, tasks: list[dict]) -> int:
    """The statements of starting a run of `tasks` through the API until it settles (after a
    first run, so that what happens once — the key's last use, caches — is not counted)."""
    flow = create_flow(
        tenant.org,
        name=f"f-{uuid.uuid4().hex[:8]}",
        definition=yaml.safe_dump({"tasks": tasks}),
        actor="t",
    )
    with CaptureQueriesContext(connection) as queries:
        response = tenant.client.post(
            "/flow-executions", {"flow_id": str(flow.id), "input": 1}, format="json"
        )
    assert response.json()["status"] == "completed", response.json()
    return len(queries)


# Written down: the statements of a whole run through the API (the request, then its jobs),
# and what each further task costs. In waves a run of up to FLOWPLATFORM_WAVE_TASKS pure tasks
# is one group whatever its size or shape; with a job per attempt each task costs a constant.
# (One of a run's statements is the webhooks' when it settles: does an endpoint want that?)
WAVE_RUN = {"postgresql": 38, "sqlite": 36}
PER_TASK_WITH_JOBS = {
    "postgresql": {"chain": 15, "fanout": 16},
    "sqlite": {"chain": 13, "fanout": 14},
}


@pytest.mark.parametrize("shape", [chain, fanout])
def test_a_run_in_waves_costs_the_same_statements_at_any_size(tenant, shape):
    statements_of_a_run(tenant, shape(3))  # what happens once
    small, large = (statements_of_a_run(tenant, shape(n)) for n in (10, 60))
    assert small == large == WAVE_RUN[connection.vendor]


@pytest.mark.usefixtures("jobs_per_attempt")
@pytest.mark.parametrize("shape", [chain, fanout])
def test_with_a_job_per_attempt_each_task_costs_a_constant(tenant, shape):
    statements_of_a_run(tenant, shape(3))  # what happens once
    runs = [statements_of_a_run(tenant, shape(n)) for n in (10, 20, 30)]
    assert (
        runs[1] - runs[0]
        == runs[2] - runs[1]
        == 10 * PER_TASK_WITH_JOBS[connection.vendor][shape.__name__]
    )


def test_a_bounded_group_commits_and_the_next_group_carries_on(tenant, settings):
    settings.FLOWPLATFORM_WAVE_TASKS = 4
    statements_of_a_run(tenant, chain(3))  # what happens once
    small = statements_of_a_run(tenant, chain(8))
    large = statements_of_a_run(tenant, chain(16))
    per_group = (large - small) / 2  # 8 more tasks: two more groups of 4
    assert per_group == int(per_group)
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = False
    fe_jobs = start(tenant, chain(16))
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = True
    fe_waves = start(tenant, chain(16))
    assert records(fe_waves) == records(fe_jobs)


# Failures half-way -------------------------------------------------------------------------


def fail_once(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[str]:
    """Make the wave's write of its outputs raise `error` once, after its other writes."""
    real = publishing.publish_many
    fired: list[str] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        if not fired:
            fired.append("publish_many")
            raise error

    monkeypatch.setattr(publishing, "publish_many", failing)
    return fired


def test_a_database_error_in_a_group_leaves_nothing_of_it_and_it_runs_again(
    tenant, settings, monkeypatch
):
    tasks = chain(6)
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = False
    expected = records(start(tenant, tasks))
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = True
    fired = fail_once(monkeypatch, OperationalError("the database went away"))
    fe = start(tenant, tasks)
    assert fired, "the injected failure did not happen"
    # What the request committed stands; the group left nothing: its attempt is queued.
    after_failure = records(fe)
    assert after_failure["attempts"] == {
        ("t0", 0): ("queued", 3, None, None, False, False, "", "", "", False)
    }
    assert after_failure["outputs"] == {}
    queued = list(
        TaskExecution.objects.filter(flow_execution_id=fe, status="queued").values_list(
            "pk", flat=True
        )
    )
    worker.run_wave(uuid.UUID(fe), queued, tenant.org.pk)  # the job, run again
    assert records(fe) == expected


def test_a_group_that_cannot_be_written_runs_its_attempts_one_by_one(tenant, settings, monkeypatch):
    tasks = fanout(7)
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = False
    expected = records(start(tenant, tasks))
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = True
    fired = fail_once(monkeypatch, ValueError("a bug in the group's bookkeeping"))
    fe = start(tenant, tasks)
    assert fired, "the injected failure did not happen"
    assert records(fe) == expected  # each task once, every output once


def test_a_claimed_attempt_is_not_run_twice(tenant):
    """Two groups given the same queued attempt (a duplicated job): the second finds it taken
    and changes nothing."""
    fe = start(tenant, chain(3))
    before = records(fe)
    first = TaskExecution.objects.get(flow_execution_id=fe, task_name="t0")
    worker.run_wave(uuid.UUID(fe), [first.pk], tenant.org.pk)
    assert records(fe) == before


def test_claim_many_takes_only_queued_attempts(tenant):
    fe = tenant.flow_execution()
    rows = {
        status: tenant.task_execution(fe, task_name=f"t-{status}", status=status)
        for status in TaskExecution.Status
    }
    now = timezone.now()
    taken = transitions.claim_many(
        [a.pk for a in rows.values()], owner="me:1", expires=now, now=now
    )
    assert [a.pk for a in taken] == [rows["queued"].pk]
    assert taken[0].status == "running"
    statuses = dict(
        TaskExecution.objects.filter(flow_execution=fe).values_list("task_name", "status")
    )
    assert statuses == {f"t-{s}": ("running" if s == "queued" else s) for s in rows}
    assert TaskExecution.objects.get(pk=rows["queued"].pk).lease_owner == "me:1"


# With workers (django-tasks-db) ------------------------------------------------------------


def test_a_wave_job_whose_worker_died_mid_wave_is_queued_again(tenant, settings):
    """A db_worker killed in the middle of a wave: its transaction rolled back, so the
    attempts are queued and its job row RUNNING. After a lease the reaper puts the job back,
    and running it does the work once."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    fe = start(tenant, fanout(6))
    job = DBTaskResult.objects.get(task_path=jobs.run_pure_wave.module_path)
    assert job.args_kwargs["args"][0] == fe
    long_ago = timezone.now() - timedelta(seconds=settings.FLOWPLATFORM_LEASE_SECONDS + 5)
    DBTaskResult.objects.filter(pk=job.pk).update(status="RUNNING", started_at=long_ago)
    queued = TaskExecution.objects.filter(flow_execution_id=fe, status="queued")
    assert list(queued.values_list("task_name", flat=True)) == ["root"]

    reaper.reap_expired()

    assert DBTaskResult.objects.get(pk=job.pk).status == "READY"
    flow_execution_id, attempt_ids, organization_id = job.args_kwargs["args"]
    for _ in range(2):  # the job run twice (requeued, and a slow original): the work happens once
        worker.run_wave(
            uuid.UUID(flow_execution_id),
            [uuid.UUID(a) for a in attempt_ids],
            uuid.UUID(organization_id),
        )
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = False
    settings.TASKS = {"default": {"BACKEND": "flowplatform.tasks.InlineQueueBackend"}}
    expected = records(start(tenant, fanout(6)))
    assert records(fe) == expected


@pytest.mark.postgresql
def test_two_db_workers_run_a_pure_flow_in_waves_exactly_once(tenant, settings, tmp_path):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    fe = start(tenant, fanout(202))
    workers = [start_worker(f"worker-{n}", tmp_path) for n in (1, 2)]
    try:
        status = wait_until_settled(fe)
    finally:
        stop(workers)
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("worker-*.log")}
    assert status == "completed", logs
    waves = DBTaskResult.objects.filter(task_path=jobs.run_pure_wave.module_path)
    assert waves.count() == 1  # the root's wave ran every task: one job, not 202
    assert not DBTaskResult.objects.filter(task_path=jobs.run_task_attempt.module_path).exists()
    got = records(fe)
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = False
    settings.TASKS = {"default": {"BACKEND": "flowplatform.tasks.InlineQueueBackend"}}
    assert got == records(start(tenant, fanout(202)))
