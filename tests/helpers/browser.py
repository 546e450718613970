"""Real-browser tests: Debian's chromium (installed by `.ci/run`) driven by Playwright.

No Playwright browser is ever downloaded: the browser is the system's `/usr/bin/chromium`.
Without it the browser tests are skipped on a developer machine and fail in CI (`CI` set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

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


# The admin user the browser tests log in as, and a logged-in page ------------------------------

USERNAME = "operator"
PASSWORD = "correct-horse-battery"
WIDTH = 1280  # the screen the console is laid out for


def create_operator(django_user_model: Any, settings: Any) -> Any:
    """A superuser to log in as. The live server runs in this process: a fast hasher saves a
    PBKDF2 run per login."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return django_user_model.objects.create_superuser(USERNAME, "operator@example.com", PASSWORD)


@contextmanager
def logged_in_page(base_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    """A page logged in to the admin at `base_url`, WIDTH pixels wide; fails the test on any
    uncaught JavaScript error.

    The test database is set up before the live server starts, so the server (and the
    connection its thread keeps open) is stopped before the database is dropped.
    """
    # Playwright's sync API runs an event loop in this thread; Django would refuse ORM calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": WIDTH, "height": 900})
        page = context.new_page()
        page.set_default_timeout(10_000)
        js_errors: list[str] = []
        page.on("pageerror", lambda error: js_errors.append(str(error)))
        admin_login(page, base_url, USERNAME, PASSWORD)
        yield page
        context.close()
        browser.close()
        # While Playwright's loop runs, Django keeps this thread's connections in context-local
        # storage: close the ones the test opened, or PostgreSQL cannot drop the test database.
        connections.close_all()
    assert js_errors == [], f"JavaScript errors in the admin: {js_errors}"


# Screenshots: README's (docs/screenshots/) with FLOWPLATFORM_SCREENSHOTS=1, else a tmp dir.

SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"


def screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get("FLOWPLATFORM_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path


def screenshot(page: Page, directory: Path, name: str) -> Path:
    """The whole page as `directory`/`name`.png, from its top."""
    page.evaluate("window.scrollTo(0, 0)")  # else admin's sticky sidebar lands mid-picture
    path = directory / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 0
    return path
