"""The three adapters offer the same API: the same names, options and methods.

Each difference is listed here with the reason it exists; a new one fails
until it is either removed or added, with its reason, to an allowlist below.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType

import pytest

import wsproto_asyncio
import wsproto_common
import wsproto_core
import wsproto_sync
import wsproto_trio

ADAPTERS: dict[str, ModuleType] = {
    "sync": wsproto_sync,
    "asyncio": wsproto_asyncio,
    "trio": wsproto_trio,
}

# Public names that only some adapters export, by design: name -> the adapters that do.
ONLY_IN: dict[str, set[str]] = {
    # gorilla's JoinMessages returns an io.Reader: here a blocking
    # io.BufferedReader, which has no async counterpart in the standard
    # library; async code reads messages with `async for` instead.
    "join_messages": {"sync"},
}

# Public members of Conn that only some adapters have, by design.
CONN_ONLY_IN: dict[str, set[str]] = {
    # Iteration is the runtime's own: `for` blocks, `async for` awaits.
    "__iter__": {"sync"},
    "__aiter__": {"asyncio", "trio"},
    # trio's name for closing a resource (trio.abc.AsyncResource); `close()` too.
    "aclose": {"trio"},
}

# Fields of Upgrader and Dialer that only some adapters have, by design.
OPTION_ONLY_IN: dict[str, set[str]] = {
    # asyncio parses ahead of the application; sync and trio read only when it reads.
    "max_queue": {"asyncio"},
}

# Keyword arguments of Upgrader.upgrade() that only some adapters take, by design.
UPGRADE_ONLY_IN: dict[str, set[str]] = {
    # sync and asyncio upgrade a socket, so they can start TLS on it; trio
    # upgrades a trio.abc.Stream, which is a trio.SSLStream when TLS is wanted.
    "ssl_context": {"sync", "asyncio"},
}

# Arguments of serve() that only some adapters take, by design.
SERVE_ONLY_IN: dict[str, set[str]] = {
    "task_status": {"trio"},  # serve() is started with nursery.start
}


def differences(names: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each name not in every adapter's set, with the adapters that have it."""
    everywhere = set.intersection(*names.values())
    return {
        name: {adapter for adapter, have in names.items() if name in have}
        for name in set.union(*names.values()) - everywhere
    }


def test_the_public_names_are_the_same() -> None:
    names = {adapter: set(module.__all__) for adapter, module in ADAPTERS.items()}
    assert differences(names) == ONLY_IN
    for module in ADAPTERS.values():
        assert len(module.__all__) == len(set(module.__all__))


SHARED = sorted(
    name
    for name in set(wsproto_sync.__all__) | set(wsproto_asyncio.__all__) | set(wsproto_trio.__all__)
    if hasattr(wsproto_core, name) or hasattr(wsproto_common, name)
)


@pytest.mark.parametrize("name", SHARED)
def test_re_exports_are_the_core_objects(name: str) -> None:
    """What the core (or wsproto_common) defines is re-exported, not redefined."""
    origin = getattr(wsproto_core, name, None) or getattr(wsproto_common, name)
    for module in ADAPTERS.values():
        if name in module.__all__:
            assert getattr(module, name) is origin, module.__name__


def public_members(cls: type) -> set[str]:
    members = {name for name in dir(cls) if not name.startswith("_")}
    return members | {name for name in ("__iter__", "__aiter__") if hasattr(cls, name)}


def test_conn_has_the_same_members() -> None:
    members = {adapter: public_members(module.Conn) for adapter, module in ADAPTERS.items()}
    assert differences(members) == CONN_ONLY_IN


def test_upgrader_and_dialer_have_the_same_options() -> None:
    for cls in ("Upgrader", "Dialer"):
        fields = {
            adapter: {field.name for field in dataclasses.fields(getattr(module, cls))}
            for adapter, module in ADAPTERS.items()
        }
        assert differences(fields) == OPTION_ONLY_IN, cls


def keywords(function: object) -> list[str]:
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def test_upgrade_takes_the_same_keyword_arguments() -> None:
    arguments = {
        adapter: set(keywords(module.Upgrader.upgrade)) for adapter, module in ADAPTERS.items()
    }
    assert differences(arguments) == UPGRADE_ONLY_IN


def test_serve_takes_the_same_arguments_in_the_same_order() -> None:
    orders = {
        adapter: [
            name for name in inspect.signature(module.serve).parameters if name not in SERVE_ONLY_IN
        ]
        for adapter, module in ADAPTERS.items()
    }
    assert orders["sync"] == orders["asyncio"] == orders["trio"]
    names = {adapter: set(inspect.signature(m.serve).parameters) for adapter, m in ADAPTERS.items()}
    assert differences(names) == SERVE_ONLY_IN
