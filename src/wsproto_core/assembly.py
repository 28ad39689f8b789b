"""Joining a message read in pieces, in memory proportional to its size.

A list of pieces kept until the message ends and then passed to
``b"".join()`` costs, for each piece, its own ``bytes`` object (33 bytes
of header), a list slot (8) and, during the join, a buffer view (80). A
message sent as 1-byte fragments then takes about 120 bytes of memory per
byte of payload, so a read limit would bound memory to 120 times itself.

Invariants:

* Small pieces are copied, as they come, into one ``bytearray``; large
  ones (and the first) are kept as they are, so they are copied once, by
  the final join, and a single piece is handed back without a copy at all.
* So each part kept holds a large piece, or a run of small ones followed by
  a large one or the end: whatever the cut, the parts cost at most about a
  tenth of the payload on top of it, a quarter while they are joined (for
  large and 1-byte pieces taking turns), and a few percent for usual cuts.

The core joins the binary messages it delivers whole with it (text ones
it decodes as they come, and joins the strings of small pieces in runs),
and the adapters join streamed pieces (``MessageData``) with it.
"""

from __future__ import annotations

__all__ = ["PieceJoiner"]

#: Pieces shorter than this are copied as they come; longer ones are kept as
#: they are. A part kept costs ~120 bytes, so at most ~12 % of a piece this size.
SMALL_PIECE = 1024


class PieceJoiner:
    """Collects the pieces of one message and joins them at its end.

    >>> parts = PieceJoiner()
    >>> for piece in (b"he", b"l", b"lo"):
    ...     parts.append(piece)
    >>> parts.join(b"!")
    b'hello!'
    """

    __slots__ = ("_parts", "_run")

    def __init__(self) -> None:
        self._parts: list[bytes | bytearray] = []
        self._run: bytearray | None = None  # the last part, while small pieces go to it

    def append(self, piece: bytes) -> None:
        """Keep the next piece of the message (an empty one is ignored)."""
        if len(piece) < SMALL_PIECE:
            run = self._run
            if run is not None:
                run += piece
                return
            if not piece:
                return
            if self._parts:
                self._run = run = bytearray(piece)
                self._parts.append(run)
                return
        # A large piece, or the first: kept as it is, so no copy if it stays alone.
        self._parts.append(piece)
        self._run = None

    def join(self, last: bytes = b"") -> bytes:
        """Return the pieces appended so far, then ``last``, as one ``bytes``.

        The joiner is then empty, ready for the next message. ``last`` alone
        (nothing was appended) is returned as it is, without a copy.
        """
        parts = self._parts
        if not parts:
            return last
        self._parts = []
        self._run = None
        if last:
            parts.append(last)  # one more object, not one more copy of it
        return b"".join(parts)
