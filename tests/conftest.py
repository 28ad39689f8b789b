"""Fixtures shared by every test package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and ``ws.example.test``: ``(cert, key)``."""
    openssl = shutil.which("openssl")
    if openssl is None:  # CI must run the TLS tests: fail rather than skip them
        pytest.fail("the TLS tests need the openssl command (Debian: apt-get install openssl)")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    args = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
    args += " -addext subjectAltName=DNS:localhost,DNS:ws.example.test"
    command = [openssl, *args.split(), "-keyout", str(key), "-out", str(cert)]
    result = subprocess.run(command, capture_output=True, timeout=30, check=False)
    if result.returncode != 0:
        pytest.fail(f"openssl failed: {result.stderr.decode(errors='replace')}")
    return cert, key


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's proxy settings out of the tests' connections."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
