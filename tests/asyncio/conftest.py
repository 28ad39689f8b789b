"""Fixtures of the wsproto_asyncio tests, which anyio's pytest plugin runs on asyncio."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """wsproto_asyncio needs an asyncio event loop (trio has its own adapter)."""
    return "asyncio"
