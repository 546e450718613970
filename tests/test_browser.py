"""The admin in a real browser (issue 6): log in, see a flow execution's DAG, correct a task's
output with "execute flow" ticked, and check that exactly its dependents ran again; upgrade a
flow execution to a new version of its flow (form, preview, confirm).

Debian's chromium, headless, driven by Playwright (see tests/helpers/browser.py). Screenshots
go to the test's tmp dir. The admin runs on pytest-django's live server; jobs run in-process,
so a save in the browser has re-executed the flow when its response arrives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from executions.models import Correction, FlowExecution, TaskExecution
from executions.services import start_flow_execution
from flows.services import update_flow
from tests.helpers.browser import (
    create_operator,
    logged_in_page,
    skip_module_without_chromium,
)
from tests.helpers.tenants import Tenant

pytestmark = pytest.mark.django_db(transaction=True)
skip_module_without_chromium()

# fetch → enrich → report: each reads its upstream task's whole output.
CHAIN = """\
tasks:
  - name: fetch
    type: transform
    input: {n: "${{ flow.input.n }}"}
  - name: enrich
    type: transform
    input: {from_fetch: "${{ tasks.fetch.output }}"}
  - name: report
    type: transform
    input: {from_enrich: "${{ tasks.enrich.output }}"}
"""
TASKS = ["fetch", "enrich", "report"]


@pytest.fixture
def operator(django_user_model: Any, settings: Any) -> Any:
    return create_operator(django_user_model, settings)


@pytest.fixture
def flow_execution() -> FlowExecution:
    """A completed run of the chain (the embedded backend runs it before start returns)."""
    tenant = Tenant("acme")
    flow = tenant.flow(name="chain", definition=CHAIN)
    fe = start_flow_execution(tenant.org, flow_id=flow.id, input={"n": 1}, actor="system")
    assert fe.status == FlowExecution.Status.COMPLETED
    return fe


@pytest.fixture
def page(
    django_db_setup: None, live_server: Any, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Page]:
    """A logged-in admin page (tests/helpers/browser.py)."""
    with logged_in_page(live_server.url, monkeypatch) as page:
        yield page


def fe_url(base_url: str, fe: FlowExecution) -> str:
    return f"{base_url}/admin/executions/flowexecution/{fe.id}/change/"


def attempts(fe: FlowExecution, task_name: str) -> list[TaskExecution]:
    return list(
        TaskExecution.objects.filter(flow_execution=fe, task_name=task_name).order_by(
            "task_execution_idx"
        )
    )


def shot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # else admin's sticky sidebar lands mid-picture
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 0
    print(f"screenshot: {path}")  # shown with -s
    return path


def test_correct_a_task_in_the_admin_reruns_its_dependents(
    page: Page, live_server: Any, flow_execution: FlowExecution, tmp_path: Path
) -> None:
    fe = flow_execution
    fetch = attempts(fe, "fetch")[-1]

    # The flow execution page draws the DAG, one node per task, all completed.
    response = page.goto(fe_url(live_server.url, fe))
    assert response is not None
    assert response.status == 200
    dag = page.locator("svg.flow-dag")
    expect(dag).to_be_visible()
    nodes = dag.locator("g.dag-node")
    expect(nodes).to_have_count(3)
    for name in TASKS:
        expect(dag.locator(f'g.dag-node[data-task="{name}"]')).to_have_attribute(
            "data-status", "completed"
        )
    shot(page, tmp_path, "dag-before")

    # A node links to its task's attempts; the list links to each.
    dag.locator('g.dag-node[data-task="fetch"]').click()
    expect(page).to_have_url(re.compile(r"/admin/executions/taskexecution/\?.*task_name=fetch"))
    page.locator("#result_list tbody tr a").first.click()
    expect(page).to_have_url(
        re.compile(rf"/admin/executions/taskexecution/{fetch.id}/change/(\?.*)?$")
    )
    output = page.locator('textarea[name="output"]')
    expect(output).to_be_visible()
    assert json.loads(output.input_value()) == {"n": 1}
    expect(page.locator('select[name="status"]')).to_have_value("completed")
    expect(page.locator('textarea[name="error"]')).to_be_visible()

    # The form says what a save would make stale: fetch's two dependents.
    preview = page.locator("#correction-preview")
    expect(preview).to_contain_text("2 task(s) downstream would be marked stale")
    expect(preview.locator("li")).to_have_text([re.compile(r"^enrich\b"), re.compile(r"^report\b")])

    output.fill(json.dumps({"n": 42}))
    page.locator('input[name="execute_flow"]').check()
    page.locator('textarea[name="reason"]').fill("fetched the wrong n")
    shot(page, tmp_path, "task-execution-form")

    with page.expect_navigation():
        page.locator('input[name="_save"]').click()
    refused = page.locator(".errornote, ul.errorlist, ul.messagelist li.error")
    assert refused.count() == 0, f"the admin refused the correction: {refused.all_inner_texts()}"
    expect(page.locator("ul.messagelist")).to_contain_text(
        "Corrected fetch: 2 task(s) marked stale (enrich, report); started enrich"
    )

    # Exactly the dependents ran again, from the corrected output; the old attempts are history.
    fetch_attempts = attempts(fe, "fetch")
    assert [a.task_execution_idx for a in fetch_attempts] == [0]
    assert fetch_attempts[0].output == {"n": 42}
    assert fetch_attempts[0].status == TaskExecution.Status.COMPLETED
    expected_inputs = {
        "enrich": {"from_fetch": {"n": 42}},
        "report": {"from_enrich": {"from_fetch": {"n": 42}}},
    }
    for name, expected_input in expected_inputs.items():
        old, new = attempts(fe, name)
        assert (old.task_execution_idx, old.status) == (0, TaskExecution.Status.STALE)
        assert (new.task_execution_idx, new.status) == (1, TaskExecution.Status.COMPLETED)
        assert new.input == expected_input
        assert new.output == expected_input
    fe.refresh_from_db()
    assert fe.status == FlowExecution.Status.COMPLETED
    [correction] = Correction.objects.filter(flow_execution=fe)
    assert (correction.source, correction.reason, correction.execute_flow) == (
        Correction.Source.ADMIN,
        "fetched the wrong n",
        True,
    )
    assert correction.stale_tasks == ["enrich", "report"]

    # The DAG shows the new state.
    page.goto(fe_url(live_server.url, fe))
    for name in TASKS:
        expect(dag.locator(f'g.dag-node[data-task="{name}"]')).to_have_attribute(
            "data-status", "completed"
        )
    shot(page, tmp_path, "dag-after")


def test_upgrade_a_flow_execution_in_the_admin_previews_then_reruns_what_changed(
    page: Page, live_server: Any, flow_execution: FlowExecution, tmp_path: Path
) -> None:
    fe = flow_execution
    update_flow(fe.flow, actor="system", definition=CHAIN.replace("n: ", "m: "))  # fetch's input
    page.goto(fe_url(live_server.url, fe))
    with page.expect_navigation():
        page.locator("#upgrade-link").click()
    expect(page.locator('select[name="to_version"]')).to_have_value("2")
    page.locator('input[name="execute_flow"]').check()
    page.locator('textarea[name="reason"]').fill("fetch reads m")
    with page.expect_navigation():
        page.locator('input[name="_preview"]').click()
    preview = page.locator("#upgrade-preview")
    expect(preview.locator("#upgrade-changed")).to_contain_text("fetch: input")
    expect(preview.locator("#upgrade-stale")).to_have_text("fetch, enrich, report")
    shot(page, tmp_path, "upgrade-preview")
    with page.expect_navigation():
        page.locator('input[name="_confirm"]').click()
    expect(page.locator("ul.messagelist")).to_contain_text(
        "Upgraded from version 1 to 2: 3 task(s) marked stale (fetch, enrich, report)"
    )
    fe.refresh_from_db()
    assert (fe.flow_version.version, fe.status) == (2, FlowExecution.Status.COMPLETED)
    assert attempts(fe, "report")[-1].input == {"from_enrich": {"from_fetch": {"m": 1}}}
    [correction] = Correction.objects.filter(flow_execution=fe)
    assert (correction.operation, correction.source) == ("upgrade", Correction.Source.ADMIN)
