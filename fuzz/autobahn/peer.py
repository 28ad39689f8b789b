"""Autobahn|Testsuite peers for each adapter: an echo server and a client.

    python fuzz/autobahn/peer.py server --adapter sync --port 9001
    AUTOBAHN_URL=ws://127.0.0.1:9001 python fuzz/autobahn/peer.py client --adapter trio

The server echoes every message (text as text, binary as binary) until the
suite closes; the client does the same for each case the suite's server
runs, as ``../shared/tools/autobahn/README.md`` describes. Both use only
the adapters' public API, with the options conformance needs and nothing
else: permessage-deflate on (12.x and 13.x), a 32 MiB read limit (9.x
sends 16 MiB messages), no origin check (the suite is not a browser).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

READ_LIMIT = 2**25
AGENT = os.environ.get("AUTOBAHN_AGENT", "wsproto-core")


def echo_kind(message: str | bytes) -> Any:
    from wsproto_core import MessageType

    return MessageType.TEXT if isinstance(message, str) else MessageType.BINARY


# -- wsproto_sync ----------------------------------------------------------------------


def sync_server(port: int) -> None:
    import wsproto_sync as ws

    def echo(conn: ws.Conn) -> None:
        while True:
            conn.write_message(*conn.read_message())

    upgrader = ws.Upgrader(enable_compression=True, max_message_size=READ_LIMIT, check_origin=None)
    with ws.serve(echo, "127.0.0.1", port, upgrader=upgrader) as server:
        print(f"wsproto_sync echo server on ws://127.0.0.1:{port}", flush=True)
        server.serve_forever()


def sync_client(url: str) -> int:
    import wsproto_sync as ws

    dialer = ws.Dialer(enable_compression=True, max_message_size=READ_LIMIT, proxy=None)
    conn, _ = dialer.dial(f"{url}/getCaseCount")
    count = int(conn.read_message()[1])
    conn.close()
    for case in range(1, count + 1):
        try:
            conn, _ = dialer.dial(f"{url}/runCase?case={case}&agent={AGENT}")
        except (ws.WebSocketError, OSError):
            continue
        with conn:
            try:
                while True:
                    conn.write_message(*conn.read_message())
            except (ws.WebSocketError, OSError):
                pass
    conn, _ = dialer.dial(f"{url}/updateReports?agent={AGENT}")
    conn.close_gracefully(timeout=5)
    return count


# -- wsproto_asyncio -------------------------------------------------------------------


def asyncio_server(port: int) -> None:
    import asyncio

    import wsproto_asyncio as ws

    async def echo(conn: ws.Conn) -> None:
        while True:
            await conn.write_message(*await conn.read_message())

    async def main() -> None:
        upgrader = ws.Upgrader(
            enable_compression=True, max_message_size=READ_LIMIT, check_origin=None
        )
        async with await ws.serve(echo, "127.0.0.1", port, upgrader=upgrader) as server:
            print(f"wsproto_asyncio echo server on ws://127.0.0.1:{port}", flush=True)
            await server.serve_forever()

    asyncio.run(main())


def asyncio_client(url: str) -> int:
    import asyncio

    import wsproto_asyncio as ws

    async def main() -> int:
        dialer = ws.Dialer(enable_compression=True, max_message_size=READ_LIMIT, proxy=None)
        conn, _ = await dialer.dial(f"{url}/getCaseCount")
        count = int((await conn.read_message())[1])
        await conn.close()
        for case in range(1, count + 1):
            try:
                conn, _ = await dialer.dial(f"{url}/runCase?case={case}&agent={AGENT}")
            except (ws.WebSocketError, OSError):
                continue
            async with conn:
                try:
                    while True:
                        await conn.write_message(*await conn.read_message())
                except (ws.WebSocketError, OSError):
                    pass
        conn, _ = await dialer.dial(f"{url}/updateReports?agent={AGENT}")
        await conn.close_gracefully(timeout=5)
        return count

    return asyncio.run(main())


# -- wsproto_trio ----------------------------------------------------------------------


def trio_server(port: int) -> None:
    import functools

    import trio

    import wsproto_trio as ws

    async def echo(conn: ws.Conn) -> None:
        while True:
            await conn.write_message(*await conn.read_message())

    async def main() -> None:
        upgrader = ws.Upgrader(
            enable_compression=True, max_message_size=READ_LIMIT, check_origin=None
        )
        serve = functools.partial(ws.serve, upgrader=upgrader)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, echo, "127.0.0.1", port)
            print(f"wsproto_trio echo server on ws://127.0.0.1:{port}", flush=True)

    trio.run(main)


def trio_client(url: str) -> int:
    import trio

    import wsproto_trio as ws

    async def main() -> int:
        dialer = ws.Dialer(enable_compression=True, max_message_size=READ_LIMIT, proxy=None)
        conn, _ = await dialer.dial(f"{url}/getCaseCount")
        count = int((await conn.read_message())[1])
        await conn.aclose()
        for case in range(1, count + 1):
            try:
                conn, _ = await dialer.dial(f"{url}/runCase?case={case}&agent={AGENT}")
            except (ws.WebSocketError, OSError, trio.BrokenResourceError):
                continue
            async with conn:
                try:
                    while True:
                        await conn.write_message(*await conn.read_message())
                except (ws.WebSocketError, OSError, trio.BrokenResourceError):
                    pass
        conn, _ = await dialer.dial(f"{url}/updateReports?agent={AGENT}")
        await conn.close_gracefully(timeout=5)
        return count

    return trio.run(main)


SERVERS = {"sync": sync_server, "asyncio": asyncio_server, "trio": trio_server}
CLIENTS = {"sync": sync_client, "asyncio": asyncio_client, "trio": trio_client}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--adapter", choices=sorted(SERVERS), required=True)
    parser.add_argument("--port", type=int, default=9001, help="the server's port")
    args = parser.parse_args()
    if args.role == "server":
        SERVERS[args.adapter](args.port)
        return 0
    url = os.environ.get("AUTOBAHN_URL", "ws://127.0.0.1:9001")
    count = CLIENTS[args.adapter](url)
    print(f"wsproto_{args.adapter} client: ran {count} cases", file=sys.stderr)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "autobahn-peer"
    sys.exit(main())
