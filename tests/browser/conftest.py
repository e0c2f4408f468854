"""Playwright driving Debian's Chromium against pytest-django's live server.

`playwright install` cannot download browsers here, so the system Chromium is launched by
path. Without it these tests fail, with the fix in the message, rather than skip: a skipped
browser test would pass CI while nothing was tested.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings

from failsafe.keys import ensure_keyset_file

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 15_000
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


def screenshot_path(name: str) -> Path:
    directory = Path(settings.BASE_DIR) / "docs" / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


@pytest.fixture(autouse=True)
def _keyset():
    ensure_keyset_file()


@pytest.fixture(scope="package")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser tests need it. Install it with "
            "`apt-get update && apt-get install -y chromium` (.ci/run does), or point the "
            "CHROMIUM environment variable at a Chromium binary.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, and Django refuses ORM calls
    # from a thread with a running loop unless told it is safe, which it is here: the test
    # and the live server take turns. Only while these tests run: the variable would fail
    # `check --deploy` in tests/test_settings.py.
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 860}
    )
    context.set_default_timeout(TIMEOUT_MS)
    browser_page = context.new_page()
    yield browser_page
    context.close()
