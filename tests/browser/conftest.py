"""Fixtures of the browser tests: one Chromium for the session, servers and pages per test.

``browser`` launches headless Chromium once (about a second) and closes it
after the last test; ``browser.py`` makes sure no Chromium process is left.
Without node or Chromium the tests skip, or FAIL when ``CI`` is set (see
``tests/interop/browser.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_helpers import ADAPTERS, RunningServer

from interop.browser import Browser, Page, require_browser


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    # Chromium's throwaway profile goes to pytest's temporary directory, so
    # even a killed run leaves nothing in /tmp itself.
    with Browser(*require_browser(), tmpdir=tmp_path_factory.mktemp("chromium")) as running:
        yield running


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter whose ``serve()`` the test runs: sync, asyncio or trio."""
    return str(request.param)


@pytest.fixture
def serve(adapter: str) -> Iterator[Callable[..., RunningServer]]:
    """``serve(**upgrader_options)``: a running server of the adapter; stopped after the test."""
    servers: list[RunningServer] = []

    def start(**options: Any) -> RunningServer:
        servers.append(RunningServer(adapter, **options))
        return servers[-1]

    yield start
    errors = []
    for server in servers:  # stop them all, even when one fails to
        try:
            server.stop()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[str], Page]]:
    """``open_page(url)``: a new page; closed after the test."""
    pages: list[Page] = []

    def open_one(url: str) -> Page:
        pages.append(browser.open(url))
        return pages[-1]

    yield open_one
    for page in pages:
        page.close()
