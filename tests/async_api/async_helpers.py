"""Helpers of the async suite, written against the adapters' public API and anyio only.

* :func:`serving` runs ``ws.serve`` for a block: the one place that knows
  how an adapter starts its server.
* :func:`ws_pair` opens a real loopback connection through ``ws.serve`` and
  ``ws.Dialer`` and gives both ends.
* :func:`echo_server` serves :func:`echo` (see :func:`url_of` for its URL).
* :class:`RawPeer` speaks frames by hand over an anyio stream, for the
  peers a Conn must survive: silent, flooding, never reading, malformed.
  :func:`raw_client` connects one to ``ws.serve``; :func:`raw_server`
  accepts a Dialer's connection with one.
* :func:`net_stream` and :func:`cancel_may_cut_a_frame` are the one place
  that knows where the adapters differ by design (see their docstrings).

What the suite assumes of every adapter: the peer of a big write has a
task reading (wsproto_trio has no background task, so, as in gorilla, a
connection moves only while a task reads it), and no write is cancelled
unless a test means it.
"""

from __future__ import annotations

import base64
import functools
import inspect
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from types import ModuleType
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from wsproto_core import (
    Frame,
    Headers,
    Opcode,
    accept_key,
    parse_close_payload,
    parse_frame,
    serialize_frame,
)

STEP = 5.0  # seconds any one step waits at most (handshakes, reads in helpers)
MASK = b"\x01\x02\x03\x04"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def url_of(server: Any, scheme: str = "ws", path: str = "/") -> str:
    """The URL of a ``ws.serve`` server listening on TCP."""
    host, port = server.address[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


# -- where the adapters differ by design -------------------------------------------------------


def net_stream(ws: ModuleType, sock: socket.socket) -> Any:
    """What a ``net_dial`` of ``ws`` returns for ``sock``, a connected socket.

    wsproto_asyncio's Dialer takes the socket; wsproto_trio's a
    ``trio.abc.Stream``, the type its TLS and its Conn are built on.
    """
    if ws.__name__ == "wsproto_trio":
        import trio  # only where trio runs

        return trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    return sock


def cancel_may_cut_a_frame(ws: ModuleType) -> bool:
    """Whether a write cancelled while it sends may cut a frame, failing the connection.

    wsproto_trio writes with ``send_all``, which a cancel may stop half way
    through a frame: the connection then fails (reads raise 1006, writes
    ``ConnectionResetError``), as its Conn docstring says. A cancel that
    lands between sends cuts nothing there either. wsproto_asyncio hands
    whole frames to its transport, so a cancel never cuts one.
    """
    return ws.__name__ == "wsproto_trio"


def kind_of(ws: ModuleType, data: str | bytes) -> Any:
    return ws.MessageType.TEXT if isinstance(data, str) else ws.MessageType.BINARY


async def echo(conn: Any) -> None:
    """Send every message back until the connection ends."""
    while True:
        message_type, data = await conn.read_message()
        await conn.write_message(message_type, data)


@asynccontextmanager
async def serving(
    ws: ModuleType,
    handler: Callable[[Any], Awaitable[None]],
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> AsyncIterator[Any]:
    """Run ``ws.serve(handler, host, port, **options)`` for the block; yields the Server.

    Leaving the block shuts the server down (a test may do it before).
    asyncio's ``serve()`` is awaited and returns a running server; a
    ``serve()`` written for ``nursery.start`` (it takes ``task_status``,
    as trio's does) runs in a task group instead.
    """
    options.setdefault("shutdown_timeout", 1.0)
    if "task_status" in inspect.signature(ws.serve).parameters:
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(ws.serve, handler, host, port, **options))
            try:
                yield server
            finally:
                await server.shutdown()
    else:
        async with await ws.serve(handler, host, port, **options) as server:
            yield server


@asynccontextmanager
async def echo_server(ws: ModuleType, **options: Any) -> AsyncIterator[Any]:
    """Serve :func:`echo` on 127.0.0.1; yields the server (see :func:`url_of`)."""
    async with serving(ws, echo, **options) as server:
        yield server


@asynccontextmanager
async def ws_pair(
    ws: ModuleType,
    *,
    upgrader: Any = None,
    dialer: Any = None,
    headers: Any = (),
    path: str = "/",
) -> AsyncIterator[tuple[Any, Any]]:
    """A connected ``(client, server)`` pair of Conns over loopback TCP."""
    conns: list[Any] = []
    arrived = anyio.Event()
    release = anyio.Event()

    async def handler(conn: Any) -> None:
        conns.append(conn)
        arrived.set()
        await release.wait()

    async with serving(ws, handler, upgrader=upgrader) as server:
        dialer = dialer or ws.Dialer(handshake_timeout=STEP)
        client, _ = await dialer.dial(url_of(server, path=path), headers)
        try:
            with anyio.fail_after(STEP):
                await arrived.wait()
            yield client, conns[0]
        finally:
            release.set()
            await client.close()


# -- raw peers ---------------------------------------------------------------------------------


class RawPeer:
    """One end of a WebSocket connection that speaks frames by hand."""

    def __init__(self, stream: anyio.abc.SocketStream, *, client: bool, buffer: bytes = b""):
        self.stream = stream
        self.client = client
        self.buffer = buffer
        #: For a raw server: the request line and headers of the handshake.
        self.request: tuple[str, Headers] | None = None
        self._stop_reading()

    def _stop_reading(self) -> None:
        # A raw peer reads only when asked: the flow-control tests need a
        # peer that does not read. anyio pauses its asyncio transport after
        # each receive(), but on uvloop (anyio 4, uvloop 0.23) that pause does
        # not take and the stream goes on reading into memory; pausing again
        # afterwards does.
        transport = getattr(self.stream, "_transport", None)
        if transport is not None and transport.is_reading():
            transport.pause_reading()

    async def send(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool | None = None,
    ) -> None:
        """Send one frame; masked as the role requires, unless ``masked`` says otherwise."""
        mask = self.client if masked is None else masked
        data = serialize_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=MASK if mask else None)
        await self.stream.send(data)

    async def _fill(self) -> None:
        try:
            data = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            raise EOFError("the peer closed the connection") from exc
        self._stop_reading()
        self.buffer += data

    async def frame(self) -> Frame:
        """The next frame; checks that the other end masked it as its role requires."""
        with anyio.fail_after(STEP):
            while (parsed := parse_frame(self.buffer)) is None:
                await self._fill()
        frame, masked, end = parsed
        assert masked is not self.client, "a client masks its frames, a server doesn't"
        self.buffer = self.buffer[end:]
        return frame

    async def data_frame(self) -> Frame:
        """The next frame that is not a Ping or a Pong."""
        while (frame := await self.frame()).opcode in (Opcode.PING, Opcode.PONG):
            pass
        return frame

    async def close_frame(self) -> tuple[int, str]:
        """The next frame, which must be a Close: its code and reason."""
        frame = await self.data_frame()
        assert frame.opcode == Opcode.CLOSE, frame
        return parse_close_payload(frame.payload)

    async def at_eof(self) -> bool:
        """Whether the other end closed the connection with nothing more to read."""
        with anyio.fail_after(STEP):
            try:
                await self._fill()
            except EOFError:
                return not self.buffer
        return False

    async def aclose(self) -> None:
        await self.stream.aclose()


async def read_head(stream: anyio.abc.ByteReceiveStream) -> tuple[bytes, bytes]:
    """Read an HTTP head; return it and the bytes that followed it."""
    data = b""
    with anyio.fail_after(STEP):
        while b"\r\n\r\n" not in data:
            try:
                data += await stream.receive(65536)
            except anyio.EndOfStream:
                return data, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def read_to_eof(stream: anyio.abc.ByteReceiveStream) -> bytes:
    data = b""
    with anyio.fail_after(STEP):
        while True:
            try:
                data += await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


def handshake_request(host: str, *extra: str, path: str = "/") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_request_head(head: bytes) -> tuple[str, Headers]:
    line, *fields = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    return line, Headers([tuple(field.split(": ", 1)) for field in fields])  # type: ignore[misc]


@asynccontextmanager
async def raw_client(
    ws: ModuleType, handler: Callable[[Any], Awaitable[None]], **options: Any
) -> AsyncIterator[tuple[RawPeer, Any]]:
    """Serve ``handler`` and connect a :class:`RawPeer` client; yields ``(peer, server)``.

    ``handler`` gets the server's Conn. The raw client's handshake is done.
    """
    async with serving(ws, handler, **options) as server:
        host, port = server.address[:2]
        stream = await anyio.connect_tcp(host, port)
        async with stream:
            await stream.send(handshake_request(f"{host}:{port}"))
            head, rest = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 101 "), head
            yield RawPeer(stream, client=True, buffer=rest), server


async def accept_handshake(
    stream: anyio.abc.SocketStream, response_headers: tuple[str, ...] = ()
) -> RawPeer:
    """Read a handshake request on ``stream`` and answer 101 by hand (with ``response_headers``).

    The peer's ``request`` holds the request line and headers.
    """
    head, rest = await read_head(stream)
    line, headers = parse_request_head(head)
    answer = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}",
        *response_headers,
    ]
    await stream.send(("\r\n".join(answer) + "\r\n\r\n").encode())
    peer = RawPeer(stream, client=False, buffer=rest)
    peer.request = (line, headers)
    return peer


@asynccontextmanager
async def raw_server(
    ws: ModuleType, dialer: Any = None, *, response_headers: tuple[str, ...] = ()
) -> AsyncIterator[tuple[Any, RawPeer]]:
    """Dial a listener that answers the handshake by hand; yields ``(client, peer)``.

    On exit the raw peer's end is closed first, so the client's close never
    waits on a peer that does not read.
    """
    dialer = dialer or ws.Dialer(handshake_timeout=STEP)
    async with raw_listener() as (port, accept):
        accepted: list[RawPeer] = []

        async def serve_one() -> None:
            accepted.append(await accept_handshake(await accept(), response_headers))

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_one)
            client, _ = await dialer.dial(f"ws://127.0.0.1:{port}/")
        [peer] = accepted
        try:
            yield client, peer
        finally:
            await peer.aclose()
            await client.close()


@asynccontextmanager
async def raw_listener() -> AsyncIterator[tuple[int, Any]]:
    """A TCP listener on 127.0.0.1: yields ``(port, accept)``, ``await accept()`` a stream."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        sock_listener = listener.listeners[0]
        yield sock_listener.extra(SocketAttribute.local_port), sock_listener.accept


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a CONNECT proxy ---------------------------------------------------------------------------


def _relay(source: socket.socket, target: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _read_head_sync(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class TunnelProxy:
    """A threaded HTTP CONNECT proxy on 127.0.0.1 that tunnels every target to 127.0.0.1.

    It records each request line and headers; with ``credentials``, it
    demands Basic authentication and answers 407 without it. Use as a
    async context manager: leaving it stops the threads and closes every socket.
    """

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.requests: list[tuple[str, Headers]] = []
        self.tunnels = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(STEP)
            head, rest = _read_head_sync(client)
            if not head:
                return
            line, headers = parse_request_head(head)
            self.requests.append((line, headers))
            if self.credentials is not None:
                token = base64.b64encode(":".join(self.credentials).encode()).decode()
                if headers.get("proxy-authorization") != f"Basic {token}":
                    client.sendall(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="tests"\r\n'
                        b"Content-Length: 13\r\nConnection: close\r\n\r\nwho are you?\n"
                    )
                    return
            method, authority, _ = line.split(" ")
            assert method == "CONNECT"
            port = int(authority.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=STEP) as upstream:
                self.tunnels += 1
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                back = threading.Thread(target=_relay, args=(upstream, client), daemon=True)
                back.start()
                _relay(client, upstream)
                back.join(STEP)

    async def __aenter__(self) -> TunnelProxy:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        # Join in a thread: the relays end when the event loop closes its ends.
        for thread in self._threads:
            await anyio.to_thread.run_sync(thread.join, STEP)
            assert not thread.is_alive(), "the proxy did not finish in time"
        self.listener.close()
