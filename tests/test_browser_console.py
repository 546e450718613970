"""The operator console in a real browser (issue 19): a corrected run's page, a DAG node's
attempts, an attempt's history, the corrections list and the admin index, each checked with
axe-core (no serious or critical violation) and for fitting a 1,280-pixel-wide window.

Debian's chromium, headless, driven by Playwright (tests/helpers/browser.py). Screenshots go to
the test's tmp dir, or to docs/screenshots/ (the README's) with FLOWPLATFORM_SCREENSHOTS=1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from executions.models import FlowExecution, TaskExecution
from tests.helpers.a11y import assert_accessible
from tests.helpers.browser import (
    WIDTH,
    create_operator,
    logged_in_page,
    screenshot,
    screenshot_dir,
    skip_module_without_chromium,
)
from tests.helpers.console import pile_attempts
from tests.helpers.corrections import correct_as_key
from tests.helpers.flows import create_flow, latest
from tests.helpers.tenants import Tenant

pytestmark = pytest.mark.django_db(transaction=True)
skip_module_without_chromium()

# fetch → parse → (totals, vendor) → report. A new page count changes totals, not vendor: a
# corrected fetch re-runs parse, totals and report, and vendor reuses its result.
INVOICE_INTAKE = """\
tasks:
  - name: fetch
    type: transform
    input: {invoice: "${{ flow.input.invoice }}", pages: 3}
  - name: parse
    type: transform
    input: "${{ tasks.fetch.output }}"
    config: {expression: "{invoice: invoice, pages: pages, lines: [`1`, `2`]}"}
  - name: totals
    type: transform
    input: {pages: "${{ tasks.parse.output.pages }}", lines: "${{ tasks.parse.output.lines }}"}
  - name: vendor
    type: transform
    input: {invoice: "${{ tasks.parse.output.invoice }}"}
  - name: report
    type: transform
    input: {totals: "${{ tasks.totals.output }}", vendor: "${{ tasks.vendor.output }}"}
"""


@pytest.fixture
def operator(django_user_model: Any, settings: Any) -> Any:
    return create_operator(django_user_model, settings)


@pytest.fixture
def corrected_run() -> FlowExecution:
    """A run of invoice-intake with a history: parse ran 8 times, fetch was corrected and the
    flow re-executed (vendor reused its result), then totals corrected without re-running
    (report is stale)."""
    tenant = Tenant("acme")
    flow_id = create_flow(tenant, INVOICE_INTAKE, name="invoice-intake")
    response = tenant.client.post(
        "/flow-executions", {"flow_id": flow_id, "input": {"invoice": "INV-1042"}}, format="json"
    )
    assert response.status_code == 201, response.json()
    fe = FlowExecution.objects.get(pk=response.json()["id"])
    pile_attempts(fe, "parse", 8)
    steps = [
        ("fetch", {"invoice": "INV-1042", "pages": 4}, "?execute_flow=true", "scan had 4 pages"),
        ("totals", {"pages": 4, "lines": [1, 2, 3]}, "", "a line was missed"),
    ]
    for task, output, query, reason in steps:
        response = correct_as_key(tenant, latest(fe.pk, task), output, query, reason=reason)
        assert response.status_code == 200, response.json()
    assert latest(fe.pk, "vendor").reused_from is not None
    assert latest(fe.pk, "report").status == TaskExecution.Status.STALE
    return fe


@pytest.fixture
def page(
    django_db_setup: None, live_server: Any, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Page]:
    """A logged-in admin page (tests/helpers/browser.py)."""
    with logged_in_page(live_server.url, monkeypatch) as page:
        yield page


def check_page(page: Page, directory: Path, name: str) -> None:
    """A screenshot (taken first: it shows what a failure below is about); then accessible
    (axe-core), no wider than the window, and nothing in it cut off or in a box that scrolls
    sideways."""
    path = screenshot(page, directory, name)
    assert_accessible(page)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    sticking_out = page.evaluate(
        f"""() => [...document.querySelectorAll('#content *')]
            .filter(e => e.getBoundingClientRect().right > {WIDTH})
            .slice(-3).map(e => e.tagName + '.' + e.className + ' ' + e.textContent.slice(0, 30))"""
    )
    assert overflow <= WIDTH, f"{name} is {overflow}px wide at {WIDTH}px: {sticking_out} ({path})"
    clipped = page.evaluate(
        """() => [...document.querySelectorAll('#content *')]
            .filter(e => ['hidden', 'auto', 'scroll'].includes(getComputedStyle(e).overflowX))
            .filter(e => !e.closest('.visually-hidden') && e.scrollWidth > e.clientWidth + 1)
            .map(e => `${e.tagName}.${e.className} (${e.scrollWidth} > ${e.clientWidth}px) `
                 + e.textContent.trim().slice(0, 40))"""
    )
    assert clipped == [], f"cut off or scrolling sideways on {name}: {clipped} ({path})"


def test_the_console_pages_read_at_a_glance_and_pass_axe_at_1280px(
    page: Page, live_server: Any, corrected_run: FlowExecution, tmp_path: Path
) -> None:
    fe, base = corrected_run, live_server.url
    shots = screenshot_dir(tmp_path)

    page.goto(f"{base}/admin/")
    expect(page.locator("#site-name")).to_have_text("flowplatform")
    expect(page).to_have_title(re.compile(r"\| flowplatform$"))
    check_page(page, shots, "console-index")

    page.goto(f"{base}/admin/executions/flowexecution/{fe.pk}/change/")
    expect(page.locator("h1")).to_have_text("invoice-intake · version 1")
    dag = page.locator("svg.flow-dag")
    expect(dag.locator('g.dag-node[data-task="vendor"]')).to_have_attribute("data-reused-from", "0")
    expect(dag.locator('g.dag-node[data-task="report"]')).to_have_attribute(
        "data-stale-cause", "correction of totals"
    )
    expect(dag.locator('g.dag-node[data-task="parse"]')).to_have_attribute("data-attempts", "9")
    parse = page.locator('tbody.console-task[data-task="parse"]')
    expect(parse.locator("details")).not_to_have_attribute("open", "")
    parse.locator("summary").click()  # the earlier attempts unfold
    expect(parse.locator("table.console-earlier tbody tr")).to_have_count(4)
    timeline = page.locator("#console-corrections li.timeline-entry")
    expect(timeline).to_have_count(2)
    expect(timeline.first).to_contain_text("a line was missed")
    expect(timeline.first.locator("tr.json-diff-added")).to_contain_text("$.output.lines[2]")
    check_page(page, shots, "console-run")

    with page.expect_navigation():  # a node opens the task's attempts
        dag.locator('g.dag-node[data-task="report"]').click()
    expect(page).to_have_url(re.compile(r"/admin/executions/taskexecution/\?"))
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    check_page(page, shots, "console-attempts")

    fetch = latest(fe.pk, "fetch")
    page.goto(f"{base}/admin/executions/taskexecution/{fetch.pk}/history/")
    rows = page.locator("tr.history-row")
    expect(rows.first.locator(".history-reason")).to_have_text("scan had 4 pages")
    expect(rows.first.locator('li[data-field="output"]')).to_contain_text("$.pages")
    check_page(page, shots, "console-history")

    page.goto(f"{base}/admin/executions/correction/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    for title in ("flow", "task", "actor", "operation", "created at"):
        expect(
            page.locator(f'#changelist-filter details[data-filter-title="{title}"]')
        ).to_be_visible()
    check_page(page, shots, "console-corrections")
