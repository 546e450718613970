"""The operator console in admin (issue 19): a run's page that reads at a glance (its flow's
name, the DAG with attempts, stale causes and reuse, the tasks grouped by task, the timeline
of corrections with their JSON diffs), history pages with field diffs and reasons, the
corrections list and its filters, the product's name and favicon, and pages that cost the same
number of queries at 10 and at 1,000 attempts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.admin_console import CORRECTIONS_PER_PAGE, PER_TASK
from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.admin_history import HISTORY_PER_PAGE
from flowplatform.jsondiff import Change, json_diff
from flowplatform.tenancy.models import UserIdentity
from tests.helpers.callables import allow_test_callables  # noqa: F401 - autouse fixture
from tests.helpers.console import LOSSY_CHAIN, pile_attempts, pile_corrections, pile_history
from tests.helpers.corrections import correct_as_key
from tests.helpers.flows import latest, start_execution

pytestmark = pytest.mark.django_db(transaction=True)

SVG = "{http://www.w3.org/2000/svg}"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def run_url(fe: Any) -> str:
    return f"/admin/executions/flowexecution/{fe}/change/"


def page_of(client: Any, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def dag_nodes(html: str) -> dict[str, tuple[Any, str | None]]:
    """task → (its <g class="dag-node">, the link around it)."""
    begin = html.index('<svg class="flow-dag"')
    root = ET.fromstring(html[begin : html.index("</svg>", begin) + 6])  # noqa: S314 - our page
    nodes: dict[str, tuple[Any, str | None]] = {}
    for link in root.iter(f"{SVG}a"):
        for g in link.iter(f"{SVG}g"):
            nodes[g.get("data-task")] = (g, link.get("href"))
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "dag-node" and g.get("data-task") not in nodes:
            nodes[g.get("data-task")] = (g, None)
    return nodes


def section(html: str, element_id: str) -> str:
    begin = html.index(f'id="{element_id}"')
    return html[begin : html.index("</section>", begin)]


def corrected_y(tenant: Any, fe: str, y: int, query: str = "?execute_flow=true") -> None:
    """Task a's output corrected through the API to {"x": 1, "y": y}."""
    response = correct_as_key(tenant, latest(fe, "a"), {"x": 1, "y": y}, query, reason="wrong y")
    assert response.status_code == 200, response.json()


# --- The run's page ---------------------------------------------------------------------------


def test_the_run_page_is_titled_by_its_flow_and_labels_nothing_by_a_uuid(client, tenant, superuser):
    fe = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    html = page_of(client, run_url(fe.pk))
    h1 = re.search(r"<h1>(.*?)</h1>", html, re.S).group(1)
    assert h1 == f"{fe.flow.name} · version 1"
    title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
    assert title.endswith("| flowplatform")
    assert fe.flow.name in title
    labels = re.findall(r"<(?:h1|h2|h3|label|th|summary|caption)[^>]*>(.*?)</", html, re.S)
    texts = [re.sub(r"<[^>]+>", "", label) for label in labels]  # what the reader sees
    assert texts
    assert not [text for text in texts if UUID.search(text)]
    listing = page_of(client, "/admin/executions/flowexecution/")
    assert f">{fe}</a>" in listing  # the list names it by flow, start and short id
    assert not UUID.search(re.sub(r"<[^>]+>", "", listing))  # nor any other, as text
    assert '<td class="field-version">v1</td>' in listing


def test_the_dag_shows_attempts_stale_causes_and_links_each_task_to_its_attempts(
    client, tenant, superuser
):
    fe = start_execution(tenant, LOSSY_CHAIN)
    corrected_y(tenant, fe, 2, query="")  # b and c only marked stale
    nodes = dag_nodes(page_of(client, run_url(fe)))
    assert {name: g.get("data-status") for name, (g, _) in nodes.items()} == {
        "a": "completed",
        "b": "stale",
        "c": "stale",
    }
    b, link = nodes["b"]
    assert b.get("data-attempts") == "1"
    assert b.get("data-stale-cause") == "correction of a"
    assert "cause: correction of a" in b.find(f"{SVG}title").text
    assert [t.text for t in b.iter(f"{SVG}text")][-1] == "cause: correction of a"
    assert nodes["c"][0].get("data-stale-cause") == "correction of a"

    url = urlsplit(link)  # the task execution list, filtered to this run and task
    assert url.path == "/admin/executions/taskexecution/"
    assert parse_qs(url.query) == {"flow_execution": [fe], "task_name": ["b"]}
    listing = page_of(client, link)
    assert "1 task execution" in listing
    assert "0 task executions" not in listing


def test_a_reused_result_is_badged_on_its_node_and_in_the_task_list(client, tenant, superuser):
    fe = start_execution(tenant, LOSSY_CHAIN)
    corrected_y(tenant, fe, 2)  # b runs again with the same output: c reuses its result
    c = latest(fe, "c")
    assert c.reused_from is not None
    html = page_of(client, run_url(fe))
    node, _ = dag_nodes(html)["c"]
    assert (node.get("data-attempts"), node.get("data-reused-from")) == ("2", "0")
    assert "♻ reused #0" in [t.text for t in node.iter(f"{SVG}text")]
    assert dag_nodes(html)["a"][0].get("data-reused-from") == ""
    tasks = section(html, "console-tasks")
    group = tasks[tasks.index('data-task="c"') :]
    assert 'class="reused-badge"' in group.split("</tbody>")[0]


def test_the_task_list_shows_the_current_attempt_first_and_folds_the_older_ones(
    client, tenant, superuser
):
    fe = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    current = pile_attempts(fe, "b", PER_TASK + 3)
    tasks = section(page_of(client, run_url(fe.pk)), "console-tasks")
    assert re.findall(r'<tbody class="console-task" data-task="(\w+)"', tasks) == ["a", "b", "c"]
    b = tasks[tasks.index('data-task="b"') :].split('<tbody class="console-task"')[0]
    current_row, folded = b.split("<details>")
    assert f"#{current.task_execution_idx}<" in current_row
    assert "completed" in current_row
    assert f"{PER_TASK + 2} earlier attempts of b" in folded
    shown = re.findall(r'<th scope="row"><a href="[^"]+">#(\d+)</a>', folded)
    assert shown == [str(current.task_execution_idx - i) for i in range(1, PER_TASK)]
    assert f"All {PER_TASK + 3} attempts of b" in folded
    a = tasks[tasks.index('data-task="a"') :].split('<tbody class="console-task"')[0]
    assert "<details>" not in a  # one attempt: nothing to fold


def test_the_timeline_shows_who_when_why_and_a_json_diff_of_each_correction(
    client, tenant, superuser
):
    fe = start_execution(tenant, LOSSY_CHAIN)
    corrected_y(tenant, fe, 2)
    timeline = section(page_of(client, run_url(fe)), "console-corrections")
    [entry] = re.findall(r'<li class="timeline-entry".*?</li>\s*</ol>', timeline, re.S)
    assert tenant.actor in entry
    assert "wrong y" in entry
    assert re.search(r'<dd class="stale-tasks">b, c</dd>', entry)
    rows = re.findall(
        r'<tr class="json-diff-(\w+)">.*?<code>([^<]+)</code></td><td>(.*?)</td>'
        r"<td>(.*?)</td></tr>",
        entry,
        re.S,
    )
    assert rows == [("changed", "$.output.y", "<code>1</code>", "<code>2</code>")]


def test_the_timeline_is_paginated_newest_first(client, tenant, superuser):
    fe = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    pile_corrections(fe, CORRECTIONS_PER_PAGE + 2)
    first = section(page_of(client, run_url(fe.pk)), "console-corrections")
    assert first.count('class="timeline-entry"') == CORRECTIONS_PER_PAGE
    assert f"{CORRECTIONS_PER_PAGE + 2} corrections" in first
    second = section(page_of(client, run_url(fe.pk) + "?corrections_page=2"), "console-corrections")
    assert second.count('class="timeline-entry"') == 2
    newest = Correction.objects.filter(flow_execution=fe).order_by("-created_at", "-id")
    assert f'id="correction-{newest[0].pk}"' in first
    assert f'id="correction-{newest[CORRECTIONS_PER_PAGE].pk}"' in second


def test_an_upgrade_in_the_timeline_lists_the_tasks_it_changed(client, tenant, superuser):
    fe = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    Correction.objects.create(
        organization=fe.organization,
        flow_execution=fe,
        operation=Correction.Operation.UPGRADE,
        modified_by="ops",
        before={"version": 1},
        after={"version": 2},
        changes={"changed": {"b": ["config"]}, "added": ["d"], "removed": []},
    )
    timeline = section(page_of(client, run_url(fe.pk)), "console-corrections")
    assert "Changed: <code>b</code> (config)" in timeline
    assert "Added: <code>d</code>" in timeline
    assert "<code>$.version</code>" in timeline


# --- History pages ----------------------------------------------------------------------------


def test_history_shows_each_rows_field_diffs_and_its_reason(client, tenant, superuser):
    fe = start_execution(tenant, LOSSY_CHAIN)
    corrected_y(tenant, fe, 2)
    a = latest(fe, "a")
    html = page_of(client, f"/admin/executions/taskexecution/{a.id}/history/")
    rows = re.findall(
        r'<tr class="history-row">(.*?)</tr>\s*(?=<tr class="history-row">|</tbody>)', html, re.S
    )
    assert len(rows) == a.history.count() == 2
    newest, first = rows
    assert '<td class="history-reason">wrong y</td>' in newest
    assert re.search(r'data-field="output".*<code>\$\.y</code>', newest, re.S)
    assert "First recorded state" in first


def test_history_pages_compare_a_pages_last_row_with_the_next_pages_first(
    client, tenant, superuser
):
    fe = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    a = TaskExecution.objects.get(flow_execution=fe, task_name="a")
    pile_history(a, HISTORY_PER_PAGE + 5)
    url = f"/admin/executions/taskexecution/{a.id}/history/"
    first = page_of(client, url)
    assert first.count('class="history-row"') == HISTORY_PER_PAGE
    assert "First recorded state" not in first  # its last row compared with page 2's first
    assert f"reason {HISTORY_PER_PAGE + 4}" in first
    last = page_of(client, f"{url}?p=2")
    assert last.count('class="history-row"') == a.history.count() - HISTORY_PER_PAGE
    assert "First recorded state" in last


# --- The corrections list ----------------------------------------------------------------------


def test_the_corrections_list_filters_by_flow_task_actor_date_and_operation(
    client, tenant, superuser
):
    one = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    two = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    pile_corrections(one, 2, modified_by="alice")
    pile_corrections(two, 3, modified_by="bob")
    Correction.objects.filter(flow_execution=two).update(task_name="b")
    Correction.objects.create(
        organization=two.organization,
        flow_execution=two,
        operation=Correction.Operation.UPGRADE,
        modified_by="bob",
    )
    listing = "/admin/executions/correction/"

    def count(query: str) -> int:
        html = page_of(client, f"{listing}?{query}")
        return html.count('<th class="field-when')

    html = page_of(client, listing)
    for title in ("flow", "task", "actor", "operation", "created at"):
        assert f'<details data-filter-title="{title}"' in html, title
    assert count("") == 6
    assert count(f"flow={one.flow_id}") == 2
    assert count("task_name=b") == 3
    assert count("modified_by=bob") == 4
    assert count("operation=upgrade") == 1
    dates = html[html.index('<details data-filter-title="created at"') :].split("</details>")[0]
    today = re.search(r'<a href="\?([^"]+)">Today</a>', dates).group(1).replace("&amp;", "&")
    assert count(today) == 6
    assert count("created_at__year=2000") == 0  # the date hierarchy's
    assert count(f"flow_execution={two.pk}") == 4
    assert count("q=bob") == 4
    # An admin user is searched by the name the list shows for them, not only their id.
    identity, _ = UserIdentity.objects.get_or_create(user=superuser)
    Correction.objects.filter(flow_execution=one).update(modified_by=str(identity.uuid))
    assert count(f"q={superuser.username}") == 2
    assert count(f"q={str(identity.uuid)[:8]}") == 2
    listed = page_of(client, listing)  # newest first: two's corrections came after one's
    assert listed.index(f" · {str(two.pk)[:8]}</a>") < listed.index(f" · {str(one.pk)[:8]}</a>")


# --- The whole admin ---------------------------------------------------------------------------


def test_every_admin_page_names_the_product_and_has_a_favicon(client, superuser):
    html = page_of(client, "/admin/")
    assert re.search(r'<div id="site-name"><a [^>]*>.*flowplatform</a>', html, re.S)
    assert re.search(r"<title>[^<]*\| flowplatform</title>", html)
    icon = re.search(r'<link rel="icon" href="/static/([^"]+)" type="image/svg\+xml">', html)
    assert icon
    assert finders.find(icon.group(1))
    stylesheet = re.search(r'<link rel="stylesheet" href="/static/(flowplatform/[^"]+)">', html)
    assert stylesheet
    assert finders.find(stylesheet.group(1))


def test_json_diff_walks_objects_and_arrays_path_by_path():
    before = {"pages": 3, "tags": ["a", "b"], "meta": {"by": "x"}, "weird key": 1}
    after = {"pages": 4, "tags": ["a"], "meta": {"by": "x", "at": 1}, "weird key": "1"}
    assert json_diff(before, after) == [
        Change("changed", "$.pages", 3, 4),
        Change("removed", "$.tags[1]", old="b"),
        Change("added", "$.meta.at", new=1),
        Change("changed", '$["weird key"]', 1, "1"),
    ]
    assert json_diff({"a": [1]}, {"a": [1]}) == []
    assert json_diff(None, {"a": 1}) == [Change("changed", "$", None, {"a": 1})]
    assert json_diff(True, 1) == [Change("changed", "$", True, 1)]  # equal in Python, not JSON


# --- Constant queries -------------------------------------------------------------------------


def queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


def run_with(tenant: Any, attempts: int) -> FlowExecution:
    """A run whose task b has `attempts` attempts, with as many corrections, and whose current
    b has as many history rows."""
    fe = FlowExecution.objects.get(pk=start_execution(tenant, LOSSY_CHAIN))
    current = pile_attempts(fe, "b", attempts)
    pile_corrections(fe, attempts)
    pile_history(current, attempts)
    return fe


CONSOLE_PAGES = {
    "run": lambda fe, b: run_url(fe.pk),
    "run, corrections page 2": lambda fe, b: run_url(fe.pk) + "?corrections_page=2",
    "attempts of b": lambda fe, b: (
        f"/admin/executions/taskexecution/?flow_execution={fe.pk}&task_name=b"
    ),
    "corrections": lambda fe, b: f"/admin/executions/correction/?flow_execution={fe.pk}",
    "history of b": lambda fe, b: f"/admin/executions/taskexecution/{b.pk}/history/",
    "history of b, page 2": lambda fe, b: f"/admin/executions/taskexecution/{b.pk}/history/?p=2",
}


@pytest.mark.parametrize("name", CONSOLE_PAGES)
def test_console_pages_cost_the_same_queries_at_10_and_1000_attempts(
    client, tenant, superuser, name
):
    url = CONSOLE_PAGES[name]
    runs = [run_with(tenant, n) for n in (10, 1000)]
    bs = [latest(fe.pk, "b") for fe in runs]
    for fe, b in zip(runs, bs, strict=True):  # warm: content types, parsed definitions
        queries(client, url(fe, b))
    small, large = (queries(client, url(fe, b)) for fe, b in zip(runs, bs, strict=True))
    print(f"{name}: {small} queries at 10 attempts, {large} at 1,000")  # shown with -s
    assert small == large
