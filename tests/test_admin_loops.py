"""Loops in the operators' admin (issue 17): iterations listed, filtered and shown; the DAG
counts a looped task's iterations by status; one iteration corrected through the admin form."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.dag_svg import COLOURS
from executions.models import Correction, TaskExecution
from outputs.models import TaskOutput
from tests.helpers.callables import allow_test_callables  # noqa: F401 - autouse fixture
from tests.helpers.corrections import correct_as_key
from tests.helpers.flows import start_execution

pytestmark = pytest.mark.django_db(transaction=True)

CHANGE = "/admin/executions/taskexecution/{}/change/"
LIST = "/admin/executions/taskexecution/"
SVG = "{http://www.w3.org/2000/svg}"
TIMES = "\u00d7"  # the multiplication sign a looped node's count starts with


def split_extract(*downstream: dict[str, Any]) -> list[dict[str, Any]]:
    """split → extract, a for_each over split's pages (each iteration's output: its page)."""
    return [
        {"name": "split", "type": "transform", "input": {"pages": "${{ flow.input.pages }}"}},
        {
            "name": "extract",
            "type": "transform",
            "for_each": "${{ tasks.split.output.pages }}",
            "input": {"page": "${{ loop.item }}"},
        },
        *downstream,
    ]


CLASSIFY = {
    "name": "classify",
    "type": "transform",
    "for_each": "${{ tasks.extract.output }}",
    "input": {"kind": "${{ loop.item.page.kind }}"},
}


def pages(count: int) -> dict[str, Any]:
    return {"pages": [{"kind": "text", "no": i} for i in range(count)]}


def iteration(fe: str, task: str, number: int) -> TaskExecution:
    """The current (highest idx) attempt of iteration `number` of `task`."""
    return (
        TaskExecution.objects.filter(flow_execution_id=fe, task_name=task, iteration=number)
        .order_by("task_execution_idx")
        .last()
    )


def published(fe: str, task: str) -> Any:
    """The task's current output: its newest TaskOutput row."""
    return (
        TaskOutput.objects.filter(flow_execution_id=fe, task_name=task)
        .oldest_to_current()
        .last()
        .output
    )


def save(client: Any, attempt: TaskExecution, **fields: Any) -> Any:
    page = client.get(CHANGE.format(attempt.id))
    assert page.status_code == 200
    lock = re.search(r'name="lock" value="([^"]+)"', page.content.decode()).group(1)
    data = {"lock": lock, "status": attempt.status, "output": "null", "error": "null"}
    return client.post(CHANGE.format(attempt.id), {**data, **fields, "_save": "Save"}, follow=True)


def readonly(page: str, field: str) -> str:
    """What the change form shows, read-only, for `field`."""
    found = re.search(rf'field-{field}\b.*?<div class="readonly">(.*?)</div>', page, re.DOTALL)
    assert found, field
    return found.group(1)


def dag_nodes(client: Any, fe: str) -> dict[str, Any]:
    page = client.get(f"/admin/executions/flowexecution/{fe}/change/").content.decode()
    begin = page.index('<svg class="flow-dag"')
    svg = page[begin : page.index("</svg>", begin) + len("</svg>")]
    root = ET.fromstring(svg)  # noqa: S314 - our own page; checks it is well-formed XML
    return {g.get("data-task"): g for g in root.iter(f"{SVG}g") if g.get("class") == "dag-node"}


# --- Iterations in the lists and on the change form -----------------------------------------


def test_the_change_list_shows_iterations_after_the_idx_and_filters_by_them(
    client, tenant, superuser
):
    fe = start_execution(tenant, split_extract(), pages(3))
    page = client.get(LIST).content.decode()
    columns = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', page)
    assert columns[columns.index("task_execution_idx") + 1] == "iteration"

    def listed(query: str) -> list[tuple[str, int | None]]:
        response = client.get(LIST + query)
        assert response.status_code == 200
        rows = response.context["cl"].result_list
        return sorted(((a.task_name, a.iteration) for a in rows), key=repr)

    assert listed("?iteration=any") == [("extract", 0), ("extract", 1), ("extract", 2)]
    assert listed("?iteration=none") == [("split", None)]
    assert listed("?iteration=2") == [("extract", 2)]
    assert listed(f"?iteration=2&flow_execution__id__exact={fe}") == [("extract", 2)]
    assert "Iteration 2" in client.get(LIST + "?iteration=2").content.decode()
    assert "Has an iteration" in page
    for bad in ("x", "-1", "01", "9" * 12):
        response = client.get(LIST + f"?iteration={bad}")
        assert response.status_code == 302, bad  # admin's "invalid filter" redirect, not a 500
        assert response["Location"].endswith("?e=1")


def test_the_change_form_shows_the_iteration_read_only(client, tenant, superuser):
    fe = start_execution(tenant, split_extract(), pages(3))
    page = client.get(CHANGE.format(iteration(fe, "extract", 2).id)).content.decode()
    assert readonly(page, "iteration") == "2"
    assert 'name="iteration"' not in page
    page = client.get(CHANGE.format(TaskExecution.objects.get(task_name="split").id))
    assert readonly(page.content.decode(), "iteration") == "-"  # a task without a loop


def test_the_flow_execution_page_lists_a_looped_tasks_iterations(client, tenant, superuser):
    fe = start_execution(tenant, split_extract(), pages(3))
    response = client.get(f"/admin/executions/flowexecution/{fe}/change/")
    page = response.content.decode()
    cells = re.findall(r'<td class="attempt-iteration">([^<]*)</td>', page)
    assert cells == ["\u2013", "2", "1", "0"]  # split, then extract's iterations, newest first
    assert "2 other attempts of extract (its other iterations, and earlier runs)" in page


# --- The DAG picture ------------------------------------------------------------------------


def tolerant() -> list[dict[str, Any]]:
    """A for_each whose second item fails (abs of a string), tolerated."""
    return [
        {
            "name": "each",
            "type": "transform",
            "config": {"expression": "abs(v)"},
            "for_each": [1, "x", 3],
            "tolerate_failures": True,
            "input": {"v": "${{ loop.item }}"},
        },
        {"name": "sum", "type": "transform", "input": {"all": "${{ tasks.each.output }}"}},
    ]


def test_the_dag_counts_a_looped_tasks_iterations_by_status(client, tenant, superuser):
    fe = start_execution(tenant, tolerant())
    nodes = dag_nodes(client, fe)
    each, total = nodes["each"], nodes["sum"]
    assert each.get("data-status") == "completed"  # what they add up to: failure tolerated
    assert each.get("data-iterations") == f"{TIMES}3 · 2 completed · 1 failed"
    [line] = [t.text for t in each.iter(f"{SVG}text") if t.get("class") == "dag-iterations"]
    assert line == f"{TIMES}3 · 2 completed · 1 failed"
    assert f"{TIMES}3 · 2 completed · 1 failed" in each.find(f"{SVG}title").text
    assert total.get("data-iterations") is None  # a task without a loop: as before
    assert len(list(total.iter(f"{SVG}text"))) == 2


def test_the_dag_colours_a_looped_task_by_its_aggregate_status(client, tenant, superuser):
    fe = start_execution(tenant, split_extract(), pages(3))
    split = TaskExecution.objects.get(flow_execution_id=fe, task_name="split")
    assert correct_as_key(tenant, split, pages(2)).status_code == 200  # extract goes stale
    nodes = dag_nodes(client, fe)
    assert nodes["extract"].get("data-status") == "stale"
    assert nodes["extract"].find(f"{SVG}rect").get("fill") == COLOURS["stale"][0]
    assert nodes["extract"].get("data-iterations") == f"{TIMES}3 · 3 stale"
    assert nodes["split"].get("data-iterations") is None


def test_the_flow_execution_page_reads_as_many_rows_whatever_the_iterations(
    client, tenant, superuser
):
    small = start_execution(tenant, split_extract(), pages(2))
    large = start_execution(tenant, split_extract(), pages(12))
    counts = []
    for fe in (small, large, small, large):  # the second round: caches as warm for both
        with CaptureQueriesContext(connection) as queries:
            page = client.get(f"/admin/executions/flowexecution/{fe}/change/")
        assert page.status_code == 200
        counts.append(len(queries))
    assert counts[2] == counts[3], counts
    assert dag_nodes(client, large)["extract"].get("data-iterations") == f"{TIMES}12 · 12 completed"


# --- Correcting one iteration in admin ------------------------------------------------------


def test_an_admin_correction_of_one_iteration_changes_only_its_slot(client, tenant, superuser):
    fe = start_execution(tenant, split_extract(), pages(4))
    before = published(fe, "extract")
    assert before == [{"page": {"kind": "text", "no": i}} for i in range(4)]
    attempt = iteration(fe, "extract", 2)
    response = save(client, attempt, status="completed", output='{"page": {"kind": "table"}}')
    assert response.status_code == 200
    assert response.redirect_chain, response.context["errors"]  # saved: redirected
    assert "Corrected extract (iteration 2): 0 task(s) marked stale" in response.content.decode()
    after = published(fe, "extract")
    assert after[2] == {"page": {"kind": "table"}}
    assert after[:2] + after[3:] == before[:2] + before[3:]
    assert iteration(fe, "extract", 2).output == {"page": {"kind": "table"}}
    [record] = Correction.objects.filter(flow_execution_id=fe)
    assert (record.iteration, record.source, record.task_execution_id) == (2, "admin", attempt.id)


def test_an_iteration_corrected_in_admin_reruns_that_item_downstream(client, tenant, superuser):
    fe = start_execution(tenant, split_extract(CLASSIFY), pages(3))
    response = save(
        client,
        iteration(fe, "extract", 1),
        status="completed",
        output='{"page": {"kind": "image"}}',
        execute_flow="on",
    )
    assert response.redirect_chain, response.context["errors"]
    assert published(fe, "classify") == [{"kind": "text"}, {"kind": "image"}, {"kind": "text"}]
    rerun = [iteration(fe, "classify", i) for i in range(3)]
    assert [a.reused_from_id is None for a in rerun] == [False, True, False]
    assert readonly(client.get(CHANGE.format(rerun[1].id)).content.decode(), "iteration") == "1"

    [record] = Correction.objects.filter(flow_execution_id=fe)
    assert (record.iteration, record.stale_iterations) == (1, {"classify": [0, 1, 2]})
    page = client.get("/admin/executions/correction/").content.decode()
    assert '<td class="field-task">extract[1]</td>' in page  # the task, then its iteration
    page = client.get(f"/admin/executions/correction/{record.id}/change/").content.decode()
    assert readonly(page, "iteration") == "1"
    assert readonly(page, "stale_iterations") == "{&quot;classify&quot;: [0, 1, 2]}"
    assert 'name="stale_iterations"' not in page


def test_a_stale_iteration_names_the_corrected_iteration(client, tenant, superuser):
    fe = start_execution(tenant, split_extract(CLASSIFY), pages(2))
    assert correct_as_key(tenant, iteration(fe, "extract", 0), {"page": {}}).status_code == 200
    page = client.get(CHANGE.format(iteration(fe, "classify", 1).id)).content.decode()
    assert "correction of extract (iteration 0) by" in readonly(page, "stale_cause")
