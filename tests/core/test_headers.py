# Header values: the Headers container and the RFC 7230 / RFC 6455 §9.1 list
# grammars the handshake reads (token lists and Sec-WebSocket-Extensions).

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsproto_core import ExtensionOffer, Headers
from wsproto_core.headers import format_extensions, is_token, parse_extensions, parse_token_list

# == Headers ===========================================================================


def test_lookup_ignores_case_and_keeps_names() -> None:
    headers = Headers([("Content-Type", "text/plain"), ("X-Thing", "a"), ("x-thing", "b")])
    assert headers["content-type"] == "text/plain"
    assert headers["CONTENT-TYPE"] == "text/plain"
    assert headers.get("X-THING") == "a"
    assert headers.get_all("X-Thing") == ["a", "b"]
    assert headers.get_all("x-THING") == ["a", "b"]
    assert list(headers) == [("Content-Type", "text/plain"), ("X-Thing", "a"), ("x-thing", "b")]
    assert len(headers) == 3


def test_missing_names() -> None:
    headers = Headers([("A", "1")])
    assert headers.get("b") is None
    assert headers.get("b", "default") == "default"
    assert headers.get("a", "default") == "1"
    assert headers.get_all("b") == []
    with pytest.raises(KeyError):
        headers["b"]


def test_empty_value_is_present() -> None:
    headers = Headers([("X-Empty", "")])
    assert "x-empty" in headers
    assert headers["X-Empty"] == ""
    assert headers.get("x-empty", "default") == ""


def test_contains() -> None:
    headers = Headers([("Upgrade", "websocket")])
    assert "upgrade" in headers
    assert "UPGRADE" in headers
    assert "connection" not in headers
    assert 42 not in headers
    assert None not in headers
    assert ("Upgrade", "websocket") not in headers


def test_values_keep_their_case() -> None:
    headers = Headers([("X", "MiXeD")])
    assert headers["x"] == "MiXeD"
    assert Headers([("X", "a")]) != Headers([("X", "A")])


def test_from_mapping_pairs_and_headers() -> None:
    from_mapping = Headers({"A": "1", "B": "2"})
    from_pairs = Headers([("A", "1"), ("B", "2")])
    from_generator = Headers((name, value) for name, value in [("A", "1"), ("B", "2")])
    copied = Headers(from_pairs)
    assert list(from_mapping) == list(from_pairs) == list(from_generator) == list(copied)
    assert Headers() == Headers([]) == Headers({})
    assert len(Headers()) == 0
    assert list(Headers()) == []


def test_values_become_strings() -> None:
    headers = Headers([("Content-Length", 5)])  # type: ignore[list-item]
    assert headers["content-length"] == "5"


def test_immutable() -> None:
    headers = Headers([("A", "1")])
    with pytest.raises(AttributeError):
        headers.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        headers["A"] = "2"  # type: ignore[index]


def test_equality_ignores_name_case_only() -> None:
    assert Headers([("Content-Type", "a")]) == Headers([("content-type", "a")])
    assert Headers([("A", "1"), ("B", "2")]) != Headers([("B", "2"), ("A", "1")])
    assert Headers([("A", "1")]) != Headers([("A", "1"), ("A", "1")])
    assert Headers([("A", "1")]) != Headers([("B", "1")])
    assert Headers([("A", "1")]) != [("A", "1")]
    assert Headers([("A", "1")]) != {"A": "1"}


def test_hash_agrees_with_equality() -> None:
    a = Headers([("Content-Type", "a"), ("X", "1")])
    b = Headers([("content-TYPE", "a"), ("x", "1")])
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert len({a, Headers([("Content-Type", "b"), ("X", "1")])}) == 2


def test_repr() -> None:
    headers = Headers([("A", "1"), ("b", "2")])
    assert repr(headers) == "Headers([('A', '1'), ('b', '2')])"
    assert repr(Headers()) == "Headers([])"


def test_add() -> None:
    base = Headers([("A", "1")])
    pairs = [("B", "2")]
    mapping = {"a": "3"}
    nothing: tuple[tuple[str, str], ...] = ()
    assert list(base + pairs) == [("A", "1"), ("B", "2")]
    assert list(base + mapping) == [("A", "1"), ("a", "3")]
    assert list(base + Headers([("C", "4")])) == [("A", "1"), ("C", "4")]
    assert (base + mapping).get_all("A") == ["1", "3"]
    assert list(base) == [("A", "1")]  # unchanged
    assert isinstance(base + nothing, Headers)
    assert base + nothing == base


# == parse_token_list ==================================================================


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        ([""], []),
        (["a"], ["a"]),
        (["a,b"], ["a", "b"]),
        (["a, b"], ["a", "b"]),
        ([" \ta \t, \tb\t "], ["a", "b"]),
        ([",a,,b,"], ["a", "b"]),
        ([" , , "], []),
        (["Upgrade"], ["Upgrade"]),
        (["keep-alive, Upgrade"], ["keep-alive", "Upgrade"]),
        (["a", "b, c", ""], ["a", "b", "c"]),
        (["chat.v1.example.com"], ["chat.v1.example.com"]),
        (["!#$%&'*+-.^_`|~09azAZ"], ["!#$%&'*+-.^_`|~09azAZ"]),
        (["a, a"], ["a", "a"]),
    ],
)
def test_parse_token_list(values: list[str], expected: list[str]) -> None:
    assert parse_token_list(values) == expected


@pytest.mark.parametrize(
    "value",
    ["a b", "a;b", "a=b", '"a"', "a/b", "(a)", "a\u00e9", "a\x00", "a, b c", "a,\x7f"],
)
def test_parse_token_list_refuses_non_tokens(value: str) -> None:
    with pytest.raises(ValueError, match="invalid token"):
        parse_token_list([value])
    with pytest.raises(ValueError, match="invalid token"):
        parse_token_list(["ok", value])


def test_parse_token_list_accepts_any_iterable() -> None:
    assert parse_token_list(iter(["a", "b"])) == ["a", "b"]
    assert parse_token_list(("a, b",)) == ["a", "b"]


# == ExtensionOffer =====================================================================


def test_extension_offer_value() -> None:
    offer = ExtensionOffer("permessage-deflate", [("client_max_window_bits", None)])
    assert offer.name == "permessage-deflate"
    assert offer.params == (("client_max_window_bits", None),)
    assert offer == ExtensionOffer("permessage-deflate", (("client_max_window_bits", None),))
    assert offer != ExtensionOffer("permessage-deflate")
    assert offer != ExtensionOffer("other", [("client_max_window_bits", None)])
    assert offer != "permessage-deflate; client_max_window_bits"
    assert hash(offer) == hash(ExtensionOffer(offer.name, list(offer.params)))
    assert ExtensionOffer("x").params == ()
    assert repr(offer) == "ExtensionOffer('permessage-deflate', [('client_max_window_bits', None)])"
    assert str(offer) == "permessage-deflate; client_max_window_bits"
    # Order matters and parameters may repeat.
    assert ExtensionOffer("x", [("a", "1"), ("b", "2")]) != ExtensionOffer(
        "x", [("b", "2"), ("a", "1")]
    )
    assert ExtensionOffer("x", [("a", "1"), ("a", "2")]).params == (("a", "1"), ("a", "2"))


# == parse_extensions ===================================================================


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        ([""], []),
        (["  "], []),
        (["x"], [ExtensionOffer("x")]),
        (["x; a"], [ExtensionOffer("x", [("a", None)])]),
        (["x;a"], [ExtensionOffer("x", [("a", None)])]),
        (["x; a=1"], [ExtensionOffer("x", [("a", "1")])]),
        (["x ; a = 1 ; b"], [ExtensionOffer("x", [("a", "1"), ("b", None)])]),
        (["x;\ta=1\t"], [ExtensionOffer("x", [("a", "1")])]),
        (['x; a="1"'], [ExtensionOffer("x", [("a", "1")])]),
        (['x; a="tok-en.1"'], [ExtensionOffer("x", [("a", "tok-en.1")])]),
        (['x; a="\\1\\5"'], [ExtensionOffer("x", [("a", "15")])]),
        (['x; a="1"; b=2'], [ExtensionOffer("x", [("a", "1"), ("b", "2")])]),
        (["x; a=1; a=2"], [ExtensionOffer("x", [("a", "1"), ("a", "2")])]),
        (
            ["permessage-deflate; client_max_window_bits; server_max_window_bits=10"],
            [
                ExtensionOffer(
                    "permessage-deflate",
                    [("client_max_window_bits", None), ("server_max_window_bits", "10")],
                )
            ],
        ),
        (
            ["x; a=1, y, x; b"],
            [
                ExtensionOffer("x", [("a", "1")]),
                ExtensionOffer("y"),
                ExtensionOffer("x", [("b", None)]),
            ],
        ),
        (["x,y"], [ExtensionOffer("x"), ExtensionOffer("y")]),
        ([", x ,, y ,"], [ExtensionOffer("x"), ExtensionOffer("y")]),
        (
            ["x; a=1", "y", "", "z; b"],
            [
                ExtensionOffer("x", [("a", "1")]),
                ExtensionOffer("y"),
                ExtensionOffer("z", [("b", None)]),
            ],
        ),
        (["X-Test; Key=V"], [ExtensionOffer("X-Test", [("Key", "V")])]),
    ],
)
def test_parse_extensions(values: list[str], expected: list[ExtensionOffer]) -> None:
    assert parse_extensions(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "x;",
        "x; ",
        "x;;a",
        "x; =1",
        "x; a=",
        "x; a= ",
        "x; a=;b",
        "x y",
        "x; a b",
        "x; a=1 2",
        "x; a=1=2",
        ";a",
        "=",
        "x=1",
        'x; a="1',
        'x; a="',
        'x; a="1"2',
        'x; a="1 2"',
        'x; a=""',
        'x; a="a,b"',
        'x; a="\\"q\\""',
        "x; a=\u00e9",
        "\u00e9",
        "x; a=1, ;b",
        '"x"',
    ],
)
def test_parse_extensions_refuses_malformed(value: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_extensions([value])
    # An error on any line is an error, whatever came before.
    with pytest.raises(ValueError, match=r"."):
        parse_extensions(["ok", value])


def test_quoted_value_must_be_a_token() -> None:
    # "the value MUST conform to the 'token' ABNF" -- RFC 6455 §9.1
    with pytest.raises(ValueError, match="not a token"):
        parse_extensions(['x; a="1 2"'])
    with pytest.raises(ValueError, match="unterminated"):
        parse_extensions(['x; a="1'])


# == format_extensions ==================================================================


def test_format_extensions() -> None:
    assert format_extensions([]) == ""
    assert format_extensions([ExtensionOffer("x")]) == "x"
    assert (
        format_extensions(
            [ExtensionOffer("x", [("a", None), ("b", "1")]), ExtensionOffer("y", [("c", "2")])]
        )
        == "x; a; b=1, y; c=2"
    )


TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
offers = st.builds(
    ExtensionOffer,
    tokens,
    st.lists(st.tuples(tokens, st.none() | tokens), max_size=4),
)


@given(st.lists(offers, max_size=4))
def test_format_then_parse_round_trips(values: list[ExtensionOffer]) -> None:
    formatted = format_extensions(values)
    assert parse_extensions([formatted]) == values
    # The same offers split across header lines parse the same.
    assert parse_extensions([format_extensions([offer]) for offer in values]) == values


@given(st.lists(tokens, max_size=6))
def test_token_list_round_trips(values: list[str]) -> None:
    assert parse_token_list([", ".join(values)]) == values
    assert parse_token_list(values) == values


@pytest.mark.parametrize(
    "offer",
    [
        ExtensionOffer("bad name"),
        ExtensionOffer("x", [("bad param", None)]),
        ExtensionOffer("x", [("p", "bad value")]),
        ExtensionOffer("x", [("p", "")]),
    ],
)
def test_format_extensions_refuses_non_tokens(offer: ExtensionOffer) -> None:
    with pytest.raises(ValueError, match="not a token"):
        format_extensions([offer])


def test_is_token() -> None:
    assert is_token("permessage-deflate")
    assert not is_token("")
    assert not is_token("a b")
    assert not is_token("é")
