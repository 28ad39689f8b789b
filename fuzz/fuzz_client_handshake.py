"""Fuzz target: the client's opening handshake, then the connection it opens.

The input is ``_harness.Layout``: the bytes a server sends (response, then maybe
frames), then option bits and chunk sizes at the end. The client's key is the
RFC's example (``_harness.fixed_random``), so the fuzzer can find the matching
``Sec-WebSocket-Accept``. ``ClientConnection("ws://example.com/")`` gets the
bytes in chunks, and ``next_event()`` may only:

* return ``None`` (state still ``CONNECTING``);
* return a ``HandshakeResponse``: state ``OPEN``, the accept key right, the
  subprotocol and extensions among those offered; the frames that follow are
  read under the read contract (``_harness.FrameReader``);
* return a ``HandshakeRejected``: state ``CLOSED``, a final status other than 101;
* raise ``HandshakeError``: state ``CLOSED``, nothing queued.

Once the handshake is over, ``next_event()`` returns ``None`` for good.

Option bits: 0 offer subprotocol ``chat``, 1 offer the ``x-flip`` extension,
2 stream messages, 3 no auto-pong, 7 empty reads between chunks.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["wsproto_core", "h11"]):
    from _harness import (
        EXTENSION_NAME,
        SAMPLE_ACCEPT,
        SAMPLE_KEY,
        ClientFlip,
        FrameReader,
        fixed_random,
        split_input,
    )
    from wsproto_core import (
        ClientConnection,
        HandshakeError,
        HandshakeRejected,
        HandshakeResponse,
        State,
    )
    from wsproto_core.handshake import DEFAULT_MAX_REJECTED_BODY_SIZE


class ClientRun:
    """One ``ClientConnection`` driven through the input, checked at every step."""

    def __init__(self, options: int) -> None:
        self.options = options
        self.conn = ClientConnection(
            "ws://example.com/",
            subprotocols=["chat"] if options & 1 else [],
            extensions=[ClientFlip()] if options & 2 else [],
            stream_messages=bool(options & 4),
            auto_pong=not options & 8,
            random_bytes=fixed_random,
        )
        request = self.conn.data_to_send()
        assert request.startswith(b"GET / HTTP/1.1\r\n"), request
        assert f"\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n".encode() in request, request
        self.reader: FrameReader | None = None
        self.over = False  # rejected or failed

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
            self.conn.receive_eof()
            self.step()

    def step(self) -> None:
        conn = self.conn
        while not self.over and self.reader is None:
            try:
                event = conn.next_event()
            except HandshakeError:
                self.over = True
                assert conn.state is State.CLOSED, f"state {conn.state} after a HandshakeError"
                break
            if event is None:
                assert conn.state is State.CONNECTING, conn.state
                return
            if isinstance(event, HandshakeResponse):
                self.opened(event)
            elif isinstance(event, HandshakeRejected):
                assert conn.state is State.CLOSED, conn.state
                assert 200 <= event.status_code <= 999, event
                assert len(event.body) <= DEFAULT_MAX_REJECTED_BODY_SIZE
                self.over = True
            else:
                raise AssertionError(f"unexpected event {event!r}")
        if self.reader is not None:
            self.reader.drain()
        else:
            assert conn.next_event() is None, "an event after the handshake was over"
            assert conn.data_to_send() == b"", "a client answers nothing to a failed handshake"

    def opened(self, response: HandshakeResponse) -> None:
        conn = self.conn
        assert conn.state is State.OPEN, conn.state
        assert conn.handshake_response is response
        assert response.status_code == 101, response
        assert response.headers.get_all("sec-websocket-accept") == [SAMPLE_ACCEPT], response
        offered = ["chat"] if self.options & 1 else []
        assert response.subprotocol is None or response.subprotocol in offered, response
        assert conn.subprotocol == response.subprotocol
        names = [ext.name for ext in conn.extensions]
        assert names == [offer.name for offer in response.extensions], (names, response)
        assert names in ([], [EXTENSION_NAME] if self.options & 2 else []), names
        self.reader = FrameReader(conn)


def TestOneInput(data: bytes) -> None:
    layout = split_input(data)
    run = ClientRun(layout.options)
    for chunk in layout.chunks():
        run.feed(chunk)
    run.finish()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
