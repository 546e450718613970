"""What-if predictions in a correction's dry run (issue 19): for each task downstream of the
corrected one, whether it runs or is reused and, for side-effect-free tasks, the input and
output it will have; "unknown" for what only running a python/http/human task can tell.

After the real correction, every predicted value is the one the engine produced (the property
test on random DAGs of pure tasks, plain and looped, from tests/helpers/fuzz_dags.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from executions.models import Correction, FlowExecution, TaskExecution
from executions.selectors import latest_attempts
from flows.models import FlowVersion
from tests.helpers.callables import (
    CALLS,
    allow_test_callables,  # noqa: F401 - autouse fixture
)
from tests.helpers.corrections import PROPERTY
from tests.helpers.flows import attempts, latest, start_execution
from tests.helpers.fuzz_dags import MAX_ITEMS, Model, current_attempts, looped_dags, published
from tests.helpers.fuzz_dags import start as start_dag
from tests.helpers.upgrades import chain as upgrade_chain
from tests.helpers.upgrades import new_version
from tests.helpers.upgrades import start as upgrade_chain_start

pytestmark = pytest.mark.django_db(transaction=True)


def dry_run(tenant: Any, attempt: TaskExecution, output: Any, execute: bool = True) -> dict:
    """PUT ?dry_run=true of the attempt's GET body with `output`, status completed; the answer."""
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body.update(output=output, status="completed")
    query = "?dry_run=true" + ("&execute_flow=true" if execute else "")
    response = tenant.client.put(f"/task-executions/{attempt.id}{query}", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def apply(tenant: Any, attempt: TaskExecution, output: Any, token: str | None = None) -> dict:
    body = tenant.client.get(f"/task-executions/{attempt.id}").json()
    body.update(output=output, status="completed")
    query = "?execute_flow=true" + (f"&preview_token={token}" if token else "")
    response = tenant.client.put(f"/task-executions/{attempt.id}{query}", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def transform(name: str, reads: str, expression: str | None = None) -> dict:
    task: dict[str, Any] = {"name": name, "type": "transform", "input": reads}
    if expression:
        task["config"] = {"expression": expression}
    return task


CHAIN = [
    {"name": "a", "type": "transform", "input": {"n": 1}},
    transform("b", "${{ tasks.a.output }}", "{n: n, double: sum([n, n])}"),
    transform("c", "${{ tasks.b.output }}", "{total: sum([n, double])}"),
]


def test_a_pure_chain_predicts_every_input_and_output_and_nothing_is_written(tenant) -> None:
    fe = start_execution(tenant, CHAIN)
    before = TaskExecution.objects.filter(flow_execution_id=fe).count()

    answer = dry_run(tenant, latest(fe, "a"), {"n": 5})

    assert answer["stale_tasks"] == ["b", "c"]
    assert answer["predictions"] == {
        "b": {"action": "run", "input": {"n": 5}, "output": {"n": 5, "double": 10}},
        "c": {"action": "run", "input": {"n": 5, "double": 10}, "output": {"total": 15}},
    }
    assert TaskExecution.objects.filter(flow_execution_id=fe).count() == before
    assert not Correction.objects.exists()
    assert latest(fe, "c").output == {"total": 3}  # the current one, untouched

    applied = apply(tenant, latest(fe, "a"), {"n": 5}, answer["preview_token"])
    assert applied["predictions"] == {}  # predictions are a dry run's
    for name in ("b", "c"):
        current = latest(fe, name)
        assert {"input": current.input, "output": current.output} == {
            k: v for k, v in answer["predictions"][name].items() if k != "action"
        }


def test_without_execute_flow_the_prediction_is_of_running_the_stale_set(tenant) -> None:
    fe = start_execution(tenant, CHAIN)
    answer = dry_run(tenant, latest(fe, "a"), {"n": 2}, execute=False)
    assert answer["started_tasks"] == []
    assert answer["predictions"]["c"] == {
        "action": "run",
        "input": {"n": 2, "double": 4},
        "output": {"total": 6},
    }
    apply_without = tenant.client.get(f"/task-executions/{latest(fe, 'a').id}").json()
    apply_without.update(output={"n": 2}, status="completed")
    url = f"/task-executions/{latest(fe, 'a').id}?preview_token={answer['preview_token']}"
    assert tenant.client.put(url, apply_without, format="json").status_code == 200
    tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
    assert latest(fe, "c").output == {"total": 6}


# a → {b, c} → d: b keeps only a's parity, c reads a's n; d reads both.
DIAMOND = [
    {"name": "a", "type": "transform", "input": {"n": 1}},
    transform("b", "${{ tasks.a.output }}", "{odd: contains([`1`, `3`, `5`, `7`], n)}"),
    transform("c", "${{ tasks.a.output }}"),
    transform("e", "${{ tasks.b.output }}"),
    {
        "name": "d",
        "type": "transform",
        "input": {"b": "${{ tasks.b.output }}", "c": "${{ tasks.c.output }}"},
    },
]


def test_a_diamond_predicts_the_early_cutoff_of_a_task_whose_input_did_not_change(tenant) -> None:
    fe = start_execution(tenant, DIAMOND)
    b_before = latest(fe, "b")

    answer = dry_run(tenant, latest(fe, "a"), {"n": 3})  # still odd: b's output is the same

    assert answer["stale_tasks"] == ["b", "c", "e", "d"]
    predictions = answer["predictions"]
    assert list(predictions) == answer["stale_tasks"]  # dependency order
    assert predictions["b"] == {"action": "run", "input": {"n": 3}, "output": {"odd": True}}
    assert predictions["c"] == {"action": "run", "input": {"n": 3}, "output": {"n": 3}}
    assert predictions["e"] == {"action": "reuse", "input": {"odd": True}, "output": {"odd": True}}
    assert predictions["d"]["action"] == "run"
    assert predictions["d"]["output"] == {"b": {"odd": True}, "c": {"n": 3}}

    apply(tenant, latest(fe, "a"), {"n": 3}, answer["preview_token"])
    assert latest(fe, "e").reused_from_id is not None
    assert latest(fe, "b").task_execution_idx == b_before.task_execution_idx + 1
    assert latest(fe, "d").output == predictions["d"]["output"]


def test_a_python_task_makes_itself_and_everything_below_it_unknown(tenant) -> None:
    CALLS.clear()
    tasks = [
        {"name": "a", "type": "transform", "input": {"n": 1}},
        transform("pure", "${{ tasks.a.output }}"),
        {
            "name": "py",
            "type": "python",
            "input": {"up": "${{ tasks.a.output }}"},
            "config": {"callable": "tests.helpers.callables:counted"},
        },
        transform("below", "${{ tasks.py.output }}"),
        {
            "name": "join",
            "type": "transform",
            "input": {"p": "${{ tasks.pure.output }}", "q": "${{ tasks.below.output }}"},
        },
    ]
    fe = start_execution(tenant, tasks)
    ran = len(CALLS)

    answer = dry_run(tenant, latest(fe, "a"), {"n": 9})

    assert answer["predictions"] == {
        "pure": {"action": "run", "input": {"n": 9}, "output": {"n": 9}},
        "py": {"action": "unknown", "input": {"up": {"n": 9}}},
        "below": {"action": "unknown"},
        "join": {"action": "unknown"},
    }
    assert len(CALLS) == ran, "the python task did not run in the dry run"


def test_a_pure_task_that_would_fail_is_predicted_with_its_error(tenant) -> None:
    tasks = [
        {"name": "a", "type": "transform", "input": {"items": [1, 2]}},
        transform("b", "${{ tasks.a.output.items }}", "sum(@)"),
    ]
    fe = start_execution(tenant, tasks)
    assert latest(fe, "b").output == 3

    answer = dry_run(tenant, latest(fe, "a"), {"items": "not numbers"})

    prediction = answer["predictions"]["b"]
    assert prediction["action"] == "run"
    assert prediction["input"] == "not numbers"
    assert prediction["error"]["type"]
    assert "output" not in prediction


def test_the_preview_token_covers_the_flow_version_predictions_ran(tenant) -> None:
    fe = start_execution(tenant, CHAIN)
    answer = dry_run(tenant, latest(fe, "a"), {"n": 5})
    flow_execution = FlowExecution.objects.select_related("flow_version").get(pk=fe)
    pinned = flow_execution.flow_version
    other = FlowVersion.objects.create(
        organization_id=flow_execution.organization_id,
        flow_id=flow_execution.flow_id,
        version=pinned.version + 1,
        definition=pinned.definition,
        parsed=pinned.parsed,
    )
    FlowExecution.objects.filter(pk=fe).update(flow_version=other)

    body = tenant.client.get(f"/task-executions/{latest(fe, 'a').id}").json()
    body.update(output={"n": 5}, status="completed")
    query = f"?execute_flow=true&preview_token={answer['preview_token']}"
    response = tenant.client.put(
        f"/task-executions/{latest(fe, 'a').id}{query}", body, format="json"
    )

    assert response.status_code == 409, response.json()
    assert response.json()["error"]["code"] == "preview_outdated"


def _chain(size: int) -> list[dict]:
    return [{"name": "t0", "type": "transform", "input": {"n": 1}}] + [
        transform(f"t{i}", f"${{{{ tasks.t{i - 1}.output }}}}") for i in range(1, size)
    ]


def test_a_dry_run_with_predictions_takes_the_same_queries_for_10_and_100_tasks(tenant) -> None:
    counts = []
    for size in (10, 100):
        fe = start_execution(tenant, _chain(size))
        target = latest(fe, "t0")
        body = tenant.client.get(f"/task-executions/{target.id}").json()
        body.update(output={"n": 2}, status="completed")
        url = f"/task-executions/{target.id}?dry_run=true&execute_flow=true"
        with CaptureQueriesContext(connection) as queries:
            response = tenant.client.put(url, body, format="json")
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == size - 1
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_an_upgrade_dry_run_predicts_what_the_new_version_will_produce(tenant) -> None:
    """b's expression changes from v to v*0+3 (the same value for v = 3): b runs, c and d reuse
    (early cutoff); e, added, runs; side is untouched."""
    flow_id, fe = upgrade_chain_start(tenant, upgrade_chain())
    tasks = upgrade_chain("sum([v, `0`])")
    tasks.append({"name": "e", "type": "transform", "input": {"d": "${{ tasks.d.output }}"}})
    version = new_version(flow_id, tasks)
    url = f"/flow-executions/{fe}/upgrade?execute_flow=true"

    preview = tenant.client.post(f"{url}&dry_run=true", {"flow_version": version}, format="json")

    assert preview.status_code == 200, preview.json()
    answer = preview.json()
    assert answer["tasks_to_run"] == ["b", "c", "d", "e"]
    assert answer["predictions"] == {
        "b": {"action": "run", "input": {"v": 3}, "output": 3},
        "c": {"action": "reuse", "input": {"b": 3}, "output": {"b": 3}},
        "d": {"action": "reuse", "input": {"c": {"b": 3}}, "output": {"c": {"b": 3}}},
        "e": {"action": "run", "input": {"d": {"c": {"b": 3}}}, "output": {"d": {"c": {"b": 3}}}},
    }
    applied = tenant.client.post(
        f"{url}&preview_token={answer['preview_token']}", {"flow_version": version}, format="json"
    )
    assert applied.status_code == 200, applied.json()
    assert applied.json()["predictions"] == {}
    for name, prediction in answer["predictions"].items():
        current = latest(fe, name)
        assert (current.input, current.output) == (prediction["input"], prediction["output"])
        assert (current.reused_from_id is not None) == (prediction["action"] == "reuse")


# The property ---------------------------------------------------------------------------------


def _check_predictions(fe: str, model: Model, predictions: dict, key: tuple, context: str) -> None:
    """Every task downstream of the corrected one is predicted and known (a DAG of pure tasks);
    each prediction is what the correction produced: the current attempts' inputs and outputs
    (of a looped task: its iterations' inputs, in order, and its published output), and
    "reuse" exactly when early cutoff reused every one of them."""
    current = current_attempts(fe, model)
    outputs = published(fe, list(predictions))
    for name, prediction in predictions.items():
        assert prediction["action"] != "unknown", f"{name}: {prediction}\n{context}"
        members = sorted(
            (attempt for (task, _), attempt in current.items() if task == name),
            key=lambda a: -1 if a.iteration is None else a.iteration,
        )
        if name in model.looped:  # its iterations (none: an empty for_each)
            members = [m for m in members if m.iteration is not None]
        reused = bool(members) and all(m.reused_from_id is not None for m in members)
        assert prediction["action"] == ("reuse" if reused else "run"), (
            f"{name}: predicted {prediction['action']}\n{context}"
        )
        if name in model.looped:
            want_input: Any = [m.input for m in members]
            want_output = outputs[name][0]
        else:
            want_input, want_output = members[0].input, members[0].output
        got = json.dumps([prediction["input"], prediction["output"]], sort_keys=True)
        want = json.dumps([want_input, want_output], sort_keys=True)
        assert got == want, f"{name} after correcting {key}: predicted {got}, got {want}\n{context}"


corrections = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.booleans(),
        st.integers(0, 4),
        st.lists(st.integers(0, 4), max_size=MAX_ITEMS),
    ),
    min_size=1,
    max_size=3,
)


@settings(PROPERTY, max_examples=25)
@given(tasks=looped_dags(max_tasks=6), plan=corrections)
def test_predictions_of_random_pure_dags_are_what_the_correction_produces(
    tenant: Any, tasks: list, plan: list
) -> None:
    """Random DAGs of pure tasks (plain, for_each and until loops), corrected one key (a task
    or one iteration) at a time: the dry run's predictions, with execute_flow or of running
    the stale set afterwards (?only=stale), are the inputs, outputs and reuses the real
    correction gives."""
    _, fe = start_dag(tenant, tasks)
    model = Model(tasks)
    applied: list[str] = []
    for index, execute, value, items in plan:
        targets = model.targets()
        if not targets:
            return
        key = targets[index % len(targets)]
        task = model.by_name[key[0]]
        output = task.correction(value, items, model.now.keys[key][1])
        if model.exhausts(key, output):
            output = {"n": task.threshold}
        model.correct(key, output)
        applied.append(f"correct {key} to {json.dumps(output)} execute_flow={execute}")
        context = "\n".join([*(json.dumps(t.definition()) for t in tasks), *applied])
        attempt = current_attempts(fe, model)[key]
        answer = dry_run(tenant, attempt, output, execute)
        body = tenant.client.get(f"/task-executions/{attempt.id}").json()
        body.update(output=output, status="completed")
        query = f"?preview_token={answer['preview_token']}" + (
            "&execute_flow=true" if execute else ""
        )
        response = tenant.client.put(f"/task-executions/{attempt.id}{query}", body, format="json")
        assert response.status_code == 200, f"{response.json()}\n{context}"
        if not execute:
            tenant.client.post(f"/flow-executions/{fe}/execute?only=stale")
        _check_predictions(fe, model, answer["predictions"], key, context)


def test_predictions_leave_no_attempt_behind(tenant) -> None:
    fe = start_execution(tenant, DIAMOND)
    ids = {a.id for runs in attempts(fe).values() for a in runs}
    dry_run(tenant, latest(fe, "a"), {"n": 4})
    assert {a.id for runs in attempts(fe).values() for a in runs} == ids
    assert all(a.status == "completed" for a in latest_attempts(fe).values())
