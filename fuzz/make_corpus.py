"""Write the seed corpora: ``fuzz/corpus/<target>/seed-*``.

    python fuzz/make_corpus.py           # (re)write the seeds
    python fuzz/make_corpus.py --check   # exit 1 if the seeds on disk are stale

Seeds are small, valid starting points the fuzzer mutates: frames of every
opcode and length encoding, fragmented and streamed messages, Close frames,
upgrade requests and responses, conversations. Each is run through its target
here, so a seed that crashes, or no longer reaches what it was written for,
fails loudly instead of silently wasting fuzzing time. Other files in the
corpus directories (inputs the fuzzer found) are left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import atheris

# Instrumented as in the targets (which would do it on import anyway); quietly.
with (
    contextlib.redirect_stderr(io.StringIO()),
    atheris.instrument_imports(include=["wsproto_core", "h11"]),
):
    import fuzz_client_handshake
    import fuzz_connection
    import fuzz_deflate
    import fuzz_frames
    import fuzz_handshake
    from _harness import SAMPLE_ACCEPT, SAMPLE_KEY, Layout, flip, join_input, split_input
    from fuzz_connection import BINARY, CLOSE, MESSAGE, PING, PONG, STREAM, TEXT, TRANSFER, Op
    from fuzz_deflate import BuildOp, Offer, Options, Param, ReadParams, RoundOp
    from wsproto_core import Opcode, Role
    from wsproto_core.frames import RSV1, serialize_frame

CORPUS = Path(__file__).resolve().parent / "corpus"
KEY = b"\x37\xfa\x21\x3d"  # RFC 6455 §5.7's example masking key


def masked(opcode: Opcode, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=KEY)


def plain(opcode: Opcode, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, rsv=rsv)


def seed(wire: bytes, options: int = 0, sizes: tuple[int, ...] = ()) -> bytes:
    return join_input(Layout(options, sizes, wire))


def _limit(index: int) -> int:
    return index << 3  # fuzz_frames option bits 3-5


def frames_seeds() -> dict[str, bytes]:
    text, binary, cont = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
    ping, pong, close = Opcode.PING, Opcode.PONG, Opcode.CLOSE
    bye = (1000).to_bytes(2, "big") + b"bye"
    long_header = bytes([0x82, 0xFF]) + (10).to_bytes(8, "big") + KEY
    return {
        # RFC 6455 §5.7's examples.
        "text-masked": seed(masked(text, b"Hello")),
        "text-unmasked": seed(plain(text, b"Hello")),
        "fragmented-masked": seed(
            masked(text, b"Hel", fin=False) + masked(cont, b"lo"), sizes=(1,)
        ),
        "fragmented-unmasked": seed(plain(text, b"Hel", fin=False) + plain(cont, b"lo")),
        "ping-pong-masked": seed(masked(ping, b"Hello") + masked(pong, b"Hello")),
        "ping-pong-unmasked": seed(plain(ping, b"Hello") + plain(pong), options=2),
        # Lengths: 7-bit, 16-bit (126 and 256), 64-bit (non-minimal, then truncated).
        "binary-125-masked": seed(masked(binary, bytes(range(125)))),
        "binary-126-masked": seed(masked(binary, bytes(range(126))), sizes=(3, 5)),
        "binary-256-unmasked": seed(plain(binary, bytes(range(256))), sizes=(2, 256)),
        "binary-64bit-length-masked": seed(long_header + flip(b"0123456789")),
        "binary-65536-truncated-masked": seed(
            bytes([0x82, 0xFF]) + (65536).to_bytes(8, "big") + KEY + bytes(64)
        ),
        "binary-over-limit-masked": seed(masked(binary, bytes(100)), options=_limit(4)),
        "close-masked": seed(masked(close, bye)),
        "close-empty-unmasked": seed(plain(close)),
        "close-then-more-unmasked": seed(plain(close, bye) + plain(text, b"ignored")),
        # A Ping between the fragments of a streamed message, then a Close.
        "streamed-with-ping-masked": seed(
            masked(text, b"Hel", fin=False)
            + masked(ping, b"p")
            + masked(cont, b"lo", fin=False)
            + masked(cont, "!é".encode())
            + masked(close, bye),
            options=1,
            sizes=(2, 7, 1),
        ),
        "streamed-binary-unmasked": seed(
            plain(binary, b"\x00\x01", fin=False) + plain(cont, b"") + plain(cont, b"\xff"),
            options=1,
        ),
        "extension-masked": seed(
            masked(text, flip(b"Hel"), fin=False, rsv=RSV1) + masked(cont, flip(b"lo")),
            options=4,
        ),
        "extension-bug-masked": seed(masked(binary, flip(b"\xdf!"), rsv=RSV1), options=4),
        "bad-utf8-masked": seed(masked(text, "κόσμε".encode() + b"\xed\xa0\x80"), sizes=(1,)),
        "reserved-opcode-masked": seed(masked(text, b"ok") + b"\x83\x80" + KEY),
    }


UPGRADE = (
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def request(extra: str = "", head: str = UPGRADE) -> bytes:
    return (head + extra + "\r\n").encode()


def handshake_seeds() -> dict[str, bytes]:
    frames = (
        masked(Opcode.TEXT, b"Hello")
        + masked(Opcode.PING, b"ping")
        + masked(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    )
    offers = "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: x-flip\r\n"
    return {
        "upgrade": seed(request()),
        "upgrade-same-origin-chunked": seed(
            request("Origin: http://server.example.com\r\n"), sizes=(1, 7, 30)
        ),
        "upgrade-then-frames": seed(request() + frames, sizes=(64,)),
        "upgrade-subprotocol-extension": seed(
            request(offers) + masked(Opcode.TEXT, flip(b"flipped"), rsv=RSV1), options=3
        ),
        "upgrade-cross-origin": seed(request("Origin: http://example.com\r\n")),
        "upgrade-rejected": seed(request(), options=16),
        "plain-get": seed(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        "post-with-body": seed(
            b"POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello"
        ),
        "bad-version": seed(request(head=UPGRADE.replace("Version: 13", "Version: 8"))),
        "no-key": seed(request(head=UPGRADE.replace(f"Sec-WebSocket-Key: {SAMPLE_KEY}\r\n", ""))),
        "http10": seed(request(head=UPGRADE.replace("HTTP/1.1", "HTTP/1.0"))),
        "truncated": seed(request()[:40]),
    }


ACCEPTED = (
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {SAMPLE_ACCEPT}\r\n"
)


def client_handshake_seeds() -> dict[str, bytes]:
    accepted = (ACCEPTED + "\r\n").encode()
    frames = plain(Opcode.TEXT, b"Hello") + plain(Opcode.PING) + plain(Opcode.CLOSE)
    negotiated = "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: x-flip\r\n"
    return {
        "101": seed(accepted),
        "101-chunked": seed(accepted, sizes=(1, 5)),
        "101-then-frames": seed(accepted + frames, options=4),
        "101-subprotocol-extension": seed(
            (ACCEPTED + negotiated + "\r\n").encode() + plain(Opcode.BINARY, flip(b"x"), rsv=RSV1),
            options=3,
        ),
        "101-wrong-accept": seed(accepted.replace(b"s3pPL", b"AAAAA")),
        "100-continue-then-101": seed(b"HTTP/1.1 100 Continue\r\n\r\n" + accepted),
        "403": seed(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 9\r\n\r\nforbidden"
        ),
        "302": seed(
            b"HTTP/1.1 302 Found\r\nLocation: ws://example.org/\r\nContent-Length: 0\r\n\r\n"
        ),
        "401-chunked-body": seed(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
        "500-body-until-eof": seed(b"HTTP/1.1 500 Oops\r\n\r\nbody"),
    }


def connection_seeds() -> dict[str, bytes]:
    encode = fuzz_connection.encode
    server = fuzz_connection.SERVER
    return {
        "hello": encode(0, [Op(TEXT, data=b"Hello"), Op(TRANSFER)]),
        "both-ways": encode(
            0,
            [
                Op(TEXT, data=b"Hi", as_str=True),
                Op(BINARY, server, b"\x00\xff"),
                Op(TRANSFER),
                Op(PING, server, b"are you there"),
                Op(PONG, data=b"unsolicited"),
                Op(TRANSFER),
            ],
        ),
        "fragmented-streamed": encode(
            3,
            [
                Op(TEXT, data=b"Hel", fin=False),
                Op(PING, data=b"p"),
                Op(TRANSFER),
                Op(TEXT, data="lo é".encode()),
                Op(BINARY, server, b"ab", fin=False),
                Op(BINARY, server, b"", fin=False),
                Op(BINARY, server, b"cd"),
                Op(TRANSFER),
            ],
        ),
        # 16-bit and 64-bit lengths.
        "big": encode(
            0,
            [Op(BINARY, data=b"ab", repeat=1), Op(TEXT, server, b"xyz", repeat=100), Op(TRANSFER)],
        ),
        "close-handshake": encode(
            0, [Op(CLOSE, data=b"bye", arg=1), Op(TRANSFER), Op(TEXT, data=b"late")]
        ),
        "simultaneous-close": encode(
            0, [Op(CLOSE, arg=0), Op(CLOSE, server, arg=12), Op(TRANSFER)]
        ),
        "misuse": encode(
            0,
            [
                Op(PING, data=bytes(126)),
                Op(CLOSE, data=b"why", arg=6),
                Op(TEXT, data=b"a", fin=False),
                Op(BINARY, data=b"b"),
                Op(TEXT, data=b"b"),
                Op(CLOSE, data=bytes(124), arg=1),
                Op(CLOSE, arg=13),
                Op(TEXT, data=b"too late"),
                Op(TRANSFER),
            ],
        ),
        "send-message": encode(
            0,
            [
                Op(MESSAGE, data=b"text", as_str=True, arg=1),
                Op(MESSAGE, data=b"\x00", arg=2),
                Op(MESSAGE, server, b"p", arg=9),
                Op(MESSAGE, server, b"q", arg=10),
                Op(MESSAGE, data=b"x", arg=3),
                Op(MESSAGE, data=b"\x03\xe8", arg=8),
                Op(TRANSFER),
            ],
        ),
        "extension": encode(
            16,
            [
                Op(TEXT, data=b"flip", fin=False),
                Op(TEXT, data=b"ped"),
                Op(BINARY, server, b"\x00\x20"),
                Op(TRANSFER),
            ],
        ),
        "no-auto-pong-stream-toggle": encode(
            12,
            [
                Op(PING, data=b"1"),
                Op(STREAM, server),
                Op(TEXT, data=b"streamed"),
                Op(TRANSFER),
                Op(STREAM, server),
                Op(TEXT, data=b"whole"),
                Op(TRANSFER),
            ],
        ),
    }


def _deflate(data: bytes, bits: int = 15) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


#: What each deflate seed reaches (``fuzz_deflate.run``), checked when writing them.
DEFLATE_OUTCOMES: dict[str, tuple[str, int]] = {}


def deflate_seeds() -> dict[str, bytes]:
    """Seeds of each mode of fuzz_deflate, and what each must reach."""
    write_read, d = fuzz_deflate.write_read, fuzz_deflate
    client = ReadParams(role=Role.CLIENT)
    # RFC 7692 §7.2.3's examples, as a client reads them from a server.
    hello = bytes.fromhex("f248cdc9c90700")
    hello_again = bytes.fromhex("f200110000")
    stored = bytes.fromhex("000500faff48656c6c6f00")
    two_blocks = bytes.fromhex("f248050000 00ffffcac9c90700".replace(" ", ""))
    bfinal = bytes.fromhex("f348cdc9c9070000")
    rsv1 = {"rsv": RSV1}
    text, cont = Opcode.TEXT, Opcode.CONTINUATION
    bomb = _deflate(bytes(100_000))
    seeds: dict[str, tuple[bytes, tuple[str, int]]] = {
        "read-rfc7692-examples": (
            write_read(
                client,
                Layout(
                    0,
                    (3,),
                    plain(text, hello, **rsv1)
                    + plain(text, hello_again, **rsv1)
                    + plain(text, stored, **rsv1)
                    + plain(text, two_blocks, **rsv1)
                    + plain(text, hello[:3], fin=False, **rsv1)
                    + plain(cont, hello[3:]),
                ),
            ),
            ("messages", 5),
        ),
        "read-bfinal-masked": (
            write_read(ReadParams(), Layout(0, (), masked(text, bfinal, **rsv1))),
            ("messages", 1),
        ),
        "read-bomb-streamed": (
            write_read(
                ReadParams(stream=True, limit=5000),
                Layout(0, (40,), masked(Opcode.BINARY, bomb, **rsv1)),
            ),
            ("error", 1009),
        ),
        "read-garbage-text": (
            write_read(
                ReadParams(remote_nct=True, remote_bits=9),
                Layout(0, (), masked(text, hello, **rsv1) + masked(text, b"\xff\xfe", **rsv1)),
            ),
            ("error", 1007),
        ),
        "build-context": (
            write_read(
                ReadParams(limit=25, remote_bits=10),
                Layout(
                    0,
                    (7,),
                    d.write_program(
                        [
                            BuildOp(d.TEXT, d.COMPRESS, b"Hello, world"),
                            BuildOp(d.CONTROL, data=b"ping"),
                            BuildOp(d.TEXT, d.COMPRESS, b"Hello, world", fragment=2),
                            BuildOp(d.BINARY, data=b"plain"),
                            BuildOp(d.BINARY, d.COMPRESS | d.SWITCH | d.BIG, b"ab", repeat=3),
                            BuildOp(d.BINARY, d.COMPRESS | d.BIG, b"ab", repeat=20),
                        ]
                    ),
                ),
                build=True,
            ),
            ("error", 1009),
        ),
        "build-no-context-takeover-broken": (
            write_read(
                ReadParams(remote_nct=True),
                Layout(
                    0,
                    (),
                    d.write_program(
                        [
                            BuildOp(d.TEXT, d.COMPRESS, b"Hello, Hello"),
                            BuildOp(d.TEXT, d.COMPRESS | d.SWITCH, b"Hello, Hello"),
                        ]
                    ),
                ),
                build=True,
            ),
            ("error", 1007),
        ),
        "build-bfinal-then-more": (
            write_read(
                ReadParams(role=Role.CLIENT),
                Layout(
                    0,
                    (),
                    d.write_program(
                        [
                            BuildOp(d.TEXT, d.COMPRESS | d.BFINAL, b"Hello"),
                            BuildOp(d.TEXT, d.COMPRESS, b"world"),
                        ]
                    ),
                ),
                build=True,
            ),
            ("messages", 2),
        ),
        "build-client-corrupt-wide": (
            write_read(
                ReadParams(role=Role.CLIENT, remote_nct=True, remote_bits=8, stream=True),
                Layout(
                    0,
                    (),
                    d.write_program(
                        [
                            BuildOp(d.BINARY, d.COMPRESS | d.BFINAL, b"bfinal"),
                            BuildOp(
                                d.BINARY, d.COMPRESS | d.WIDE | d.BIG, bytes(range(200)), repeat=9
                            ),
                            BuildOp(
                                d.BINARY, d.COMPRESS | d.CORRUPT, b"corrupt me", corrupt=(0, 0xFF)
                            ),
                            BuildOp(d.RAW, data=b"\x88\x00"),
                        ]
                    ),
                ),
                build=True,
            ),
            ("error", 1002),
        ),
        "roundtrip-defaults": (
            d.write_roundtrip(
                Options(client_bits=True),
                Options(),
                [
                    RoundOp(d.MESSAGE, flag=True, data=b"Hello, Hello, Hello!" * 2),
                    RoundOp(d.MESSAGE, d.SERVER, data=bytes(40), transfer=True),
                    RoundOp(d.MESSAGE, data=b"short"),
                ],
            ),
            ("roundtrip", 3),
        ),
        "roundtrip-options": (
            d.write_roundtrip(
                Options(client_nct=True, server_bits=9, client_bits=10, threshold=0, stream=True),
                Options(server_nct=True, client_bits=9, level=9, limit=d.TIGHT),
                [
                    RoundOp(d.MESSAGE, flag=True, data="héllo ".encode() * 9, fragment=5, twist=3),
                    RoundOp(d.LEVEL, d.SERVER, arg=1),
                    RoundOp(d.MESSAGE, d.SERVER, big=True, data=b"xyz", repeat=40, fragment=1),
                    RoundOp(d.ENABLE, transfer=True),
                    RoundOp(d.MESSAGE, data=b"compressed again", fragment=4, twist=2),
                    RoundOp(d.PREPARED, d.SERVER, data=b"to everyone " * 4, twist=0),
                    RoundOp(d.PREPARED, reuse=True),
                    RoundOp(d.PREPARED, d.SERVER, reuse=True, transfer=True),
                    RoundOp(d.MESSAGE, d.SERVER, data=b""),
                ],
            ),
            ("roundtrip", 9),
        ),
        "roundtrip-level-mid-message": (
            d.write_roundtrip(
                Options(client_bits=True),
                Options(),
                [
                    RoundOp(
                        d.MESSAGE, data=b"a" * 64, fragment=32, twist=21
                    ),  # level (21 >> 1) % 11 - 1 = 9
                    RoundOp(d.MESSAGE, data=b"a" * 64),
                ],
            ),
            ("roundtrip", 2),
        ),
        "handshake-plain": (
            d.write_handshake(Options(), [Offer(0, (Param(3),))]),
            ("accepted", 0),
        ),
        "handshake-offers": (
            d.write_handshake(
                Options(server_nct=True, client_bits=10),
                [
                    Offer(1, (Param(2, 8), Param(2, 9))),  # server_max_window_bits twice
                    Offer(2, (Param(0),)),
                    Offer(0, (Param(2, 2, quoted=True), Param(3, 4), Param(1)), True, 1),
                ],
            ),
            ("accepted", 4),
        ),
        "handshake-declined": (
            d.write_handshake(
                Options(),
                [Offer(0, (Param(0, 0),)), Offer(0, (Param(2, 10),)), Offer(0, (Param("x"),))],
            ),
            ("declined", 0),
        ),
        "handshake-malformed": (
            d.write_handshake(Options(), [Offer(0, (Param(3, '10"'),))]),
            ("malformed", 0),
        ),
    }
    DEFLATE_OUTCOMES.update((name, outcome) for name, (_, outcome) in seeds.items())
    return {name: data for name, (data, _) in seeds.items()}


SEEDS: dict[str, Callable[[], dict[str, bytes]]] = {
    "frames": frames_seeds,
    "handshake": handshake_seeds,
    "client_handshake": client_handshake_seeds,
    "connection": connection_seeds,
    "deflate": deflate_seeds,
}


#: The handshake seeds that must open a connection; the others must not.
OPENING = {
    "handshake": {
        "upgrade",
        "upgrade-same-origin-chunked",
        "upgrade-then-frames",
        "upgrade-subprotocol-extension",
    },
    "client_handshake": {
        "101",
        "101-chunked",
        "101-then-frames",
        "101-subprotocol-extension",
        "100-continue-then-101",
    },
}


def _opens(target: str, data: bytes) -> bool:
    run: fuzz_handshake.ServerRun | fuzz_client_handshake.ClientRun
    layout = split_input(data)
    if target == "handshake":
        run = fuzz_handshake.ServerRun(layout.options)
    else:
        run = fuzz_client_handshake.ClientRun(layout.options)
    for chunk in layout.chunks():
        run.feed(chunk)
    return run.reader is not None


def _check_outcomes(target: str, seeds: dict[str, bytes]) -> None:
    """Replay the seeds through their target; check the handshake seeds' outcomes."""
    module = {
        "frames": fuzz_frames,
        "handshake": fuzz_handshake,
        "client_handshake": fuzz_client_handshake,
        "connection": fuzz_connection,
        "deflate": fuzz_deflate,
    }[target]
    for name, data in seeds.items():
        module.TestOneInput(data)
        if target == "deflate":
            outcome = fuzz_deflate.run(data)
            expected = DEFLATE_OUTCOMES[name]
            assert outcome == expected, f"deflate/{name} reached {outcome}, not {expected}"
        if target in OPENING:
            expected = name in OPENING[target]
            assert _opens(target, data) is expected, f"{target}/{name} should open: {expected}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that seeds are current")
    args = parser.parse_args(argv)
    stale = []
    total = 0
    for target, make in SEEDS.items():
        seeds = make()
        _check_outcomes(target, seeds)
        directory = CORPUS / target
        wanted = {f"seed-{name}": data for name, data in seeds.items()}
        existing = {path.name for path in directory.glob("seed-*")}
        for name, data in wanted.items():
            path = directory / name
            total += len(data)
            if path.is_file() and path.read_bytes() == data:
                continue
            stale.append(path)
            if not args.check:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        for name in sorted(existing - wanted.keys()):
            stale.append(directory / name)
            if not args.check:
                (directory / name).unlink()
    if args.check and stale:
        print("stale seeds (run python fuzz/make_corpus.py):", *stale, sep="\n  ")
        return 1
    print(f"{sum(len(make()) for make in SEEDS.values())} seeds, {total} bytes", end="")
    print(f"; {len(stale)} written or removed" if stale else "; all current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
