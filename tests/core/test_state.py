"""The state tables and the one function that applies them."""

from __future__ import annotations

import pytest

from wsproto_core import Close, CloseSentError, LocalProtocolError, Message, Ping, State
from wsproto_core.events import HandshakeRejected, HandshakeResponse
from wsproto_core.state import RECEIVE_TRANSITIONS, SEND_TRANSITIONS, transition


def test_send_table() -> None:
    assert transition(SEND_TRANSITIONS, State.OPEN, Message) is State.OPEN
    assert transition(SEND_TRANSITIONS, State.OPEN, Close) is State.CLOSING
    assert transition(SEND_TRANSITIONS, State.CONNECTING, HandshakeResponse) is State.OPEN
    assert transition(SEND_TRANSITIONS, State.CONNECTING, HandshakeRejected) is State.CLOSED


@pytest.mark.parametrize("state", [State.CLOSING, State.CLOSED])
@pytest.mark.parametrize("event", [Message, Ping, Close])
def test_sending_after_close_is_close_sent_error(state: State, event: type) -> None:
    with pytest.raises(CloseSentError):
        transition(SEND_TRANSITIONS, state, event)


@pytest.mark.parametrize("event", [Message, Ping, Close])
def test_sending_before_open_is_a_local_error(event: type) -> None:
    with pytest.raises(LocalProtocolError, match="not allowed in state CONNECTING") as info:
        transition(SEND_TRANSITIONS, State.CONNECTING, event)
    assert not isinstance(info.value, CloseSentError)


def test_receive_table() -> None:
    assert transition(RECEIVE_TRANSITIONS, State.OPEN, Close) is State.CLOSED
    assert transition(RECEIVE_TRANSITIONS, State.CLOSING, Message) is State.CLOSING
    assert transition(RECEIVE_TRANSITIONS, State.CONNECTING, HandshakeResponse) is State.OPEN
    with pytest.raises(LocalProtocolError):
        transition(RECEIVE_TRANSITIONS, State.CLOSED, Message)


def test_closed_is_terminal() -> None:
    for table in (SEND_TRANSITIONS, RECEIVE_TRANSITIONS):
        assert not [key for key in table if key[0] is State.CLOSED]
