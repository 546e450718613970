"""The freshness invariant's definition side: every task an upgrade changed (or added) holds,
in each current completed attempt (each current iteration of a looped one), a result computed
after that upgrade; reuse (`reused_from`) is followed to the attempt that computed it.
`freshness_violations` checks it, and so does `manage.py check_freshness`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from executions.models import FlowExecution, TaskExecution
from executions.selectors import freshness_violations, is_settled
from tests.helpers.flows import attempts
from tests.helpers.upgrades import chain, new_version, start

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def upgrade(tenant: Any, fe: str, query: str = "") -> dict:
    response = tenant.client.post(f"/flow-executions/{fe}/upgrade{query}", {}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def violations(fe: str) -> list:
    flow_execution = FlowExecution.objects.get(pk=fe)
    assert is_settled(flow_execution)
    return freshness_violations(flow_execution)


def test_the_invariant_holds_after_upgrades_with_and_without_execute_flow(tenant):
    flow_id, fe = start(tenant, chain())
    old = {name: rows[-1] for name, rows in attempts(fe).items()}
    extra = {"name": "e", "type": "transform", "input": {"d": "${{ tasks.d.output }}"}}
    # b's config changes (its output too), c's version is bumped, e is added, side removed.
    tasks = [*chain("{x: v}", c={"version": "2"}), extra]
    new_version(flow_id, [t for t in tasks if t["name"] != "side"])
    body = upgrade(tenant, fe, "?execute_flow=true")
    assert body["changed_tasks"] == {"b": ["config"], "c": ["version"]}
    assert violations(fe) == []
    # c ran (its result is in doubt), d reused its pre-upgrade attempt: d did not change.
    now = {name: rows[-1] for name, rows in attempts(fe).items()}
    assert now["c"].reused_from_id is None
    assert now["c"].completed_at > old["c"].completed_at
    # Without execute_flow the changed task waits stale (no completed attempt to check), and
    # ?only=stale brings the invariant back.
    new_version(flow_id, [*chain("{y: v}", c={"version": "2"}), extra])
    upgrade(tenant, fe)
    assert attempts(fe)["b"][-1].status == "stale"
    assert violations(fe) == []
    response = tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    assert response.status_code == 202
    assert violations(fe) == []
    assert attempts(fe)["e"][-1].output == {"d": {"c": {"b": {"y": 3}}}}


def test_a_result_from_before_the_upgrade_is_reported_even_through_a_reuse_chain(tenant):
    flow_id, fe = start(tenant, chain())
    old_b = attempts(fe)["b"][-1]
    new_version(flow_id, chain("v || `0`"))  # the same output: c and d are reused
    upgrade(tenant, fe, "?execute_flow=true")
    assert violations(fe) == []  # c and d reuse pre-upgrade results: they did not change
    new_b = attempts(fe)["b"][-1]
    # b's current attempt made to reuse its pre-upgrade result, as a wrong early cutoff would.
    TaskExecution.objects.filter(pk=new_b.pk).update(reused_from=old_b)
    found = violations(fe)
    assert [(v.task_name, v.attempt_id, v.computed_by, v.upgraded_to) for v in found] == [
        ("b", new_b.pk, old_b.pk, 2)
    ]
    assert found[0].expected_input == (
        "<result from before the upgrade to version 2 changed its definition>"
    )
    assert str(found[0]) == (
        f"task 'b' attempt {new_b.pk}: its result was computed by attempt {old_b.pk} before "
        "the upgrade to version 2 changed its definition"
    )
    # Two links: new_b → a post-upgrade attempt → the pre-upgrade one.
    idx = new_b.task_execution_idx
    TaskExecution.objects.filter(pk=new_b.pk).update(task_execution_idx=idx + 1)
    middle = TaskExecution.objects.create(
        organization_id=new_b.organization_id,
        flow_execution_id=fe,
        task_name="b",
        task_execution_idx=idx,
        status="stale",
        input=new_b.input,
        output=new_b.output,
        completed_at=new_b.completed_at,
        reused_from=old_b,
    )
    TaskExecution.objects.filter(pk=new_b.pk).update(reused_from=middle)
    assert [v.computed_by for v in violations(fe)] == [old_b.pk]
    TaskExecution.objects.filter(pk=middle.pk).update(reused_from=None)
    assert violations(fe) == []  # middle computed it, after the upgrade


def test_a_changed_looped_task_must_have_run_every_current_iteration_again(tenant):
    tasks = [
        {"name": "a", "type": "transform", "input": [1, 2, 3]},
        {
            "name": "each",
            "type": "transform",
            "for_each": "${{ tasks.a.output }}",
            "input": {"item": "${{ loop.item }}"},
            "config": {"expression": "item"},
        },
    ]
    flow_id, fe = start(tenant, tasks)
    before = attempts(fe)["each"]
    tasks[1]["version"] = "2"
    new_version(flow_id, tasks)
    upgrade(tenant, fe, "?execute_flow=true")
    assert violations(fe) == []
    current = [a for a in attempts(fe)["each"] if a.pk not in {b.pk for b in before}]
    assert sorted(a.iteration for a in current) == [0, 1, 2]
    second = next(a for a in current if a.iteration == 1)
    old_second = next(a for a in before if a.iteration == 1)
    TaskExecution.objects.filter(pk=second.pk).update(completed_at=old_second.completed_at)
    found = violations(fe)
    assert [(v.task_name, v.iteration, v.attempt_id) for v in found] == [("each", 1, second.pk)]
    assert str(found[0]).startswith(f"task 'each' iteration 1 attempt {second.pk}: its result")


BROKEN_STATE = """
import json
from executions.corrections.upgrades import upgrade_flow_execution
from executions.models import TaskExecution
from executions.services import start_flow_execution
from flowplatform.tenancy.services import create_organization
from flows.services import create_flow, update_flow

v1, v2 = json.loads({definitions!r})
org = create_organization("fresh")
flow = create_flow(org, name="chain", definition=v1, actor="t")
fe = start_flow_execution(org, flow_id=flow.id, input={{"v": 3}}, actor="t")
old = TaskExecution.objects.get(flow_execution=fe, task_name="b")
update_flow(flow, actor="t", definition=v2)
upgrade_flow_execution(fe, flow_version=None, actor="t", execute_flow=True)
new = TaskExecution.objects.filter(flow_execution=fe, task_name="b").latest("task_execution_idx")
assert new.pk != old.pk and new.status == "completed", new.status
TaskExecution.objects.filter(pk=new.pk).update(reused_from=old)
print(fe.pk, new.pk, old.pk)
"""


def test_check_freshness_run_from_the_shell_reports_a_pre_upgrade_result(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DJANGO_", "TASKS_", "FLOWPLATFORM_"))
    }
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'freshness.sqlite3'}",
        "FLOWPLATFORM_VAR_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }

    def manage(*args: str, status: int = 0) -> str:
        result = subprocess.run(  # noqa: S603 - our own manage.py, with our own arguments
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        shown = f"manage.py {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == status, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        return result.stdout

    manage("migrate", "--noinput", "-v0")
    assert manage("check_freshness").rstrip().endswith("0 violation(s)")
    definitions = json.dumps([json.dumps({"tasks": chain()}), json.dumps({"tasks": chain("[v]")})])
    script = BROKEN_STATE.format(definitions=definitions)
    fe, new, old = manage("shell", "-v0", "-c", script).splitlines()[-1].split()
    for args in ((), (fe,)):
        out = manage("check_freshness", *args, status=1)
        assert (
            f"{fe}: task 'b' attempt {new}: its result was computed by attempt {old} before the "
            "upgrade to version 2 changed its definition"
        ) in out, out
        assert out.rstrip().endswith("1 violation(s)"), out
