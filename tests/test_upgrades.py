"""Upgrades: moving a flow execution to another version of its flow re-runs exactly the tasks
whose definition changed and what they made stale, with early cutoff."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from executions.models import Correction, FlowExecution, TaskExecution
from outputs.models import TaskOutput
from tests.helpers.flows import attempts, get_json
from tests.helpers.upgrades import chain, new_version, start

pytestmark = pytest.mark.django_db(transaction=True)


def upgrade(tenant: Any, fe: str, query: str = "", **body: Any) -> Any:
    return tenant.client.post(f"/flow-executions/{fe}/upgrade{query}", body, format="json")


def ids(fe: str) -> dict[str, list[str]]:
    return {name: [str(a.id) for a in rows] for name, rows in attempts(fe).items()}


def output(fe: str, task: str) -> Any:
    return (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name=task)
        .oldest_to_current()
        .last()
        .output
    )


def test_a_config_change_reruns_exactly_that_task_and_the_dependents_whose_input_changes(tenant):
    flow_id, fe = start(tenant, chain())
    before = ids(fe)
    new_version(flow_id, chain("{doubled: [v, v]}"))
    response = upgrade(tenant, fe, "?execute_flow=true", reason="b had a bug")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["changed_tasks"] == {"b": ["config"]}
    assert body["stale_tasks"] == ["b", "c", "d"]
    assert (body["from_version"], body["to_version"]) == (1, 2)
    assert body["flow_execution"]["flow_version"] == 2
    assert body["flow_execution"]["status"] == "completed"
    after = ids(fe)
    new = {name: set(after[name]) - set(before[name]) for name in after}
    assert {name for name, created in new.items() if created} == {"b", "c", "d"}
    assert all(len(created) <= 1 for created in new.values())
    assert after["a"] == before["a"]
    assert after["side"] == before["side"]
    assert output(fe, "b") == {"doubled": [3, 3]}
    assert output(fe, "d") == {"c": {"b": {"doubled": [3, 3]}}}
    assert (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name="d")
        .oldest_to_current()
        .last()
        .flow_version
        == 2
    )
    listed = get_json(tenant, f"/corrections?operation=upgrade&flow_execution_id={fe}")
    [shown] = listed["results"]
    assert shown["changes"] == {"changed": {"b": ["config"]}, "added": [], "removed": []}
    assert shown["upgrade_job_id"] is None
    record = Correction.objects.get(pk=body["correction_id"])
    assert record.operation == "upgrade"
    assert record.reason == "b had a bug"
    assert (record.before, record.after) == ({"flow_version": 1}, {"flow_version": 2})
    assert record.changes == {"changed": {"b": ["config"]}, "added": [], "removed": []}
    assert record.stale_tasks == ["b", "c", "d"]
    stale_b = TaskExecution.objects.get(pk=before["b"][0])
    cause = get_json(tenant, f"/task-executions/{stale_b.pk}")["stale_cause"]
    assert cause["reason"] == "definition_changed"
    assert cause["upstream_task"] == "b"
    assert cause["definition_change"] == {
        "from_version": 1,
        "to_version": 2,
        "changed_fields": ["config"],
    }
    cause_d = get_json(tenant, f"/task-executions/{before['d'][0]}")["stale_cause"]
    assert cause_d["upstream_task"] == "b"
    assert cause_d["definition_change"]["changed_fields"] == ["config"]
    assert FlowExecution.objects.get(pk=fe).flow_version.version == 2


def test_early_cutoff_stops_at_a_changed_task_whose_output_did_not_change(tenant):
    flow_id, fe = start(tenant, chain())
    before = ids(fe)
    new_version(flow_id, chain("v || `0`"))  # the same output for v = 3
    body = upgrade(tenant, fe, "?execute_flow=true").json()
    assert body["stale_tasks"] == ["b", "c", "d"]
    after = attempts(fe)
    b_new = after["b"][-1]
    assert b_new.reused_from_id is None
    assert b_new.status == "completed"
    for name in ("c", "d"):
        latest = after[name][-1]
        assert latest.status == "completed"
        assert str(latest.reused_from_id) == before[name][0], name  # reused, not run


def test_an_added_task_runs_once_its_upstream_is_complete_and_nothing_goes_stale(tenant):
    flow_id, fe = start(tenant, chain())
    before = ids(fe)
    tasks = [*chain(), {"name": "e", "type": "transform", "input": {"d": "${{ tasks.d.output }}"}}]
    new_version(flow_id, tasks)
    body = upgrade(tenant, fe).json()
    assert (body["added_tasks"], body["stale_tasks"], body["changed_tasks"]) == (["e"], [], {})
    assert body["tasks_to_run"] == ["e"]
    after = ids(fe)
    assert len(after["e"]) == 1
    assert {k: v for k, v in after.items() if k != "e"} == before
    assert output(fe, "e") == {"d": {"c": {"b": 3}}}
    assert FlowExecution.objects.get(pk=fe).status == "completed"


def test_a_removed_task_is_retired_kept_as_history_and_leaves_the_summary(tenant):
    flow_id, fe = start(tenant, chain())
    new_version(flow_id, [t for t in chain() if t["name"] != "side"])
    body = upgrade(tenant, fe).json()
    assert body["removed_tasks"] == ["side"]
    assert body["stale_tasks"] == []
    side = TaskExecution.objects.get(flow_execution_id=fe, task_name="side")
    assert (side.status, side.stale_reason) == ("stale", "task_removed")
    assert TaskOutput.objects.get(flow_execution_id=fe, task_name="side").status == "deleted"
    summary = FlowExecution.objects.get(pk=fe).task_outputs_summary
    assert "side" not in summary["tasks"]
    assert summary["status_counts"] == {"completed": 4}
    assert FlowExecution.objects.get(pk=fe).status == "completed"
    assert "task removed" in side.history.first().history_change_reason


def test_a_version_bump_alone_marks_the_task_changed(tenant):
    flow_id, fe = start(tenant, chain())
    before = ids(fe)
    new_version(flow_id, chain(c={"version": "2024-06-01"}))
    body = upgrade(tenant, fe, "?execute_flow=true").json()
    assert body["changed_tasks"] == {"c": ["version"]}
    assert body["stale_tasks"] == ["c", "d"]
    after = attempts(fe)
    assert after["c"][-1].reused_from_id is None  # c ran again: its result is in doubt
    assert str(after["d"][-1].reused_from_id) == before["d"][0]  # d's input is the same
    assert ids(fe)["b"] == before["b"]


def test_without_execute_flow_the_stale_set_waits_and_only_stale_runs_it_later(tenant):
    flow_id, fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    body = upgrade(tenant, fe).json()
    assert body["stale_tasks"] == ["b", "c", "d"]
    assert body["new_attempts"] == []
    assert FlowExecution.objects.get(pk=fe).status == "stale"
    response = tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    assert response.status_code == 202
    assert output(fe, "d") == {"c": {"b": {"x": 3}}}


def test_a_dry_run_writes_nothing_and_its_token_binds_the_upgrade(tenant):
    flow_id, fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    counts = (TaskExecution.objects.count(), Correction.objects.count(), TaskOutput.objects.count())
    preview = upgrade(tenant, fe, "?execute_flow=true&dry_run=true").json()
    assert preview["dry_run"] is True
    assert preview["correction_id"] is None
    assert preview["stale_tasks"] == ["b", "c", "d"]
    assert preview["tasks_to_run"] == ["b", "c", "d"]
    assert (
        TaskExecution.objects.count(),
        Correction.objects.count(),
        TaskOutput.objects.count(),
    ) == counts
    assert FlowExecution.objects.get(pk=fe).flow_version.version == 1
    token = preview["preview_token"]
    # A different request (no execute_flow) does not match the token.
    outdated = upgrade(tenant, fe, f"?preview_token={token}")
    assert outdated.status_code == 409
    assert outdated.json()["error"]["code"] == "preview_outdated"
    assert outdated.json()["error"]["details"]["preview"]["stale_tasks"] == ["b", "c", "d"]
    applied = upgrade(tenant, fe, f"?execute_flow=true&preview_token={token}")
    assert applied.status_code == 200, applied.json()


def test_a_preview_token_goes_stale_when_the_execution_changes(tenant):
    flow_id, fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    token = upgrade(tenant, fe, "?dry_run=true").json()["preview_token"]
    a = TaskExecution.objects.get(flow_execution_id=fe, task_name="a")
    response = tenant.client.patch(f"/task-executions/{a.pk}", {"output": {"v": 4}}, format="json")
    assert response.status_code == 200, response.json()
    outdated = upgrade(tenant, fe, f"?preview_token={token}")
    assert outdated.status_code == 409
    assert FlowExecution.objects.get(pk=fe).flow_version.version == 1


def test_a_changed_task_that_was_stale_already_does_not_bring_back_its_old_result(tenant):
    flow_id, fe = start(tenant, chain())
    a = TaskExecution.objects.get(flow_execution_id=fe, task_name="a")
    # The same output for `a` again, but marked stale by hand: b..d go stale, nothing runs.
    tenant.client.patch(f"/task-executions/{a.pk}", {"output": {"v": 5}}, format="json")
    tenant.client.patch(f"/task-executions/{a.pk}", {"output": {"v": 3}}, format="json")
    assert attempts(fe)["b"][-1].status == "stale"
    new_version(flow_id, chain("v || `0`"))
    upgrade(tenant, fe, "?execute_flow=true")
    b = attempts(fe)["b"][-1]
    assert b.status == "completed"
    assert b.reused_from_id is None


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        ("same", 422, "already_on_version"),
        ("missing", 422, "does_not_exist"),
        ("loop", 422, "incompatible_upgrade"),
        ("deleted", 409, "flow_execution_deleted"),
    ],
)
def test_an_upgrade_the_execution_cannot_take_is_refused_naming_the_reason(
    tenant, mutate, status, code
):
    flow_id, fe = start(tenant, chain())
    body: dict[str, Any] = {}
    if mutate == "same":
        body["flow_version"] = 1
    elif mutate == "missing":
        body["flow_version"] = 9
    elif mutate == "loop":
        new_version(flow_id, chain(c={"for_each": [1, 2]}))
    else:
        new_version(flow_id, chain("{x: v}"))
        assert tenant.client.delete(f"/flow-executions/{fe}").status_code == 204
    response = upgrade(tenant, fe, **body)
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    if status == 422:
        first = response.json()["detail"][0]
        assert (first["type"], first["loc"]) == (code, ["body", "flow_version"])
    else:
        assert error["code"] == code
    assert Correction.objects.filter(operation="upgrade").count() == 0


def test_an_execution_with_a_waiting_person_is_refused_as_live(tenant):
    tasks = [*chain(), {"name": "review", "type": "human", "depends_on": ["d"]}]
    flow_id, fe = start(tenant, tasks)
    new_version(flow_id, [*chain("{x: v}"), tasks[-1]])
    response = upgrade(tenant, fe)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "flow_execution_live"


def test_another_organizations_execution_is_not_found(tenant, other_tenant):
    flow_id, fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    assert upgrade(other_tenant, fe).status_code == 404
    assert FlowExecution.objects.get(pk=fe).flow_version.version == 1


def test_a_bad_version_key_is_refused_at_save(tenant):
    response = tenant.client.post(
        "/flows",
        {
            "name": "x",
            "definition": yaml.safe_dump(
                {"tasks": [{"name": "a", "type": "transform", "version": []}]}
            ),
        },
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "definition", "tasks", 0, "version"]


# Many executions: upgrade jobs ---------------------------------------------------------------


def test_an_upgrade_job_upgrades_every_matched_execution_in_batches_with_exact_counts(
    tenant, settings
):
    settings.FLOWPLATFORM_UPGRADE_BATCH = 2
    flow_id, first = start(tenant, chain())
    executions = [first]
    for v in range(4):
        response = tenant.client.post(
            "/flow-executions", {"flow_id": flow_id, "input": {"v": v + 10}}, format="json"
        )
        executions.append(response.json()["id"])
    tenant.client.delete(f"/flow-executions/{executions[1]}")
    new_version(flow_id, chain("{x: v}"))
    # One already on version 2: started after the new version.
    response = tenant.client.post(
        "/flow-executions", {"flow_id": flow_id, "input": {"v": 1}}, format="json"
    )
    executions.append(response.json()["id"])
    response = tenant.client.post(
        f"/flows/{flow_id}/upgrade-executions?execute_flow=true", {"reason": "fix b"}, format="json"
    )
    assert response.status_code == 202, response.json()
    job = response.json()
    assert (job["status"], job["matched"], job["upgraded"], job["skipped"], job["failed"]) == (
        "completed",
        6,
        4,
        2,
        0,
    )
    assert job["skipped_reasons"] == {"already_on_version": 1, "deleted": 1}
    assert job["pending"] == 0
    items = get_json(tenant, f"/upgrade-jobs/{job['id']}/executions")["results"]
    assert [i["flow_execution_id"] for i in items] == executions
    upgraded = [i for i in items if i["outcome"] == "upgraded"]
    assert {i["stale_tasks"] for i in upgraded} == {3}
    for item in upgraded:
        fe = item["flow_execution_id"]
        assert FlowExecution.objects.get(pk=fe).flow_version.version == 2
        assert FlowExecution.objects.get(pk=fe).status == "completed"
        record = Correction.objects.get(flow_execution_id=fe, operation="upgrade")
        assert str(record.upgrade_job_id) == job["id"]
        assert record.reason == "fix b"
    assert get_json(tenant, f"/upgrade-jobs/{job['id']}")["upgraded"] == 4


def test_an_upgrade_job_dry_run_counts_per_execution_and_writes_nothing(tenant):
    flow_id, fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    corrections = Correction.objects.count()
    job = tenant.client.post(
        f"/flows/{flow_id}/upgrade-executions?dry_run=true&execute_flow=true", {}, format="json"
    ).json()
    assert (job["status"], job["dry_run"], job["upgraded"]) == ("completed", True, 1)
    [item] = get_json(tenant, f"/upgrade-jobs/{job['id']}/executions")["results"]
    assert (item["stale_tasks"], item["tasks_to_run"], item["correction_id"]) == (3, 3, None)
    assert FlowExecution.objects.get(pk=fe).flow_version.version == 1
    assert Correction.objects.count() == corrections


def test_an_upgrade_job_filters_and_its_limit(tenant, settings):
    flow_id, _fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    job = tenant.client.post(
        f"/flows/{flow_id}/upgrade-executions", {"from_version": 2}, format="json"
    ).json()
    assert job["matched"] == 0
    assert job["status"] == "completed"
    job = tenant.client.post(
        f"/flows/{flow_id}/upgrade-executions", {"status": ["failed"]}, format="json"
    ).json()
    assert job["matched"] == 0
    settings.FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS = 0
    response = tenant.client.post(f"/flows/{flow_id}/upgrade-executions", {}, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_many_executions"
    response = tenant.client.post(
        f"/flows/{flow_id}/upgrade-executions", {"to_version": 7}, format="json"
    )
    assert response.status_code == 422
    bad = tenant.client.post(
        f"/flows/{flow_id}/upgrade-executions",
        {"created_after": "2026-01-02T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
        format="json",
    )
    assert bad.status_code == 422


def test_an_upgrade_job_is_its_organizations_alone(tenant, other_tenant):
    flow_id, _fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    assert (
        other_tenant.client.post(
            f"/flows/{flow_id}/upgrade-executions", {}, format="json"
        ).status_code
        == 404
    )
    job = tenant.client.post(f"/flows/{flow_id}/upgrade-executions", {}, format="json").json()
    assert other_tenant.client.get(f"/upgrade-jobs/{job['id']}").status_code == 404
    assert other_tenant.client.get("/upgrade-jobs").json()["results"] == []


def test_a_job_run_again_after_it_finished_upgrades_nothing_twice(tenant):
    from executions.corrections import upgrade_jobs

    flow_id, fe = start(tenant, chain())
    new_version(flow_id, chain("{x: v}"))
    job = tenant.client.post(f"/flows/{flow_id}/upgrade-executions", {}, format="json").json()
    upgrade_jobs.process(job["id"], tenant.org.pk)
    assert Correction.objects.filter(flow_execution_id=fe, operation="upgrade").count() == 1


def layered(size: int, expression: str = "v") -> list[dict[str, Any]]:
    """A chain of `size` transforms; task m{size//2} has the config that changes."""
    tasks = [{"name": "m0", "type": "transform", "input": {"v": "${{ flow.input.v }}"}}]
    for i in range(1, size):
        task = {
            "name": f"m{i}",
            "type": "transform",
            "input": {"v": f"${{{{ tasks.m{i - 1}.output.v }}}}"},
        }
        if i == size // 2:
            task["config"] = {"expression": expression}
        tasks.append(task)
    return tasks


@pytest.mark.parametrize("execute_flow", [False, True])
def test_an_upgrade_costs_the_same_queries_for_10_tasks_as_for_100(tenant, execute_flow):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for size in (10, 100):
        flow_id, fe = start(tenant, layered(size, "{v: v}"))
        new_version(flow_id, layered(size, "{v: v, w: `1`}"))
        with CaptureQueriesContext(connection) as queries:
            response = upgrade(tenant, fe, "?execute_flow=true" if execute_flow else "")
        assert response.status_code == 200, response.json()
        assert len(response.json()["stale_tasks"]) == size - size // 2
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
