"""Incremental UTF-8 validation of text messages (RFC 6455 §5.6, §8.1).

"When an endpoint is to interpret a byte stream as UTF-8 but finds that the
byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail
the WebSocket Connection_." -- RFC 6455 §8.1

CPython's incremental UTF-8 decoder rejects a sequence at its first invalid
byte (an overlong form, a code point over U+10FFFF) even when the sequence is
cut between two pieces, with one exception: it waits for the third byte of
``ED A0..BF`` (a UTF-16 surrogate) before refusing it. :class:`Utf8Decoder`
closes that gap, so a connection fails as soon as the bad byte arrives, not
at the end of the message (Autobahn's "fail fast" cases 6.4.x).
"""

from __future__ import annotations

import codecs

from .constants import CloseCode
from .errors import RemoteProtocolError

__all__ = ["Utf8Decoder", "decode_text"]

_IncrementalDecoder = codecs.getincrementaldecoder("utf-8")


class Utf8Decoder:
    """Decode one text message piece by piece, failing on the first invalid byte."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _IncrementalDecoder("strict")

    def decode(self, data: bytes, final: bool) -> str:
        """Decode the next piece; ``final`` for the message's last one.

        Raises:
            RemoteProtocolError: 1007 if the bytes are not UTF-8, or if the
                message ends inside a character.
        """
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise _invalid() from None
        if not final:
            pending = self._decoder.getstate()[0]
            if len(pending) > 1 and pending[0] == 0xED and pending[1] > 0x9F:
                raise _invalid()
        return text


def decode_text(data: bytes) -> str:
    """Decode a whole text message at once (the common, fast case).

    Raises:
        RemoteProtocolError: 1007 if ``data`` is not UTF-8.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid() from None


def _invalid() -> RemoteProtocolError:
    return RemoteProtocolError(
        CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8 in a text message"
    )
