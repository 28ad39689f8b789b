"""Connection states and the tables of their transitions.

Every state change of a connection happens through :func:`transition`, from
one of the two tables below; the docs' diagram and the tests read them too.
This module doesn't know our role, so both peers get the same rules. The one
transition not in the tables is failure: a protocol violation by the peer
moves any state to ``CLOSED`` (RFC 6455 §7.1.7).
"""

from __future__ import annotations

import enum

from .errors import CloseSentError, LocalProtocolError
from .events import (
    Close,
    Event,
    HandshakeRejected,
    HandshakeRequest,
    HandshakeResponse,
    HTTPRequest,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    Ping,
    Pong,
)

__all__ = ["RECEIVE_TRANSITIONS", "SEND_TRANSITIONS", "State", "transition"]


class State(enum.Enum):
    """Where a connection is in its life (RFC 6455 §4 and §7)."""

    CONNECTING = "connecting"
    """The opening handshake is in progress."""
    OPEN = "open"
    """Messages flow both ways."""
    CLOSING = "closing"
    """We sent a Close frame and wait for the peer's."""
    CLOSED = "closed"
    """Both Close frames were exchanged, or the connection failed."""


_S = State

SEND_TRANSITIONS: dict[tuple[State, type[Event]], State] = {
    (_S.CONNECTING, HandshakeResponse): _S.OPEN,  # server: accept()
    (_S.CONNECTING, HandshakeRejected): _S.CLOSED,  # server: reject()
    (_S.OPEN, Message): _S.OPEN,
    (_S.OPEN, Ping): _S.OPEN,
    (_S.OPEN, Pong): _S.OPEN,
    (_S.OPEN, Close): _S.CLOSING,
}
"""What the local program may send, in each state.

``Message`` stands for any data frame, so sending the fragments of one
message is allowed while open.
"""

RECEIVE_TRANSITIONS: dict[tuple[State, type[Event]], State] = {
    (_S.CONNECTING, HandshakeRequest): _S.CONNECTING,  # server: now accept() or reject()
    (_S.CONNECTING, HTTPRequest): _S.CONNECTING,  # server: now reject()
    (_S.CONNECTING, HandshakeResponse): _S.OPEN,  # client
    (_S.CONNECTING, HandshakeRejected): _S.CLOSED,  # client
    # A Close received while open is answered at once ("MUST send a Close
    # frame in response", RFC 6455 §5.5.1), so the connection is then closed.
    (_S.OPEN, Close): _S.CLOSED,
    (_S.CLOSING, Close): _S.CLOSED,
}
"""What the peer may deliver, in each state."""

for _state in (_S.OPEN, _S.CLOSING):
    # After we sent a Close, the peer may still be sending data (§5.5.1).
    for _event in (Message, MessageStart, MessageData, MessageEnd, Ping, Pong):
        RECEIVE_TRANSITIONS[(_state, _event)] = _state


def transition(
    table: dict[tuple[State, type[Event]], State], state: State, event: type[Event]
) -> State:
    """Return the state that follows ``event`` in ``state``.

    Raises:
        CloseSentError: data sent after the closing handshake began.
        LocalProtocolError: the table has no such transition.
    """
    try:
        return table[(state, event)]
    except KeyError:
        pass
    if table is SEND_TRANSITIONS and state in (State.CLOSING, State.CLOSED):
        raise CloseSentError(f"cannot send {event.__name__} after the connection began closing")
    raise LocalProtocolError(f"{event.__name__} is not allowed in state {state.name}")
