"""Headless Chromium for the suite, driven by Playwright's async API (a pytest plugin module).

One browser for the whole run (``browser``, session-scoped, on the suite's session-scoped event
loop) and a fresh context and page per test (``page``), so tests share no cookies, storage or
routes. Playwright's own browser download cannot work on these machines: the system Chromium
at ``/usr/bin/chromium`` is used (``TRANSCRIPTS_TEST_CHROMIUM`` points elsewhere).

A missing Chromium fails the run under ``CI=true`` and skips the browser tests elsewhere; that
is the suite's only allowed skip. ``make test`` installs it when run as root.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "browser", "browser_context", "page", "require_chromium"]

CHROMIUM = Path(os.environ.get("TRANSCRIPTS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    message = (
        f"headless Chromium is missing at {CHROMIUM}: `make test` installs it as root "
        "(apt-get install chromium), or set TRANSCRIPTS_TEST_CHROMIUM"
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(browser_context: BrowserContext) -> Page:
    # Closed with its context.
    return await browser_context.new_page()
