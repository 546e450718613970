"""Accessibility checks in the browser tests: axe-core (bundled by axe-playwright-python) run on
a Playwright page.

`assert_accessible(page)` fails listing every violation of impact "serious" or "critical":
its rule id, what it asks for (help), how many elements break it and the first few of them
(CSS selectors). "minor" and "moderate" findings are not failures.
"""

from __future__ import annotations

from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

FAILING_IMPACTS = ("serious", "critical")
SHOWN_TARGETS = 3

_axe = Axe()


def blocking_violations(page: Page) -> list[dict[str, Any]]:
    """The violations of impact serious or critical that axe-core finds on the page as it is."""
    response = _axe.run(page).response
    return [v for v in response["violations"] if v.get("impact") in FAILING_IMPACTS]


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        nodes = violation.get("nodes", [])
        targets = [" ".join(map(str, node.get("target", []))) for node in nodes[:SHOWN_TARGETS]]
        more = f" (+{len(nodes) - SHOWN_TARGETS} more)" if len(nodes) > SHOWN_TARGETS else ""
        lines.append(
            f"- [{violation.get('impact')}] {violation['id']}: {violation.get('help')} "
            f"on {len(nodes)} element(s): {', '.join(targets)}{more}\n"
            f"  {violation.get('helpUrl', '')}"
        )
    return "\n".join(lines)


def assert_accessible(page: Page) -> None:
    """Fail if axe-core finds a serious or critical accessibility violation on the page."""
    violations = blocking_violations(page)
    assert not violations, (
        f"{len(violations)} serious/critical accessibility violation(s) on {page.url}:\n"
        + describe(violations)
    )
