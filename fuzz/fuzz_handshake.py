"""Fuzz target: the server's opening handshake, then the connection it opens.

The input is ``_harness.Layout``: the bytes a client sends (request, then maybe
frames), then option bits and chunk sizes at the end. ``ServerConnection`` gets
them in chunks, and ``next_event()`` may only:

* return ``None`` (state still ``CONNECTING``);
* return a ``HandshakeRequest``: ``accept()`` must then queue a well-formed
  ``101`` (the right ``Sec-WebSocket-Accept``, the expected subprotocol and
  extension) and open the connection, whose frames are then read under the
  read contract (``_harness.FrameReader``); or ``reject()`` must queue a 403;
* return an ``HTTPRequest``: ``reject()`` must queue a 426;
* raise ``HandshakeError``: the state is ``CLOSED`` and an HTTP 4xx/5xx with
  the error's status is queued (nothing, only when the client left without
  sending a request).

Once the handshake is over, ``next_event()`` returns ``None`` for good.

Option bits: 0 offer subprotocols ``chat`` and ``superchat``, 1 the ``x-flip``
extension, 2 no origin check, 3 stream messages, 4 reject valid handshakes,
5 no auto-pong, 7 empty reads between chunks.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys

import atheris

with atheris.instrument_imports(include=["wsproto_core", "h11"]):
    from _harness import EXTENSION_NAME, FrameReader, ServerFlip, split_input
    from wsproto_core import (
        HandshakeError,
        HandshakeRequest,
        HTTPRequest,
        ServerConnection,
        State,
        is_websocket_upgrade,
        same_origin,
    )

_SUBPROTOCOLS = ("chat", "superchat")
_STATUS = re.compile(rb"HTTP/1\.1 ([0-9]{3}) ")


def _accept_key(key: str) -> str:
    # RFC 6455 §4.2.2, computed here rather than trusting the core's accept_key().
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def _response_headers(response: bytes) -> dict[str, list[str]]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert not body, f"a 101 response with a body: {response!r}"
    headers: dict[str, list[str]] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.setdefault(name.lower(), []).append(value.strip())
    return headers


class ServerRun:
    """One ``ServerConnection`` driven through the input, checked at every step."""

    def __init__(self, options: int) -> None:
        self.options = options
        self.conn = ServerConnection(
            subprotocols=_SUBPROTOCOLS if options & 1 else (),
            extensions=[ServerFlip()] if options & 2 else [],
            check_origin=None if options & 4 else same_origin,
            stream_messages=bool(options & 8),
            auto_pong=not options & 32,
        )
        self.reader: FrameReader | None = None
        self.over = False  # refused, or answered with an HTTP response
        self.eof = False

    def feed(self, chunk: bytes) -> None:
        if self.reader is not None:
            self.reader.feed(chunk)
        else:
            self.conn.receive_data(chunk)
            self.step()

    def finish(self) -> None:
        if self.reader is not None:
            self.reader.finish()
        else:
            self.eof = True
            self.conn.receive_eof()
            self.step()

    def step(self) -> None:
        conn = self.conn
        while not self.over and self.reader is None:
            try:
                event = conn.next_event()
            except HandshakeError as exc:
                self.refused(exc)
                break
            if event is None:
                assert conn.state is State.CONNECTING, conn.state
                return
            assert conn.handshake_request is event
            assert conn.state is State.CONNECTING, conn.state  # until answered
            if isinstance(event, HandshakeRequest):
                self.handshake(event)
            elif isinstance(event, HTTPRequest):
                conn.reject()
                self.answered(426)
            else:
                raise AssertionError(f"unexpected event {event!r}")
        if self.reader is not None:
            self.reader.drain()
        else:
            assert conn.next_event() is None, "an event after the handshake was over"
            assert conn.data_to_send() == b""

    def refused(self, exc: HandshakeError) -> None:
        assert self.conn.state is State.CLOSED, f"state {self.conn.state} after {exc!r}"
        response = self.conn.data_to_send()
        self.over = True
        if exc.status_code is None:
            # Only "connection closed before the handshake request": no one to answer.
            assert self.eof, f"{exc!r} without a status before the end of input"
            assert response == b"", response
            return
        match = _STATUS.match(response)
        assert match, f"{exc!r} queued {response[:100]!r}"
        status = int(match[1])
        assert status == exc.status_code, (status, exc)
        assert 400 <= status <= 599, exc

    def answered(self, status: int) -> None:
        response = self.conn.data_to_send()
        assert response.startswith(b"HTTP/1.1 %d " % status), response[:100]
        assert self.conn.state is State.CLOSED, self.conn.state
        self.over = True

    def handshake(self, request: HandshakeRequest) -> None:
        conn = self.conn
        assert is_websocket_upgrade(request.headers), request
        assert request.host == request.headers["host"], request
        (key,) = request.headers.get_all("sec-websocket-key")
        assert len(base64.b64decode(key, validate=True)) == 16, key
        if self.options & 16:
            conn.reject()
            self.answered(403)
            return
        agreed = conn.accept()
        response = conn.data_to_send()
        assert response.startswith(b"HTTP/1.1 101 "), response[:100]
        assert conn.state is State.OPEN, conn.state
        headers = _response_headers(response)
        assert headers["sec-websocket-accept"] == [_accept_key(key)], headers
        assert headers["upgrade"] == ["websocket"], headers
        # The server's first choice among what the client offered (gorilla's rule).
        ours = _SUBPROTOCOLS if self.options & 1 else ()
        expected = next((p for p in ours if p in request.subprotocols), None)
        assert agreed.subprotocol == conn.subprotocol == expected, (agreed, request)
        assert headers.get("sec-websocket-protocol") == (None if expected is None else [expected])
        flip = self.options & 2 and any(
            offer.name == EXTENSION_NAME and not offer.params for offer in request.extensions
        )
        assert [ext.name for ext in conn.extensions] == ([EXTENSION_NAME] if flip else []), (
            conn.extensions,
            request,
        )
        self.reader = FrameReader(conn)


def TestOneInput(data: bytes) -> None:
    layout = split_input(data)
    run = ServerRun(layout.options)
    for chunk in layout.chunks():
        run.feed(chunk)
    run.finish()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
