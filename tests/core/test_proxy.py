# HTTP CONNECT through a proxy (RFC 9110 §9.3.6), without sockets: the
# request ProxyConnect writes, every way the proxy can answer, fed whole, one
# byte at a time and in arbitrary chunks (hypothesis), and parse_proxy_url.

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsproto_core import (
    HandshakeError,
    HandshakeRejected,
    Headers,
    LocalProtocolError,
    ProxyConnect,
    ProxyURL,
    TunnelEstablished,
    parse_proxy_url,
)

OK = b"HTTP/1.1 200 Connection established\r\n\r\n"
TUNNEL = b"HTTP/1.1 101 Switching Protocols\r\n"  # the target speaking, through the tunnel
DENIED = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="proxy"\r\n'
    b"Content-Length: 6\r\n\r\n"
    b"denied"
)


def feed(connect: ProxyConnect, chunks: list[bytes]) -> TunnelEstablished | None:
    """Feed ``chunks`` one by one; return the first outcome."""
    for chunk in chunks:
        connect.receive_data(chunk)
        event = connect.next_event()
        if event is not None:
            return event
    return None


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def refusal(connect: ProxyConnect, chunks: list[bytes]) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        feed(connect, chunks)
    return info.value


# -- the request -----------------------------------------------------------------------


def test_request_names_the_target_in_authority_form():
    connect = ProxyConnect("example.com", 443)
    assert connect.request == (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert connect.authority == "example.com:443"


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_target_is_bracketed(host):
    connect = ProxyConnect(host, 8080)
    assert connect.request.startswith(b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n")


def test_credentials_are_sent_as_basic_auth():
    # The example of RFC 7617 §2.
    connect = ProxyConnect("example.com", 80, credentials=("Aladdin", "open sesame"))
    assert b"\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n" in connect.request


def test_credentials_are_utf8():
    # The example of RFC 7617 §2.1.
    connect = ProxyConnect("example.com", 80, credentials=("test", "123£"))
    assert b"Proxy-Authorization: Basic dGVzdDoxMjPCow==\r\n" in connect.request


def test_extra_headers_follow():
    connect = ProxyConnect("example.com", 80, extra_headers=[("User-Agent", "test/1")])
    assert connect.request.endswith(b"Host: example.com:80\r\nUser-Agent: test/1\r\n\r\n")


def test_extra_proxy_authorization_without_credentials_is_allowed():
    connect = ProxyConnect("h", 1, extra_headers={"Proxy-Authorization": "Bearer t"})
    assert b"\r\nProxy-Authorization: Bearer t\r\n" in connect.request


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "invalid port"),
        ({"port": 65536}, "invalid port"),
        ({"credentials": ("a:b", "c")}, "cannot contain ':'"),
        ({"credentials": ("a", "b\nc")}, "control codes"),
        ({"credentials": ("a\x7f", "b")}, "control codes"),
        ({"extra_headers": [("host", "elsewhere")]}, "sets 'host' itself"),
        (
            {"credentials": ("a", "b"), "extra_headers": [("Proxy-Authorization", "x")]},
            "sets 'Proxy-Authorization' itself",
        ),
        ({"host": "bad host"}, "invalid CONNECT request"),
        ({"extra_headers": [("X-Injected", "a\r\nb")]}, "invalid CONNECT request"),
        ({"extra_headers": [("X-Latin", "\u20ac")]}, "invalid CONNECT request"),
    ],
)
def test_invalid_requests_are_refused_locally(kwargs, message):
    args = {"host": "example.com", "port": 80, **kwargs}
    with pytest.raises(LocalProtocolError, match=message):
        ProxyConnect(**args)


# -- a 2xx: the tunnel opens ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_200_opens_the_tunnel(mode):
    connect = ProxyConnect("example.com", 443)
    assert connect.next_event() is None  # nothing received yet
    chunks = [OK] if mode == "whole" else bytewise(OK)
    event = feed(connect, chunks)
    assert event == TunnelEstablished(
        status_code=200, reason="Connection established", headers=Headers(), trailing_data=b""
    )


def test_bytes_after_the_head_belong_to_the_tunnel():
    connect = ProxyConnect("example.com", 80)
    event = feed(connect, [OK + TUNNEL])
    assert event is not None
    assert event.trailing_data == TUNNEL


def test_content_length_of_a_2xx_is_ignored():
    # "A client MUST ignore any Content-Length or Transfer-Encoding header
    # fields received in a successful response to CONNECT." -- RFC 9110 §9.3.6
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Proxy: p\r\n\r\nabcd"
    event = feed(ProxyConnect("h", 1), [response])
    assert event is not None
    assert event.trailing_data == b"abcd"
    assert event.headers.get("x-proxy") == "p"


def test_any_2xx_and_http_1_0_open_the_tunnel():
    event = feed(ProxyConnect("h", 1), [b"HTTP/1.0 204 Fine\r\n\r\nx"])
    assert event is not None
    assert (event.status_code, event.reason, event.trailing_data) == (204, "Fine", b"x")


def test_informational_responses_are_skipped():
    response = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    event = feed(ProxyConnect("h", 1), [response + b"rest"])
    assert event is not None
    assert event.status_code == 200
    assert event.trailing_data == b"rest"


def test_after_the_outcome_next_event_is_none_and_data_is_refused():
    connect = ProxyConnect("h", 1)
    assert feed(connect, [OK]) is not None
    assert connect.next_event() is None
    with pytest.raises(LocalProtocolError):
        connect.receive_data(b"tunnel bytes")


@given(
    st.binary(max_size=64),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
)
def test_any_chunking_gives_the_same_tunnel(after, cuts):
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + OK + after
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    connect = ProxyConnect("example.com", 443)
    received = b""
    event = None
    for chunk in (c for c in chunks if c):
        if event is not None:
            received += chunk  # the caller reads the tunnel itself from now on
            continue
        connect.receive_data(chunk)
        event = connect.next_event()
        if event is not None:
            received = event.trailing_data
    assert event is not None
    assert event.status_code == 200
    assert received == after


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
def test_407_is_a_handshake_error_with_the_response(mode):
    connect = ProxyConnect("example.com", 443, credentials=("user", "wrong"))
    chunks = {"whole": [DENIED], "bytewise": bytewise(DENIED), "trailing": [DENIED + b"junk"]}
    error = refusal(connect, chunks[mode])
    assert error.status_code == 407
    assert error.headers is not None
    assert error.headers["proxy-authenticate"] == 'Basic realm="proxy"'
    assert error.response == HandshakeRejected(
        status_code=407,
        reason="Proxy Authentication Required",
        headers=error.headers,
        body=b"denied",
    )
    assert "example.com:443" in str(error)
    assert "wrong" not in str(error)
    assert connect.next_event() is None  # the outcome was given
    with pytest.raises(LocalProtocolError):
        connect.receive_data(b"more")


def test_chunked_refusal_body():
    response = b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n"
    error = refusal(ProxyConnect("h", 1), [response])
    assert error.response is not None
    assert (error.status_code, error.response.body) == (403, b"no!")


def test_refusal_body_until_eof():
    error = refusal(ProxyConnect("h", 1), [b"HTTP/1.1 502 Bad Gateway\r\n\r\nupstream down", b""])
    assert error.response is not None
    assert (error.status_code, error.response.body) == (502, b"upstream down")


def test_refusal_cut_short_keeps_what_arrived():
    response = b"HTTP/1.1 407 Nope\r\nContent-Length: 100\r\n\r\npartial"
    error = refusal(ProxyConnect("h", 1), [response, b""])
    assert error.response is not None
    assert (error.status_code, error.response.body) == (407, b"partial")


def test_refusal_body_is_bounded():
    response = b"HTTP/1.1 502 Bad Gateway\r\n\r\n" + b"x" * 100
    connect = ProxyConnect("h", 1, max_body_size=10)
    error = refusal(connect, [response])  # no need to wait for the end of the body
    assert error.response is not None
    assert error.response.body == b"x" * 10


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=20))
def test_any_chunking_gives_the_same_refusal(cuts):
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(DENIED[pos : pos + size])
        pos += size
    chunks.append(DENIED[pos:])
    error = refusal(ProxyConnect("h", 1), chunks)
    assert error.status_code == 407
    assert error.response is not None
    assert error.response.body == b"denied"


# -- broken proxies -----------------------------------------------------------------------


@pytest.mark.parametrize("before", [b"", b"HTTP/1.1 2", b"HTTP/1.1 100 Continue\r\n\r\n"])
def test_eof_before_the_response_is_a_handshake_error(before):
    connect = ProxyConnect("example.com", 443)
    with pytest.raises(HandshakeError, match="closed the connection before answering") as info:
        feed(connect, [before, b""])
    assert info.value.status_code is None
    assert info.value.response is None


@pytest.mark.parametrize(
    "response",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 407 No\r\nContent-Length: x\r\n\r\n",
    ],
)
def test_malformed_response_is_a_handshake_error(response):
    with pytest.raises(HandshakeError, match="malformed response from the proxy"):
        feed(ProxyConnect("h", 1), [response])


def test_complete_head_over_the_limit():
    response = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"p" * 200 + b"\r\n\r\n"
    connect = ProxyConnect("h", 1, max_response_size=100)
    with pytest.raises(HandshakeError, match="larger than max_response_size"):
        feed(connect, [response])


def test_incomplete_head_over_the_limit():
    connect = ProxyConnect("h", 1, max_response_size=100)
    with pytest.raises(HandshakeError, match="larger than max_response_size"):
        feed(connect, [b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 40])


def test_informational_heads_count_towards_the_limit():
    connect = ProxyConnect("h", 1, max_response_size=100)
    with pytest.raises(HandshakeError, match="larger than max_response_size"):
        feed(connect, [b"HTTP/1.1 100 Continue\r\n\r\n"] * 10)


def test_limit_counts_heads_only_not_the_tunnel():
    connect = ProxyConnect("h", 1, max_response_size=len(OK))
    event = feed(connect, [OK + b"t" * 1000])
    assert event is not None
    assert len(event.trailing_data) == 1000


# -- proxy URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://proxy.example:3128", ProxyURL("proxy.example", 3128)),
        ("http://proxy.example", ProxyURL("proxy.example", 80)),
        ("HTTP://Proxy.Example:3128/", ProxyURL("proxy.example", 3128)),
        ("proxy.example:3128", ProxyURL("proxy.example", 3128)),
        ("http://[::1]:8080", ProxyURL("::1", 8080)),
        ("http://10.0.0.1", ProxyURL("10.0.0.1", 80)),
        ("http://bücher.example", ProxyURL("xn--bcher-kva.example", 80)),
        ("http://user:p%40ss%3Aw@proxy:8080", ProxyURL("proxy", 8080, ("user", "p@ss:w"))),
        ("http://us%C3%A9r@proxy", ProxyURL("proxy", 80, ("usér", ""))),
    ],
)
def test_parse_proxy_url(url, expected):
    assert parse_proxy_url(url) == expected


def test_proxy_url_repr_hides_the_password():
    proxy = parse_proxy_url("http://user:secret@proxy:8080")
    assert proxy.credentials == ("user", "secret")
    assert "secret" not in repr(proxy)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://proxy:443", "unsupported proxy scheme 'https'"),
        ("socks5://proxy:1080", "unsupported proxy scheme 'socks5'"),
        ("http://", "no host"),
        ("http://proxy:0", "port 0"),
        ("http://proxy:99999", "malformed host or port"),
        ("http://proxy:port", "malformed host or port"),
        ("http://[::1", "malformed host or port"),
        ("http://bad_host!%", "invalid host name"),
        ("http://a..b\u00e9", "invalid host name"),
        ("http://us%3Aer:secret@proxy", "cannot contain ':'"),
        ("http://user:sec%0Aret@proxy", "control codes"),
    ],
)
def test_invalid_proxy_urls(url, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_proxy_url(url)
    assert "secret" not in str(info.value)
