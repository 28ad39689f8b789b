"""``wsproto serve``'s chat page in headless Chromium: two pages talk through the hub.

The server is ``python -m wsproto_cli serve`` for each adapter (a
subprocess, killed at teardown); the browser is the session's, from this
directory's conftest. The page's stable hooks are ``#input``, ``#send``,
``#log .message`` and ``body[data-state]`` (``connecting``, ``open``,
``closed``).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from interop.browser import Page
from test_cli_serve import ServeProcess

ADAPTERS = ["sync", "asyncio", "trio"]
TIMEOUT = 15.0

MESSAGES = "() => [...document.querySelectorAll('#log .message')].map(e => e.textContent)"


@pytest.fixture(params=ADAPTERS)
def chat_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(str(request.param), "--compression", log_path=tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.kill()


def joined(page: Page) -> None:
    page.wait_for("() => document.body.dataset.state === 'open'", timeout=TIMEOUT)


def send(page: Page, text: str, *, enter: bool = False) -> None:
    page.fill("#input", text)
    if enter:
        page.press("#input", "Enter")
    else:
        page.click("#send")


def wait_for_message(page: Page, text: str) -> list[str]:
    page.wait_for(f"() => ({MESSAGES})().includes({text!r})", timeout=TIMEOUT)
    return list(page.evaluate(MESSAGES))


def test_two_pages_talk_through_the_hub(
    chat_server: ServeProcess, open_page: Callable[[str], Page]
) -> None:
    alice, bob = open_page(chat_server.http_url), open_page(chat_server.http_url)
    for page in (alice, bob):
        joined(page)
    chat_server.wait_for_log("2 in the chat")
    token = uuid.uuid4().hex[:8]

    send(alice, f"hello from alice {token}")
    assert f"hello from alice {token}" in wait_for_message(bob, f"hello from alice {token}")
    wait_for_message(alice, f"hello from alice {token}")  # the hub sends it back too
    assert alice.evaluate("() => document.getElementById('input').value") == ""

    send(bob, f"hi alice, bob here {token} <b>", enter=True)  # text, never markup
    messages = wait_for_message(alice, f"hi alice, bob here {token} <b>")
    assert messages == [f"hello from alice {token}", f"hi alice, bob here {token} <b>"]
    assert alice.evaluate("() => document.querySelectorAll('#log b').length") == 0
    wait_for_message(bob, f"hi alice, bob here {token} <b>")

    errors = [line for page in (alice, bob) for line in page.logs() if "error" in line.lower()]
    assert errors == []  # nothing broken, nothing blocked by the page's security policy

    # Shutting the server down closes the pages' connections with 1001.
    assert chat_server.stop(signal.SIGTERM) == 0
    for page in (alice, bob):
        page.wait_for("() => document.body.dataset.state === 'closed'", timeout=TIMEOUT)
        assert "1001" in page.text("#status")
        assert page.evaluate("() => document.getElementById('send').disabled") is True
