"""A flow execution's task_outputs_summary follows its task outputs after every save and delete."""

from __future__ import annotations

import pytest

from executions.models import FlowExecution

pytestmark = pytest.mark.django_db


def summary_of(fe: FlowExecution) -> dict:
    fe.refresh_from_db()
    return fe.task_outputs_summary


def post_output(tenant, fe, task_name: str, summary: dict, status: str = "completed") -> dict:
    response = tenant.client.post(
        "/task-outputs",
        {
            "flow_execution_id": str(fe.id),
            "organization_id": str(tenant.org.id),
            "task_name": task_name,
            "summary": summary,
            "status": status,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_summary_lists_each_tasks_newest_output_and_counts_statuses(tenant):
    fe = tenant.flow_execution()
    post_output(tenant, fe, "extract", {"pages": 3})
    post_output(tenant, fe, "review", {"approved": False}, status="failed")
    post_output(tenant, fe, "extract", {"pages": 10})
    assert summary_of(fe) == {
        "tasks": {"extract": {"pages": 10}, "review": {"approved": False}},
        "status_counts": {"completed": 1, "failed": 1},
    }


def test_updating_an_output_recomputes_the_summary(tenant):
    fe = tenant.flow_execution()
    output = post_output(tenant, fe, "extract", {"pages": 3})
    output["summary"] = {"pages": 4}
    assert (
        tenant.client.put(f"/task-outputs/{output['id']}", output, format="json").status_code == 200
    )
    assert summary_of(fe)["tasks"] == {"extract": {"pages": 4}}


def test_deleting_the_newest_output_makes_the_previous_one_current(tenant):
    fe = tenant.flow_execution()
    post_output(tenant, fe, "extract", {"pages": 3})
    newest = post_output(tenant, fe, "extract", {"pages": 10})
    assert tenant.client.delete(f"/task-outputs/{newest['id']}").status_code == 204
    assert summary_of(fe)["tasks"] == {"extract": {"pages": 3}}


def test_deleting_the_only_output_empties_the_summary(tenant):
    fe = tenant.flow_execution()
    only = post_output(tenant, fe, "extract", {"pages": 3})
    tenant.client.delete(f"/task-outputs/{only['id']}")
    assert summary_of(fe) == {"tasks": {}, "status_counts": {}}


def test_hard_delete_of_an_output_row_also_recomputes(tenant):
    fe = tenant.flow_execution()
    post_output(tenant, fe, "extract", {"pages": 3})
    fe.task_outputs.get().delete()
    assert summary_of(fe) == {"tasks": {}, "status_counts": {}}


def test_summaries_of_other_flow_executions_are_untouched(tenant):
    fe, other = tenant.flow_execution(), tenant.flow_execution()
    post_output(tenant, fe, "extract", {"pages": 3})
    assert summary_of(other) == {}


def test_summary_recompute_is_a_bounded_number_of_queries(tenant, django_assert_max_num_queries):
    from outputs.summary import recompute_task_outputs_summary

    fe = tenant.flow_execution()
    for index in range(30):
        tenant.task_output(fe, task_name=f"task-{index}", summary={"n": index})
    with django_assert_max_num_queries(3):  # lock the flow execution, read, write
        summary = recompute_task_outputs_summary(fe.id)
    assert len(summary["tasks"]) == 30
