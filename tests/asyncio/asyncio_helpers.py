"""Helpers shared by the wsproto_asyncio tests."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from wsproto_asyncio import CloseCode, Conn, MessageType, Upgrader

T = TypeVar("T")

TIMEOUT = 10.0  # no test may take longer than this...
BIG_TIMEOUT = 30.0  # ...but those moving 16 MiB messages, on slow CI machines
BIG = 16 * 1024 * 1024
CHUNK = 64 * 1024

#: The messages of at least 16 MiB, as bytes: noise, in which a piece out of place
#: changes the hash and which nothing compresses, and UTF-8 text, whose pieces
#: cut characters in two.
BIG_MESSAGES = {
    MessageType.BINARY: random.Random(6455).randbytes(BIG),
    MessageType.TEXT: ("line ☃ 𝄞 " * (BIG // 14 + 1)).encode(),  # 14 bytes a line
}

# -- what the interoperability tests exchange --------------------------------------

deflate_modes = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
kinds = pytest.mark.parametrize(
    "kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"]
)

MESSAGES = [
    pytest.param("héllo ☃ 𝄞 日本語", id="text-utf8"),
    pytest.param("", id="text-empty"),
    pytest.param(bytes(range(256)), id="binary"),
    pytest.param(b"", id="binary-empty"),
]

#: Sent in frames of 7 bytes, which cut many of these characters in two.
FRAGMENTED_TEXT = "frag ☃ mént 𝄞 日本 " * 20

PINGS = [b"", b"are you there? \x00\xff \xe2\x98\x83", bytes(range(125))]

CLOSES = [
    pytest.param(4000, "bye ☃", id="4000-reason"),
    pytest.param(CloseCode.GOING_AWAY, "", id="1001"),
    pytest.param(CloseCode.NORMAL_CLOSURE, "é" * 61 + "!", id="1000-123-byte-reason"),
]

#: About 1 MB of UTF-8, within the default read limit, that deflates some 500:1.
COMPRESSIBLE = "compressible ☃ " * 60_000

#: The read limit of the tests of it.
LIMIT = 1000


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def kind_of(data: str | bytes) -> MessageType:
    return MessageType.TEXT if isinstance(data, str) else MessageType.BINARY


async def write_streamed(conn: Conn, kind: MessageType, data: bytes) -> None:
    """Send ``data`` as one message through ``next_writer()``, ``CHUNK`` bytes a write."""
    view = memoryview(data)
    async with conn.next_writer(kind) as writer:
        for start in range(0, len(data), CHUNK):
            await writer.write(view[start : start + CHUNK])


async def read_streamed(conn: Conn) -> tuple[MessageType, int, str, int]:
    """Read one message through ``next_reader()``: its type, size, SHA-256 and read count."""
    kind, reader = await conn.next_reader()
    sha, size, reads = hashlib.sha256(), 0, 0
    while chunk := await reader.read(CHUNK):
        sha.update(chunk)
        size += len(chunk)
        reads += 1
    return kind, size, sha.hexdigest(), reads


async def accept_upgrade(
    listener: socket.socket, upgrader: Upgrader, opening: Awaitable[T]
) -> tuple[Conn, T]:
    """Accept a connection on ``listener`` and upgrade it, while ``opening`` runs.

    ``opening`` is the peer connecting: its handshake waits for our answer,
    so it runs in a task meanwhile. Returns our connection and its result.
    """
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    async with asyncio.TaskGroup() as tasks:
        peer = tasks.create_task(opening)
        sock, _ = await loop.sock_accept(listener)
        conn = await upgrader.upgrade(sock)
    return conn, peer.result()


class Relay:
    """A TCP relay on 127.0.0.1 that counts the bytes it forwards, each way.

    Both ends see a plain connection; the counts show what went over the
    wire, such as whether permessage-deflate shrank the messages. Use it as
    ``async with Relay(target_port) as relay``, then connect to ``relay.port``.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        #: Bytes forwarded from the end that connected to the relay, and from the target.
        self.from_client = 0
        self.from_server = 0
        self._pairs: dict[int, int] = {}
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def other_end(self, port: int) -> int:
        """Turn a client's port into the one the server sees for it, and back.

        The server sees the relay's connection to it, not the client's: ports
        come in pairs, the client's and the relay's toward the server.
        """
        return self._pairs[port]

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # the pumps see the end and return
        if self._tasks:
            # Not cancelled: asyncio logs a cancelled client_connected_cb as an error.
            await asyncio.wait(self._tasks)
        await self._server.wait_closed()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(client)
        try:
            server_reader, server = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client.transport.abort()
            return
        self._writers.append(server)
        client_port = client.get_extra_info("peername")[1]
        relay_port = server.get_extra_info("sockname")[1]
        self._pairs[client_port], self._pairs[relay_port] = relay_port, client_port
        await asyncio.gather(
            self._pump(client_reader, server, "from_client"),
            self._pump(server_reader, client, "from_server"),
        )
        client.close()
        server.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: str
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                setattr(self, count, getattr(self, count) + len(data))
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # pass the half-close on, as TCP would
        except OSError:
            writer.transport.abort()  # pass a reset on
