"""Measure permessage-deflate in the core: ratio, speed, and the bomb's memory.

Run ``python docs/measure_deflate.py`` (``--messages N`` to change the run
length). Everything happens in memory between a client and a server core, so
the figures are the protocol layer's own cost, without sockets. The numbers
quoted in docs/compression.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import tracemalloc
import zlib

from wsproto_core import (
    ClientConnection,
    ClientPerMessageDeflate,
    Connection,
    ConnectionPair,
    ExtensionOffer,
    Message,
    ReadLimitError,
    Role,
    ServerConnection,
    ServerPerMessageDeflate,
)
from wsproto_core.frames import RSV1, serialize_frame


def json_messages(count: int, size: int = 16 * 1024, seed: int = 7) -> list[str]:
    """Realistic JSON messages of about ``size`` bytes: records with varying values."""
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    messages = []
    for index in range(count):
        records = []
        text = ""
        while len(text) < size:
            records.append(
                {
                    "id": index * 1000 + len(records),
                    "name": f"{rng.choice(words)}-{rng.randrange(10_000)}",
                    "price": round(rng.uniform(1, 500), 2),
                    "tags": rng.sample(words, 3),
                    "active": rng.random() < 0.5,
                }
            )
            text = json.dumps({"seq": index, "records": records})
        messages.append(text)
    return messages


def stream(messages: list[str], server_options: dict[str, bool] | None) -> tuple[float, float]:
    """Send ``messages`` server to client; return (wire bytes / raw bytes, messages/s)."""
    if server_options is None:
        pair = ConnectionPair.open()
    else:
        pair = ConnectionPair.open(
            ClientConnection("ws://bench/", extensions=[ClientPerMessageDeflate()]),
            ServerConnection(extensions=[ServerPerMessageDeflate(**server_options)]),
        )
    server, client = pair.server, pair.client
    client.max_message_size = None
    raw = wire = 0
    start = time.perf_counter()
    for text in messages:
        server.send_text(text)
        data = server.data_to_send()
        wire += len(data)
        raw += len(text)
        client.receive_data(data)
        event = client.next_event()
        if not isinstance(event, Message) or event.data != text:
            raise RuntimeError(f"the message did not round-trip: {event!r}")
    elapsed = time.perf_counter() - start
    return wire / raw, len(messages) / elapsed


def bomb(limit: int = 1024 * 1024, expanded: int = 1024**3, read_size: int = 65536) -> str:
    """Feed a compressed message that inflates to ``expanded`` bytes; report memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1024 * 1024)
    payload = b"".join(compressor.compress(zeros) for _ in range(expanded // len(zeros)))
    payload = (payload + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = serialize_frame(2, payload, rsv=RSV1, mask_key=b"\x01\x02\x03\x04")
    negotiated = ServerPerMessageDeflate().negotiate(ExtensionOffer("permessage-deflate"))
    if negotiated is None:
        raise RuntimeError("the server declined a plain permessage-deflate offer")
    server = Connection(Role.SERVER, extensions=[negotiated[1]], max_message_size=limit)
    tracemalloc.start()
    outcome = "no error"
    try:
        for offset in range(0, len(frame), read_size):
            server.receive_data(frame[offset : offset + read_size])
            while server.next_event() is not None:
                pass
    except ReadLimitError as exc:
        outcome = f"closed with {exc.code} after {offset + read_size} bytes read"
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (
        f"{len(payload) / 1024:.0f} KiB inflating to {expanded / 1024**3:.0f} GiB, "
        f"read limit {limit / 1024**2:.0f} MiB: {outcome}; peak traced memory "
        f"{peak / 1024**2:.2f} MiB"
    )


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--bomb-gib", type=int, default=1)
    args = parser.parse_args()
    messages = json_messages(args.messages)
    raw_mb = sum(map(len, messages)) / 1e6
    print(
        f"{args.messages} JSON messages of ~16 KiB, server to client, in memory ({raw_mb:.1f} MB)"
    )
    print(f"{'configuration':<34} {'wire/raw':>9} {'msg/s':>9} {'MB/s':>8}")
    for name, options in [
        ("no compression", None),
        ("deflate, context takeover", {}),
        ("deflate, no context takeover", {"server_no_context_takeover": True}),
    ]:
        ratio, rate = stream(messages, options)
        mb_s = rate * raw_mb / args.messages
        print(f"{name:<34} {ratio:>9.3f} {rate:>9.0f} {mb_s:>8.1f}")
    print(bomb(expanded=args.bomb_gib * 1024**3))


if __name__ == "__main__":
    main()
