# WebSocket URIs (RFC 6455 §3): what a client connects to and sends as Host.

from __future__ import annotations

import dataclasses

import pytest

from wsproto_core import WebSocketURI, parse_uri


@pytest.mark.parametrize(
    ("uri", "secure", "host", "port", "resource_name"),
    [
        ("ws://example.com", False, "example.com", 80, "/"),
        ("ws://example.com/", False, "example.com", 80, "/"),
        ("wss://example.com", True, "example.com", 443, "/"),
        ("http://example.com/x", False, "example.com", 80, "/x"),
        ("https://example.com/x", True, "example.com", 443, "/x"),
        ("WS://Example.COM/Path", False, "example.com", 80, "/Path"),
        ("HTTPS://example.com", True, "example.com", 443, "/"),
        ("ws://example.com:8080/chat", False, "example.com", 8080, "/chat"),
        ("wss://example.com:8443/chat", True, "example.com", 8443, "/chat"),
        ("ws://example.com:443/", False, "example.com", 443, "/"),
        ("wss://example.com:80/", True, "example.com", 80, "/"),
        ("ws://example.com:/x", False, "example.com", 80, "/x"),
        ("ws://example.com:65535/", False, "example.com", 65535, "/"),
        ("ws://example.com/a/b?x=1&y=%20", False, "example.com", 80, "/a/b?x=1&y=%20"),
        ("ws://example.com?x=1", False, "example.com", 80, "/?x=1"),
        ("ws://example.com/?", False, "example.com", 80, "/"),
        ("ws://example.com/a%2Fb", False, "example.com", 80, "/a%2Fb"),
        ("ws://127.0.0.1:9000", False, "127.0.0.1", 9000, "/"),
        ("ws://[::1]", False, "::1", 80, "/"),
        ("wss://[2001:DB8::1]:8443/x", True, "2001:db8::1", 8443, "/x"),
    ],
)
def test_parse_uri(uri: str, secure: bool, host: str, port: int, resource_name: str) -> None:
    parsed = parse_uri(uri)
    assert parsed == WebSocketURI(secure, host, port, resource_name, None)
    assert parsed.secure is secure


@pytest.mark.parametrize(
    ("uri", "host_header", "text"),
    [
        ("ws://example.com", "example.com", "ws://example.com/"),
        ("ws://example.com:80/a?b", "example.com", "ws://example.com/a?b"),
        ("wss://example.com:443/", "example.com", "wss://example.com/"),
        ("ws://example.com:443/", "example.com:443", "ws://example.com:443/"),
        ("wss://example.com:80/", "example.com:80", "wss://example.com:80/"),
        ("ws://example.com:8080/x", "example.com:8080", "ws://example.com:8080/x"),
        ("https://example.com/", "example.com", "wss://example.com/"),
        ("ws://[::1]/", "[::1]", "ws://[::1]/"),
        ("ws://[::1]:8080/x", "[::1]:8080", "ws://[::1]:8080/x"),
        ("wss://[2001:db8::1]:443/", "[2001:db8::1]", "wss://[2001:db8::1]/"),
        ("ws://user:pass@example.com/", "example.com", "ws://example.com/"),
    ],
)
def test_host_header_and_str(uri: str, host_header: str, text: str) -> None:
    parsed = parse_uri(uri)
    assert parsed.host_header == host_header
    assert str(parsed) == text
    assert parse_uri(str(parsed)) == dataclasses.replace(parsed, user_info=None)


def test_str_never_shows_credentials() -> None:
    assert "secret" not in str(parse_uri("ws://alice:secret@example.com/"))
    assert "alice" not in str(parse_uri("ws://alice:secret@example.com/"))


@pytest.mark.parametrize(
    ("uri", "user_info"),
    [
        ("ws://alice:secret@example.com/", ("alice", "secret")),
        ("ws://alice@example.com/", ("alice", "")),
        ("ws://alice:@example.com/", ("alice", "")),
        ("ws://:secret@example.com/", ("", "secret")),
        ("ws://al%40ice:s%3Ac%2Fr%20t@example.com:9000/", ("al@ice", "s:c/r t")),
        ("ws://j%C3%B6rg:p%C3%A4ss@example.com/", ("j\u00f6rg", "p\u00e4ss")),
    ],
)
def test_user_info_is_percent_decoded(uri: str, user_info: tuple[str, str]) -> None:
    parsed = parse_uri(uri)
    assert parsed.user_info == user_info
    assert parsed.host == "example.com"


def test_no_user_info() -> None:
    assert parse_uri("ws://example.com/").user_info is None


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("ws://b\u00fccher.example/", "xn--bcher-kva.example"),
        ("wss://\u4f8b\u3048.jp:8443/", "xn--r8jz45g.jp"),
        ("ws://B\u00dcCHER.example/", "xn--bcher-kva.example"),
    ],
)
def test_idn_host_becomes_punycode(uri: str, host: str) -> None:
    parsed = parse_uri(uri)
    assert parsed.host == host
    assert parsed.host.isascii()
    assert host in parsed.host_header


@pytest.mark.parametrize(
    "uri",
    [
        "ws://example.com/#",
        "ws://example.com/#frag",
        "ws://example.com/chat?x=1#frag",
        "ws://example.com#",
    ],
)
def test_fragment_is_refused(uri: str) -> None:
    # "Fragment identifiers are meaningless in the context of WebSocket URIs
    # and MUST NOT be used on these URIs." -- RFC 6455 §3
    with pytest.raises(ValueError, match="fragment"):
        parse_uri(uri)


@pytest.mark.parametrize(
    "uri", ["ws://", "ws:///path", "ws://:80/", "ws://user@/", "ws://user:pw@:8080/", "ws:example"]
)
def test_missing_host_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="no host"):
        parse_uri(uri)


@pytest.mark.parametrize(
    "uri",
    ["ftp://example.com/", "wsx://example.com/", "example.com", "//example.com/", "", "file:///x"],
)
def test_other_schemes_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        parse_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "ws://example.com:abc/",
        "ws://example.com:65536/",
        "ws://example.com:99999/",
        "ws://example.com:-1/",
        "ws://example.com:8o/",
    ],
)
def test_bad_port_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_uri(uri)


def test_explicit_port_is_never_replaced() -> None:
    # Port 0 may be refused, but it must not silently become the default.
    try:
        parsed = parse_uri("ws://example.com:0/")
    except ValueError:
        return
    assert parsed.port == 0


def test_uri_value_is_frozen() -> None:
    parsed = parse_uri("ws://example.com/")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.port = 1  # type: ignore[misc]
    assert parsed == parse_uri("ws://example.com:80")
    assert hash(parsed) == hash(parse_uri("ws://example.com:80"))
    assert WebSocketURI(False, "example.com", 80) == parsed


@pytest.mark.parametrize(
    "uri",
    ["ws://exa mple/", "ws://[fe80::1%25eth0]/", "ws://" + "ä" * 70 + ".example/", "ws://a<b/"],
)
def test_invalid_host_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="invalid host"):
        parse_uri(uri)


@pytest.mark.parametrize(
    ("uri", "resource_name"),
    [
        ("ws://h/a b", "/a%20b"),
        ("ws://h/caf\u00e9?q=\u00e9 x", "/caf%C3%A9?q=%C3%A9%20x"),
        ("ws://h/already%20escaped?a=%2F", "/already%20escaped?a=%2F"),
        ("ws://h/p;x=1/@:!$&'()*+,=-._~?k=v/?", "/p;x=1/@:!$&'()*+,=-._~?k=v/?"),
    ],
)
def test_resource_name_is_percent_encoded_as_browsers_do(uri: str, resource_name: str) -> None:
    assert parse_uri(uri).resource_name == resource_name
