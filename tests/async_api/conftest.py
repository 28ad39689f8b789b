"""The async adapters' shared suite: one set of tests, run once per adapter.

Each test gets ``anyio_backend`` (the event loop anyio's pytest plugin runs
it on) and ``ws``, the adapter module for that loop, and uses only the
adapter's public API plus anyio. To run the suite against another adapter,
add its ``(id, backend, module)`` triple to ``ADAPTERS``. ``wsproto_asyncio``
runs twice: on asyncio's own loop and on uvloop's (when installed), the one
people pick for speed.

Every async test runs inside ``anyio.fail_after(TEST_TIMEOUT)``, so a
broken adapter fails a test instead of hanging the run.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

ADAPTERS: list[tuple[str, Any, str]] = [
    ("asyncio", "asyncio", "wsproto_asyncio"),
    ("trio", "trio", "wsproto_trio"),
]
if importlib.util.find_spec("uvloop") is not None:
    ADAPTERS.insert(1, ("uvloop", ("asyncio", {"use_uvloop": True}), "wsproto_asyncio"))

TEST_TIMEOUT = 10.0  # seconds any one async test (or hypothesis example) may take


@pytest.fixture(params=ADAPTERS, ids=[name for name, _, _ in ADAPTERS])
def _adapter(request: pytest.FixtureRequest) -> tuple[str, Any, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(_adapter: tuple[str, Any, str]) -> Any:
    """The event loop of this run (overrides anyio's: only loops with an adapter)."""
    return _adapter[1]


@pytest.fixture
def ws(_adapter: tuple[str, Any, str]) -> ModuleType:
    """The adapter module under test: ``ws.serve``, ``ws.Dialer``, ``ws.Conn``..."""
    return importlib.import_module(_adapter[2])


def _bounded(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(TEST_TIMEOUT):
            return await test(*args, **kwargs)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[None]:
    """Run each async test, or each hypothesis example of one, within TEST_TIMEOUT."""
    test = pyfuncitem.obj
    inner = getattr(getattr(test, "hypothesis", None), "inner_test", None)
    if inner is not None and inspect.iscoroutinefunction(inner):
        test.hypothesis.inner_test = _bounded(inner)
        try:
            yield
        finally:
            test.hypothesis.inner_test = inner
    elif inspect.iscoroutinefunction(test):
        pyfuncitem.obj = _bounded(test)
        try:
            yield
        finally:
            pyfuncitem.obj = test
    else:
        yield


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def server_ssl(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server context for ``localhost`` whose ``sni_names`` list collects the SNI seen."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sslobj, name, ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    context.sni_names = names  # type: ignore[attr-defined]
    return context


@pytest.fixture
def client_ssl(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test certificate."""
    return ssl.create_default_context(cafile=str(certificate[0]))
