"""A raw-socket WebSocket client for attacking the servers, and the checks the tests share.

The client speaks the protocol by hand, on a plain blocking ``socket`` with
a timeout on every operation, so it can send what no real client would:
unmasked frames, reserved opcodes, lying lengths, broken UTF-8, half a
request. Legal-shaped frames are built with ``wsproto_core.serialize_frame``;
frames the codec refuses to build (reserved opcodes, oversized or fragmented
control frames, huge length claims) with :func:`raw_frame`. The server's
answers are parsed with ``wsproto_core.parse_frame`` and ``parse_close_payload``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from wsproto_core import (
    Frame,
    Opcode,
    accept_key,
    apply_mask,
    format_close_message,
    parse_close_payload,
    parse_frame,
    serialize_frame,
)

MiB = 1024 * 1024
TIMEOUT = 5.0  # no socket operation of a test may block longer than this
CLOSE_WAIT = 3.0  # seconds a server gets to close TCP after failing a connection
READ_LIMIT = MiB  # the Upgrader's default max_message_size
MAX_HANDSHAKE = 16 * 1024  # the Upgrader's default max_handshake_size
SHUTDOWN_TIMEOUT = 1.0  # the servers' shutdown_timeout: what stuck handlers get

_RESET = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def request_bytes(
    port: int,
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    key: str | None = "",
    headers: Iterable[tuple[str, str]] = (),
    omit: Iterable[str] = (),
) -> bytes:
    """A handshake request, valid unless told otherwise.

    ``key=""`` makes a fresh valid key, ``None`` leaves the header out;
    ``omit`` drops standard headers by (lower-case) name.
    """
    fields = [
        ("Host", f"127.0.0.1:{port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
    ]
    if key is not None:
        fields.append(("Sec-WebSocket-Key", key or new_key()))
    skip = {name.lower() for name in omit}
    fields = [(k, v) for k, v in fields if k.lower() not in skip]
    fields += list(headers)
    head = f"{method} / {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields)
    return (head + "\r\n").encode("latin-1")


@dataclass
class HTTPResponse:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return None if values is None else ", ".join(values)


def raw_frame(
    first: int,
    payload: bytes = b"",
    *,
    length: int | None = None,
    mask: bool = True,
) -> bytes:
    """Build any frame, legal or not, from its first byte (FIN, RSV, opcode).

    ``length`` is the length to claim in the header (default: the payload's);
    it is encoded in the shortest form that holds it, so a claim over 125
    bytes on a control frame comes out as the RFC's 16- or 64-bit form.
    """
    claimed = len(payload) if length is None else length
    masked = 0x80 if mask else 0
    if claimed < 126:
        header = struct.pack("!BB", first, masked | claimed)
    elif claimed < 0x10000:
        header = struct.pack("!BBH", first, masked | 126, claimed)
    else:
        header = struct.pack("!BBQ", first, masked | 127, claimed)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


def deflate(data: bytes) -> bytes:
    """Compress a message as a permessage-deflate sender does (RFC 7692 §7.2.1).

    Raw DEFLATE, flushed with Z_SYNC_FLUSH, and the 4 octets ``00 00 ff ff``
    of the empty stored block that ends the flush removed.
    """
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes) -> bytes:
    """Decompress a message the server compressed (RFC 7692 §7.2.2)."""
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


class RawClient:
    """A WebSocket client on a blocking socket, for sending what it likes.

    Every operation times out after ``timeout`` seconds; use it as a context
    manager so the socket is always closed.
    """

    def __init__(
        self,
        port: int,
        *,
        timeout: float = TIMEOUT,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
    ) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Small buffers, set before connecting, bound what TCP holds for
            # a client that does not read, so floods fill up quickly.
            if rcvbuf is not None:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf is not None:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        except BaseException:
            self.sock.close()
            raise
        self.buffer = bytearray()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- bytes ----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    # -- HTTP -----------------------------------------------------------------

    def read_http_response(self) -> HTTPResponse:
        """Read a response head and, with ``Content-Length``, its body."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._recv_more(), f"connection closed mid-response: {bytes(self.buffer)!r}"
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        http_version, status, *_ = status_line.split(" ", 2)
        assert http_version == "HTTP/1.1", status_line
        response = HTTPResponse(int(status))
        for line in lines:
            name, _, value = line.partition(":")
            response.headers.setdefault(name.strip().lower(), []).append(value.strip())
        if response.status != 101:
            length = int(response.header("content-length") or 0)
            while len(self.buffer) < length:
                assert self._recv_more(), "connection closed mid-body"
            response.body = bytes(self.buffer[:length])
            del self.buffer[:length]
        return response

    def handshake(
        self, headers: Iterable[tuple[str, str]] = (), *, expect: int = 101
    ) -> HTTPResponse:
        """Open the WebSocket with a valid request; check the server accepts it."""
        key = new_key()
        self.send(request_bytes(self.port, key=key, headers=headers))
        response = self.read_http_response()
        assert response.status == expect, (response.status, response.body)
        if expect == 101:
            # RFC 6455 §4.2.2: the accept value proves the server read our key.
            assert response.header("sec-websocket-accept") == accept_key(key)
            assert (response.header("upgrade") or "").lower() == "websocket"
        return response

    # -- frames ---------------------------------------------------------------

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool = True,
    ) -> None:
        """Send one frame of a legal shape, masked (as a client must) unless told not to."""
        mask_key = os.urandom(4) if masked else None
        self.send(serialize_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=mask_key))

    def send_text(self, text: str | bytes, *, fin: bool = True) -> None:
        self.send_frame(Opcode.TEXT, text.encode() if isinstance(text, str) else text, fin=fin)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        self.send_frame(Opcode.CLOSE, format_close_message(code, reason))

    def read_frame(self) -> Frame:
        """The server's next frame, which must be unmasked (RFC 6455 §5.1)."""
        while True:
            parsed = parse_frame(self.buffer)
            if parsed is not None:
                frame, masked, end = parsed
                del self.buffer[:end]
                assert not masked, "the server masked a frame (RFC 6455 §5.1)"
                return frame
            assert self._recv_more(), f"connection closed mid-frame: {bytes(self.buffer[:64])!r}"

    def read_message(self) -> tuple[Opcode, bytes]:
        """Read one whole data message (joining fragments; inflating RSV1 ones)."""
        first = self.read_frame()
        assert first.opcode in (Opcode.TEXT, Opcode.BINARY), first
        parts = [first.payload]
        frame = first
        while not frame.fin:
            frame = self.read_frame()
            assert frame.opcode is Opcode.CONTINUATION, frame
            parts.append(frame.payload)
        data = b"".join(parts)
        return first.opcode, inflate(data) if first.rsv else data

    def read_close(self) -> tuple[int, str]:
        """Read the next frame, which must be a Close; return its code and reason."""
        frame = self.read_frame()
        assert frame.opcode is Opcode.CLOSE, f"expected a Close frame, got {frame!r:.200}"
        return parse_close_payload(frame.payload)

    def expect_close(self, code: int) -> str:
        """Check that the next frame is a Close with ``code``, then that TCP closes."""
        received, reason = self.read_close()
        assert received == code, f"expected close code {code}, got {received} ({reason!r})"
        self.expect_eof()
        return reason

    def expect_eof(self, timeout: float = CLOSE_WAIT) -> None:
        """Check that the server closes the connection within ``timeout`` seconds.

        Nothing may arrive before the end: after a Close frame the server
        "MUST NOT send any further data" (RFC 6455 §5.5.1). A reset counts as
        closed: the server may close with our input unread.
        """
        assert not self.buffer, f"data after the Close: {bytes(self.buffer[:64])!r}"
        with _timeout(self.sock, timeout):
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(
                    f"the server did not close the connection within {timeout} s"
                ) from None
            except _RESET:
                return
        assert not data, f"data after the Close: {data[:64]!r}"

    def echo(self, text: str = "still alive") -> None:
        """Check a text message round trip."""
        self.send_text(text)
        assert self.read_message() == (Opcode.TEXT, text.encode())

    def close_handshake(self) -> None:
        """Run the closing handshake; the server must echo 1000 and close TCP first."""
        self.send_close(1000, "bye")
        code, _ = self.read_close()
        assert code == 1000
        self.expect_eof()


@contextlib.contextmanager
def _timeout(sock: socket.socket, timeout: float) -> Iterator[None]:
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def open_websocket(port: int, *, timeout: float = TIMEOUT, rcvbuf: int | None = None) -> RawClient:
    """A raw client whose handshake succeeded."""
    client = RawClient(port, timeout=timeout, rcvbuf=rcvbuf)
    try:
        client.handshake()
    except BaseException:
        client.close()
        raise
    return client


def assert_still_serves(port: int) -> None:
    """Check the server still opens, echoes on and cleanly closes a new connection."""
    with open_websocket(port) as client:
        client.echo()
        client.send_frame(Opcode.BINARY, b"\x00\xff" * 100)
        assert client.read_message() == (Opcode.BINARY, b"\x00\xff" * 100)
        client.close_handshake()


def peer_closed(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``sock``'s peer to close (EOF or reset); drop what arrives."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if not sock.recv(65536):
                    return True
            except _RESET:
                return True
    return False


@dataclass
class ServerHandle:
    """A running echo server (see conftest.py): its adapter, port and handlers."""

    adapter: str
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: int = 0
    _stop: Callable[[], None] | None = None

    def handler_started(self) -> None:
        with self._lock:
            self._running += 1

    def handler_ended(self) -> None:
        with self._lock:
            self._running -= 1

    @property
    def handlers_running(self) -> int:
        """Echo handlers that have not returned: connections the server still holds."""
        with self._lock:
            return self._running

    def shutdown(self) -> float:
        """Shut the server down (once; teardown does it otherwise); return how long it took."""
        start = time.monotonic()
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()
        return time.monotonic() - start

    def wait_handlers(self, count: int, timeout: float) -> None:
        """Wait until ``count`` echo handlers run: the others released their connections."""
        deadline = time.monotonic() + timeout
        while self.handlers_running != count:
            assert time.monotonic() < deadline, (
                f"{self.handlers_running} handler(s) running after {timeout} s, not {count}"
            )
            time.sleep(0.01)

    def wait_handlers_done(self, timeout: float) -> None:
        """Wait until no echo handler runs any more."""
        self.wait_handlers(0, timeout)


class MemoryMeter:
    """Peak Python memory traced while it is active: the servers run in this process.

    It counts every thread's allocations, the test's own included; the
    tests allocate what they send before they start the meter.
    """

    def __init__(self) -> None:
        self.peak = 0
        self._started = False

    def __enter__(self) -> MemoryMeter:
        if tracemalloc.is_tracing():  # python -X tracemalloc: measure from here
            tracemalloc.reset_peak()
        else:
            tracemalloc.start()
            self._started = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sample()
        if self._started:
            tracemalloc.stop()

    def sample(self) -> int:
        """The peak so far."""
        self.peak = max(self.peak, tracemalloc.get_traced_memory()[1])
        return self.peak


def send_until_stalled(
    sock: socket.socket, data: bytes, *, stall: float, deadline: float = 15.0
) -> int:
    """Send ``data`` without reading, as fast as TCP takes it; return how much went.

    Stops when all of it went, or when the socket has not been writable for
    ``stall`` seconds: the peer stopped reading. Fails after ``deadline`` s.
    """
    end = time.monotonic() + deadline
    sent = 0
    previous = sock.gettimeout()
    sock.setblocking(False)
    try:
        with memoryview(data) as view:
            while sent < len(view):
                assert time.monotonic() < end, f"still sending after {deadline} s"
                try:
                    sent += sock.send(view[sent : sent + 65536])
                except BlockingIOError:
                    _, writable, _ = select.select([], [sock], [], stall)
                    if not writable:
                        break
    finally:
        sock.settimeout(previous)
    return sent
