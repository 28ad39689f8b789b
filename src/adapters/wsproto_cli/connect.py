"""``wsproto connect``: an interactive WebSocket client, like wscat or websocat.

Lines read from stdin are sent, messages received are printed to stdout,
and everything else (pongs, how the connection ended, errors) goes to
stderr, so ``wsproto connect URL < in > out`` keeps only messages in
``out``. What the adapters share is here: the options, reading stdin,
printing, and turning errors into one line. The three adapters each drive
the connection in their idiom: two threads, two tasks, or a nursery.

stdin is read by a thread of its own with ``os.read``, for every adapter:
a terminal, a pipe and a file all work the same way, and a thread blocked
on stdin cannot hold up the exit (Python's buffered stdin could).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wsproto_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    CloseCode,
    CloseError,
    Connection,
    HandshakeError,
    HandshakeResponse,
    LocalProtocolError,
    MessageType,
    RemoteProtocolError,
    WebSocketError,
    WebSocketURI,
    format_close_message,
    parse_uri,
)

if TYPE_CHECKING:
    import asyncio
    import queue

    import trio

    import wsproto_asyncio
    import wsproto_sync
    import wsproto_trio

__all__ = [
    "DESCRIPTION",
    "ClientSession",
    "Options",
    "Ping",
    "add_arguments",
    "describe_error",
    "run_connect",
]

ADAPTERS = ("sync", "asyncio", "trio")
#: Seconds to wait for the server's Close after ours, and at most for its
#: answers before that.
CLOSE_WAIT = 3.0
#: How long the server must be quiet, once it has read all our input, before we close.
LINGER = 0.25
#: The payload of the Ping that follows the input: its Pong says the server read it all.
_BARRIER = b"wsproto connect: end of input"
#: Bytes of a binary message shown in hex; the rest is elided.
HEX_SHOWN = 32
#: Lines read ahead of the connection (then reading stdin waits).
LINES_AHEAD = 16
# Exit statuses (2 is argparse's, for usage errors).
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

DESCRIPTION = f"""\
Connect to a WebSocket server, send each line read from stdin as a message,
and print each message received on stdout.

  /ping [data]   send a Ping (data: at most 125 bytes); the Pong shows on stderr
  //...          send a line that starts with "/" (one "/" is dropped)
  Ctrl-D (EOF)   wait for the answers, close with 1000, wait for the server's Close

At the end of the input, a Ping follows the last message; once its Pong
shows that the server has read everything, the client waits until the
server has been quiet for --linger seconds (at most {CLOSE_WAIT:g} s in all),
then closes, and waits up to {CLOSE_WAIT:g} s more for the server's Close.

Text messages are printed as they are, one per line. A binary message is
printed as one line, "[binary N bytes] HEX", with its first {HEX_SHOWN} bytes
in hex and "..." when there are more. Pongs, the server's Close and errors
go to stderr. Exit status: 0 after a clean close (ours, or the server's with
1000, 1001 or no code), 1 when connecting failed or the connection ended
otherwise, 130 on Ctrl-C, 2 for a usage error.

  echo hello | wsproto connect ws://127.0.0.1:8080/
"""


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    url: str
    uri: WebSocketURI
    adapter: str = "sync"
    binary: bool = False
    headers: Sequence[tuple[str, str]] = ()
    subprotocols: Sequence[str] = ()
    compression: bool = False
    max_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    timeout: float = 10.0
    linger: float = LINGER
    ssl_context: ssl.SSLContext | None = None
    verbose: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``wsproto connect``'s arguments to ``parser``."""
    parser.add_argument("url", help="ws:// or wss:// (http:// and https:// mean the same)")
    parser.add_argument(
        "--adapter", choices=ADAPTERS, default="sync", help="the adapter to connect with (sync)"
    )
    parser.add_argument(
        "--binary",
        action="store_true",
        help="send each line as a binary message: its bytes, without the newline",
    )
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header to send (repeatable), e.g. 'Origin: http://example.com'",
    )
    parser.add_argument(
        "-s",
        "--subprotocol",
        dest="subprotocols",
        action="append",
        default=[],
        metavar="NAME",
        help="a subprotocol to offer (repeatable, in order of preference)",
    )
    parser.add_argument(
        "--compression", action="store_true", help="offer permessage-deflate (RFC 7692)"
    )
    parser.add_argument(
        "--max-size",
        type=_size,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help=f"the largest message accepted (default {DEFAULT_MAX_MESSAGE_SIZE}; 0: no limit)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="for connecting, TLS and the handshake together (10)",
    )
    parser.add_argument(
        "--linger",
        type=_non_negative_seconds,
        default=LINGER,
        metavar="SECONDS",
        help="at the end of the input, how long the server must be quiet before we close "
        f"({LINGER:g})",
    )
    parser.add_argument("--cafile", metavar="FILE", help="trust the CA certificates in FILE")
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="say on stderr when connected, and to what"
    )


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not 'Name: value'")
    return name, value.strip()


def _size(text: str) -> int:
    size = int(text)
    if size < 0:
        raise argparse.ArgumentTypeError("a size is 0 or more")
    return size


def _non_negative_seconds(text: str) -> float:
    seconds = float(text)
    if not seconds >= 0:
        raise argparse.ArgumentTypeError("a time is 0 seconds or more")
    return seconds


def _seconds(text: str) -> float:
    seconds = float(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError("a timeout is more than 0 seconds")
    return seconds


def run_connect(args: argparse.Namespace) -> int:
    """Run ``wsproto connect``; return the exit status.

    Every failure to connect is one line on stderr, never a traceback.
    """
    try:
        uri = parse_uri(args.url)
    except ValueError as exc:
        return _fail(f"invalid URL: {exc}")
    try:
        context = _ssl_context(args.cafile, args.insecure) if uri.secure else None
    except (OSError, ssl.SSLError) as exc:
        return _fail(f"cannot load {args.cafile}: {exc.strerror or exc}")
    options = Options(
        url=args.url,
        uri=uri,
        adapter=args.adapter,
        binary=args.binary,
        headers=args.headers,
        subprotocols=args.subprotocols,
        compression=args.compression,
        max_size=args.max_size or None,
        timeout=args.timeout,
        linger=args.linger,
        ssl_context=context,
        verbose=args.verbose,
    )
    try:
        if options.adapter == "asyncio":
            import asyncio

            return asyncio.run(_run_asyncio(options))
        if options.adapter == "trio":
            import trio

            return trio.run(_run_trio, options)
        return _run_sync(options)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (WebSocketError, OSError) as exc:  # TimeoutError and ssl.SSLError are OSErrors
        return _fail(describe_error(exc, options))


def _ssl_context(cafile: str | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _fail(message: str) -> int:
    print(f"wsproto connect: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


def describe_error(error: BaseException, options: Options) -> str:
    """Say in one line why connecting failed."""
    where = f"{options.uri.host}:{options.uri.port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS handshake with {where} failed: {error.verify_message or error.reason}"
    if isinstance(error, ssl.SSLError):
        text = re.sub(r" \(_ssl\.c:\d+\)$", "", str(error.strerror or error.reason or error))
        return f"TLS handshake with {where} failed: {text}"
    if isinstance(error, HandshakeError):
        return _describe_handshake_error(error)
    if isinstance(error, LocalProtocolError):
        return f"cannot send this handshake: {error}"
    if isinstance(error, TimeoutError):
        return (
            f"timed out after {options.timeout:g} s connecting to {options.url} "
            "(connection, TLS and handshake)"
        )
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {options.uri.host!r}: {error.strerror or error}"
    if isinstance(error, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused"
    if isinstance(error, OSError):
        return f"cannot connect to {where}: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


def _describe_handshake_error(error: HandshakeError) -> str:
    response = error.response
    if response is None:
        return f"handshake failed: {error.reason}"
    status = f"HTTP {response.status_code} {response.reason}".rstrip()
    lines = response.body.decode("utf-8", "replace").strip().splitlines()
    detail = lines[0].strip() if lines else ""
    # A body that starts by repeating the status adds only what follows it.
    for prefix in (f"{response.status_code} {response.reason}", str(response.status_code)):
        if detail.startswith(prefix):
            detail = detail[len(prefix) :].lstrip(" :-")
            break
    detail = detail[:200]
    return f"handshake failed: {status}" + (f" ({detail})" if detail else "")


# -- what the adapters share ---------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    """A line asked for a Ping with this payload."""

    payload: bytes


@dataclass
class ClientSession:
    """The connection's side of the terminal: printing, pings, and how it ended.

    Args:
        options: the command line's options.
        protocol: the Conn's core connection (its ``protocol``).
    """

    options: Options
    protocol: Connection
    #: Set when we start the closing handshake: the server's answer is then no news.
    closing: bool = False
    #: What ended the reading: a ``CloseError``, another error, or ``None`` yet.
    end: BaseException | None = None
    _pings: dict[bytes, list[float]] = field(default_factory=dict, init=False)
    _last_message: float = field(default=0.0, init=False)
    _drain_deadline: float | None = field(default=None, init=False)
    _barrier_answered: float | None = field(default=None, init=False)

    def connected(self, response: HandshakeResponse) -> None:
        """Say what was negotiated (with ``--verbose``) and how to use the prompt."""
        if self.options.verbose:
            parts = [f"HTTP {response.status_code}"]
            if response.subprotocol:
                parts.append(f"subprotocol {response.subprotocol}")
            parts += [extension.name for extension in self.protocol.extensions]
            _note(f"connected to {self.options.url} ({', '.join(parts)})")
        if _isatty(0):
            _note("type a line to send it, /ping [data] to ping, Ctrl-D to close")

    def parse(self, line: bytes) -> Ping | tuple[MessageType, bytes | str] | None:
        """What to send for a line of input: a message, or a Ping; ``None``: nothing."""
        if line.startswith(b"//"):
            line = line[1:]
        elif line == b"/ping" or line.startswith(b"/ping "):
            payload = line[6:]
            if len(payload) > 125:
                _note("a ping carries at most 125 bytes; not sent")
                return None
            self._pings.setdefault(payload, []).append(time.monotonic())
            return Ping(payload)
        if self.options.binary:
            return MessageType.BINARY, line
        return MessageType.TEXT, line.decode("utf-8", "replace")

    def show(self, message_type: MessageType, data: str | bytes) -> None:
        """Print a message received on stdout."""
        self._last_message = time.monotonic()
        if isinstance(data, str):
            out = data.encode() + b"\n"
        else:
            shown = data[:HEX_SHOWN].hex() + ("..." if len(data) > HEX_SHOWN else "")
            out = f"[binary {len(data)} bytes] {shown}".rstrip().encode() + b"\n"
        try:
            sys.stdout.buffer.write(out)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # Nobody reads our output any more (``| head``): drop the rest quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def pong(self, payload: bytes) -> None:
        """Print a Pong, with the round trip when it answers one of our Pings (a pong handler)."""
        if payload == _BARRIER and self._drain_deadline is not None:
            self._barrier_answered = time.monotonic()
            return
        sent = self._pings.get(payload)
        if sent:
            elapsed = (time.monotonic() - sent.pop(0)) * 1000
            when = f" after {elapsed:.1f} ms"
        else:
            when = " (unsolicited)"
        _note(f"pong {payload.decode('utf-8', 'replace')!r}{when}" if payload else f"pong{when}")

    def start_draining(self) -> bytes:
        """The input has ended: return the payload of the Ping to send after it.

        Then wait until :meth:`drained` says to close.
        """
        self._drain_deadline = time.monotonic() + CLOSE_WAIT
        return _BARRIER

    def drained(self) -> bool:
        """Whether to close now: the server has read all our input, then was quiet for a while.

        Polled; it gives up waiting ``CLOSE_WAIT`` seconds after :meth:`start_draining`.
        """
        now = time.monotonic()
        if self._drain_deadline is None or now >= self._drain_deadline:
            return True
        if self._barrier_answered is None:
            return False
        return now - max(self._barrier_answered, self._last_message) >= self.options.linger

    def ended(self, error: BaseException) -> None:
        """Record what ended the reading; say so unless it answers our own Close."""
        self.end = error
        if self.closing and isinstance(error, CloseError):
            return
        if isinstance(error, CloseError):
            if error.code == CloseCode.ABNORMAL_CLOSURE:
                _note("connection lost: closed without a Close frame (1006)")
            else:
                reason = f" {error.text!r}" if error.text else ""
                _note(f"closed by the server: {error.code}{reason}")
        elif isinstance(error, RemoteProtocolError):
            _note(f"closed: {error.reason} (sent {error.code})")
        else:
            _note(f"connection lost: {error}")

    def exit_status(self, interrupted: bool) -> int:
        """The exit status, once the connection is closed."""
        if interrupted:
            return EXIT_INTERRUPTED
        if self.closing:
            if self.protocol.close_received is None:
                _note(f"the server did not answer our Close within {CLOSE_WAIT:g} s")
            return EXIT_OK
        if isinstance(self.end, CloseError) and self.end.normal:
            return EXIT_OK
        return EXIT_FAILED


_NORMAL_CLOSE = format_close_message(CloseCode.NORMAL_CLOSURE)
_POLL = 0.05  # seconds between looks at ClientSession.drained()


def _note(text: str) -> None:
    with _NOTE_LOCK:  # the reader and the writer both take notes: keep lines whole
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


_NOTE_LOCK = threading.Lock()


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _start_stdin_thread(deliver: Callable[[bytes | None], object]) -> None:
    """Read stdin in a daemon thread: ``deliver(line)`` per line, then ``deliver(None)``.

    ``deliver`` may block (that is the back-pressure); when it raises, the
    thread stops.
    """

    def read_lines() -> None:
        pending = b""
        try:
            while True:
                try:
                    data = os.read(0, 65536)
                except OSError:
                    data = b""  # no stdin at all: as good as an empty one
                if not data:
                    break
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    deliver(line.removesuffix(b"\r"))
            if pending:
                deliver(pending.removesuffix(b"\r"))
            deliver(None)
        except BaseException:  # the connection is gone: nobody wants the input
            return

    threading.Thread(target=read_lines, name="stdin", daemon=True).start()


# -- wsproto_sync: a reading thread, and the main thread writes --------------------------------


def _run_sync(options: Options) -> int:
    import queue

    import wsproto_sync as ws

    dialer = ws.Dialer(
        handshake_timeout=options.timeout,
        subprotocols=options.subprotocols,
        enable_compression=options.compression,
        max_message_size=options.max_size,
        ssl_context=options.ssl_context,
    )
    conn, response = dialer.dial(options.url, options.headers)
    with conn:
        session = ClientSession(options, conn.protocol)
        session.connected(response)
        conn.set_pong_handler(session.pong)
        # None: stop sending, at the end of stdin or of the connection.
        lines: queue.Queue[bytes | None] = queue.Queue(LINES_AHEAD)

        def read_pump() -> None:
            try:
                while True:
                    session.show(*conn.read_message())
            except (ws.WebSocketError, OSError) as exc:
                session.ended(exc)
            finally:
                # The main thread waits for lines: wake it. A full queue means
                # it is busy sending, and its next write will fail anyway.
                with suppress(queue.Full):
                    lines.put_nowait(None)

        reader = threading.Thread(target=read_pump, name="reader", daemon=True)
        reader.start()
        _start_stdin_thread(lines.put)
        interrupted = False
        try:
            _sync_send_lines(conn, session, lines)
        except KeyboardInterrupt:
            interrupted = True
        if reader.is_alive() and not interrupted:
            with suppress(ws.WebSocketError, OSError):
                conn.write_control(ws.MessageType.PING, session.start_draining())
            while reader.is_alive() and not session.drained():
                reader.join(_POLL)  # it prints the answers as they come
        if reader.is_alive():
            session.closing = True
            with suppress(ws.WebSocketError, OSError):
                conn.write_control(
                    ws.MessageType.CLOSE, _NORMAL_CLOSE, time.monotonic() + CLOSE_WAIT
                )
            reader.join(CLOSE_WAIT)  # it prints what arrives before the server's Close
    reader.join(1.0)  # closing the connection woke it
    return session.exit_status(interrupted)


def _sync_send_lines(
    conn: wsproto_sync.Conn, session: ClientSession, lines: queue.Queue[bytes | None]
) -> None:
    import wsproto_sync as ws

    while (line := lines.get()) is not None:
        action = session.parse(line)
        if action is None:
            continue
        try:
            if isinstance(action, Ping):
                conn.write_control(ws.MessageType.PING, action.payload)
            else:
                conn.write_message(*action)
        except (ws.WebSocketError, OSError):
            return  # the reader says why


# -- wsproto_asyncio: a reading task, and the main task writes --------------------------------


async def _run_asyncio(options: Options) -> int:
    import asyncio

    import wsproto_asyncio as ws

    dialer = ws.Dialer(
        handshake_timeout=options.timeout,
        subprotocols=options.subprotocols,
        enable_compression=options.compression,
        max_message_size=options.max_size,
        ssl_context=options.ssl_context,
    )
    conn, response = await dialer.dial(options.url, options.headers)
    async with conn:
        session = ClientSession(options, conn.protocol)
        session.connected(response)
        conn.set_pong_handler(session.pong)
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        # The queue's bound, for the stdin thread to wait on: a thread can't
        # await ``put()``, and a coroutine made for a closed loop would warn.
        room = threading.Semaphore(LINES_AHEAD)

        def deliver(line: bytes | None) -> None:
            room.acquire()
            loop.call_soon_threadsafe(lines.put_nowait, line)  # closed: raises, the thread ends

        async def read_pump() -> None:
            try:
                while True:
                    session.show(*await conn.read_message())
            except (ws.WebSocketError, OSError) as exc:
                session.ended(exc)

        reader = asyncio.create_task(read_pump())
        sender = asyncio.create_task(_asyncio_send_lines(conn, session, lines, room))
        reader.add_done_callback(lambda _: sender.cancel())  # nothing more to send to
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            sender.cancel()

        loop.add_signal_handler(signal.SIGINT, interrupt)
        _start_stdin_thread(deliver)
        await asyncio.wait({sender})  # ends at EOF, when the reader ends, or on Ctrl-C
        if not reader.done() and not interrupted:
            with suppress(ws.WebSocketError, OSError):
                await conn.write_control(ws.MessageType.PING, session.start_draining())
            while not reader.done() and not session.drained():
                await asyncio.wait({reader}, timeout=_POLL)  # it prints the answers as they come
        if not reader.done():
            session.closing = True
            # The reader task goes on reading: it prints what arrives before the Close.
            await conn.close_gracefully(timeout=CLOSE_WAIT)
        await asyncio.wait({reader}, timeout=1.0)
        reader.cancel()
    return session.exit_status(interrupted)


async def _asyncio_send_lines(
    conn: wsproto_asyncio.Conn,
    session: ClientSession,
    lines: asyncio.Queue[bytes | None],
    room: threading.Semaphore,
) -> None:
    import wsproto_asyncio as ws

    while (line := await lines.get()) is not None:
        room.release()
        action = session.parse(line)
        if action is None:
            continue
        try:
            if isinstance(action, Ping):
                await conn.write_control(ws.MessageType.PING, action.payload)
            else:
                await conn.write_message(*action)
        except (ws.WebSocketError, OSError):
            return  # the reader says why


# -- wsproto_trio: a nursery with a reading task; the main task writes -----------------------


async def _run_trio(options: Options) -> int:
    import trio

    import wsproto_trio as ws

    dialer = ws.Dialer(
        handshake_timeout=options.timeout,
        subprotocols=options.subprotocols,
        enable_compression=options.compression,
        max_message_size=options.max_size,
        ssl_context=options.ssl_context,
    )
    conn, response = await dialer.dial(options.url, options.headers)
    interrupted = False
    async with conn:
        session = ClientSession(options, conn.protocol)
        session.connected(response)
        conn.set_pong_handler(session.pong)
        send_lines, receive_lines = trio.open_memory_channel[bytes | None](LINES_AHEAD)
        token = trio.lowlevel.current_trio_token()

        def deliver(line: bytes | None) -> None:
            trio.from_thread.run(send_lines.send, line, trio_token=token)

        sending = trio.CancelScope()

        async def read_pump() -> None:
            try:
                while True:
                    session.show(*await conn.read_message())
            except (ws.WebSocketError, OSError) as exc:
                session.ended(exc)
            finally:
                sending.cancel()  # nothing more to send to

        async def watch_ctrl_c(task_status: trio.TaskStatus[None]) -> None:
            nonlocal interrupted
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    interrupted = True
                    sending.cancel()
                    return

        async with trio.open_nursery() as nursery:
            await nursery.start(watch_ctrl_c)
            nursery.start_soon(read_pump)
            _start_stdin_thread(deliver)
            with sending:
                await _trio_send_lines(conn, session, receive_lines)
            if session.end is None and not interrupted:
                with suppress(ws.WebSocketError, OSError):
                    await conn.write_control(ws.MessageType.PING, session.start_draining())
                while session.end is None and not session.drained():
                    await trio.sleep(_POLL)  # the reader prints the answers as they come
            if session.end is None:
                session.closing = True
                # The reader task goes on reading: it prints what arrives before the Close.
                await conn.close_gracefully(timeout=CLOSE_WAIT)
            nursery.cancel_scope.cancel()
        receive_lines.close()  # the stdin thread stops at its next line
    return session.exit_status(interrupted)


async def _trio_send_lines(
    conn: wsproto_trio.Conn,
    session: ClientSession,
    lines: trio.MemoryReceiveChannel[bytes | None],
) -> None:
    import wsproto_trio as ws

    async for line in lines:
        if line is None:
            return
        action = session.parse(line)
        if action is None:
            continue
        try:
            if isinstance(action, Ping):
                await conn.write_control(ws.MessageType.PING, action.payload)
            else:
                await conn.write_message(*action)
        except (ws.WebSocketError, OSError):
            return  # the reader says why
