"""The correction form in a real browser (issue 19): edit an output in the JSON editor (an
invalid-JSON message while it is not JSON), see the live preview of what the save does, save
it; a preview that went out of date refuses the save and shows a fresh one. Checked with
axe-core with the preview shown, and at 1,280 pixels wide.

Debian's chromium, headless, driven by Playwright (tests/helpers/browser.py). The screenshot
goes to the test's tmp dir, or to docs/screenshots/ (the README's) with FLOWPLATFORM_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from executions.corrections.task_executions import correct_task_execution
from executions.models import Correction, FlowExecution, TaskExecution
from executions.services import start_flow_execution
from tests.helpers.a11y import assert_accessible
from tests.helpers.browser import (
    WIDTH,
    create_operator,
    logged_in_page,
    screenshot,
    screenshot_dir,
    skip_module_without_chromium,
)
from tests.helpers.flows import latest
from tests.helpers.tenants import Tenant

pytestmark = pytest.mark.django_db(transaction=True)
skip_module_without_chromium()

# fetch → enrich → report, and side, which report also reads.
FLOW = """\
tasks:
  - name: fetch
    type: transform
    input: {n: "${{ flow.input.n }}"}
  - name: enrich
    type: transform
    input: {from_fetch: "${{ tasks.fetch.output }}"}
  - name: side
    type: transform
    input: {s: 1}
  - name: report
    type: transform
    input: {from_enrich: "${{ tasks.enrich.output }}", side: "${{ tasks.side.output }}"}
"""


@pytest.fixture
def operator(django_user_model: Any, settings: Any) -> Any:
    return create_operator(django_user_model, settings)


@pytest.fixture
def flow_execution() -> FlowExecution:
    tenant = Tenant("acme")
    flow = tenant.flow(name="enrichment", definition=FLOW)
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


def open_form(page: Page, base_url: str, attempt: TaskExecution) -> None:
    response = page.goto(f"{base_url}/admin/executions/taskexecution/{attempt.id}/change/")
    assert response is not None
    assert response.status == 200


def test_edit_an_output_see_the_live_preview_and_save(
    page: Page, live_server: Any, flow_execution: FlowExecution, tmp_path: Path
) -> None:
    fe = flow_execution
    open_form(page, live_server.url, latest(fe.pk, "fetch"))
    output = page.locator('textarea[name="output"]')
    status = page.locator("#id_output_json_status")
    expect(status).to_have_text("✓ valid JSON")
    assert json.loads(output.input_value()) == {"n": 1}
    panel = page.locator("#correction-live-preview")
    expect(panel.locator("#correction-preview-button")).to_be_visible()
    expect(panel.locator("#correction-preview-nojs")).to_be_hidden()

    # Typing something that is not JSON: told where, marked invalid, and no preview of it.
    output.fill('{\n  "n": 42,\n}')
    expect(status).to_have_text(re.compile(r"^✗ not valid JSON at line 3, column 1: "))
    expect(output).to_have_attribute("aria-invalid", "true")
    expect(panel.locator("#correction-preview-status")).to_have_text(
        "Fix the JSON in “output” to see the preview."
    )
    output.fill('{\n  "n": 42\n}')
    expect(status).to_have_text("✓ valid JSON")
    expect(output).not_to_have_attribute("aria-invalid", "true")

    # The preview follows the edit (debounced): the exact stale set, and the token it binds.
    page.locator('input[name="execute_flow"]').check()
    expect(panel.locator("#preview-stale")).to_have_text("enrich, report")
    preview_status = panel.locator("#correction-preview-status")
    expect(preview_status).to_contain_text("✓ Up to date with the values above.")
    expect(preview_status).to_contain_text("A save marks 2 task(s) stale: enrich, report.")
    expect(page.locator('input[name="preview_token"]')).to_have_value(re.compile("^[0-9a-f]{64}$"))
    expect(page.locator("#correction-preview")).to_be_hidden()  # the static guess gives way
    rows = panel.locator("#preview-tasks tbody tr")
    expect(rows).to_have_count(2)
    # The predicted values (executions.engine.predicting): what the save will produce.
    expect(panel.locator("#preview-runs")).to_have_text("enrich, report")
    enrich = panel.locator('tr[data-task="enrich"]')
    expect(enrich.locator(".preview-action")).to_have_text("runs")
    predicted = json.loads(enrich.locator(".preview-output pre").inner_text())
    assert predicted == {"from_fetch": {"n": 42}}
    expect(enrich.locator(".preview-output")).to_contain_text("≠ differs from now")
    report = panel.locator('tr[data-task="report"]')
    predicted_report = json.loads(report.locator(".preview-output pre").inner_text())
    assert predicted_report == {"from_enrich": {"from_fetch": {"n": 42}}, "side": {"s": 1}}

    page.locator('textarea[name="reason"]').fill("the source said 42")
    assert_accessible(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"the correction form is {width}px wide at {WIDTH}px"
    screenshot(page, screenshot_dir(tmp_path), "correction-form")

    with page.expect_navigation():
        page.locator('input[name="_save"]').click()
    expect(page.locator("ul.messagelist")).to_contain_text(
        "Corrected fetch: 2 task(s) marked stale (enrich, report); started enrich"
    )
    [correction] = Correction.objects.filter(flow_execution=fe)
    assert (correction.source, correction.reason) == ("admin", "the source said 42")
    assert correction.stale_tasks == ["enrich", "report"]
    assert latest(fe.pk, "report").input == {
        "from_enrich": {"from_fetch": {"n": 42}},
        "side": {"s": 1},
    }
    assert latest(fe.pk, "report").status == TaskExecution.Status.COMPLETED
    assert latest(fe.pk, "report").output == predicted_report  # as the preview predicted


def test_a_preview_that_went_out_of_date_refuses_the_save(
    page: Page, live_server: Any, flow_execution: FlowExecution
) -> None:
    fe = flow_execution
    fetch = latest(fe.pk, "fetch")
    open_form(page, live_server.url, fetch)
    page.locator('textarea[name="output"]').fill('{"n": 7}')
    page.locator("#correction-preview-button").click()
    panel = page.locator("#correction-live-preview")
    expect(panel.locator("#preview-stale")).to_have_text("enrich, report")
    seen = page.locator('input[name="preview_token"]')
    expect(seen).to_have_value(re.compile("^[0-9a-f]{64}$"))
    token = seen.input_value()

    # Meanwhile someone corrects side, which report reads: fetch itself is untouched.
    correct_task_execution(
        latest(fe.pk, "side"),
        changes={"status": "completed", "output": {"s": 2}},
        identity={},
        expected_updated_at=None,
        actor="someone-else",
    )
    with page.expect_navigation():
        page.locator('input[name="_save"]').click()
    expect(page.locator("ul.errorlist.nonfield")).to_contain_text(
        "the flow execution changed since the preview you saw"
    )
    assert latest(fe.pk, "fetch").output == {"n": 1}  # nothing saved
    assert not Correction.objects.filter(flow_execution=fe, source="admin").exists()
    # The fresh preview is shown, and its token is the form's now: report is stale already.
    expect(panel.locator("#preview-stale")).to_have_text("enrich")
    expect(page.locator('input[name="preview_token"]')).not_to_have_value(token)
    assert json.loads(page.locator('textarea[name="output"]').input_value()) == {"n": 7}

    with page.expect_navigation():
        page.locator('input[name="_save"]').click()
    expect(page.locator("ul.messagelist")).to_contain_text("Corrected fetch")
    assert latest(fe.pk, "fetch").output == {"n": 7}
