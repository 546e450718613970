"""Real-browser tests: Debian's chromium (installed by `.ci/run`) driven by Playwright.

No Playwright browser is ever downloaded: the browser is the system's `/usr/bin/chromium`.
Without it the browser tests are skipped on a developer machine and fail in CI (`CI` set).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MISSING = (
    f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
    "(apt-get install chromium; .ci/run installs it). Playwright's own browsers are not used."
)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def skip_module_without_chromium() -> None:
    """Skip the calling test module when chromium is absent, unless in CI (then the tests fail)."""
    if not CHROMIUM.exists() and not in_ci():
        pytest.skip(MISSING, allow_module_level=True)


def launch_chromium(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists():
        pytest.fail(f"CI is set and {MISSING}", pytrace=False)
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


def admin_login(page: Page, base_url: str, username: str, password: str) -> None:
    """Log in through the real /admin/login/ form and land on the admin index."""
    page.goto(f"{base_url}/admin/login/")
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(password)
    page.locator('#login-form input[type="submit"]').click()
    expect(page).to_have_url(f"{base_url}/admin/")
    expect(page.locator("#user-tools")).to_contain_text(username)
