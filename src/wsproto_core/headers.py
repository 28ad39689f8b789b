"""HTTP header values: an immutable header list and the RFC 7230 list grammars.

h11 parses and serializes the HTTP messages themselves; this module only reads
and writes the *values* of the headers the WebSocket handshake cares about.
Every parser here is strict: it returns a value or raises ``ValueError``, and
never guesses what a malformed header meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "ExtensionOffer",
    "Headers",
    "HeadersLike",
    "format_extensions",
    "is_token",
    "parse_extensions",
    "parse_token_list",
]

# RFC 7230 §3.2.6: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_OWS = re.compile(r"[ \t]*")


class Headers:
    """An immutable, ordered, case-insensitive list of HTTP header fields.

    Names keep the case they were given (or received in); lookups ignore case.
    A name may appear several times, as HTTP allows.

    >>> h = Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2")])
    >>> h["SET-COOKIE"], h.get_all("set-cookie")
    ('a=1', ['a=1', 'b=2'])
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: HeadersLike = ()) -> None:
        if isinstance(fields, Headers):
            self._fields: tuple[tuple[str, str], ...] = fields._fields
            return
        if not fields:
            self._fields = ()
            return
        items = fields.items() if isinstance(fields, Mapping) else fields
        self._fields = tuple((str(name), str(value)) for name, value in items)

    @classmethod
    def _of(cls, fields: tuple[tuple[str, str], ...]) -> Headers:
        """Wrap fields known to be pairs of ``str``, without copying them (the core's own)."""
        headers = cls.__new__(cls)
        headers._fields = fields
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default``."""
        name = name.lower()
        for key, value in self._fields:
            if key.lower() == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in order."""
        name = name.lower()
        return [value for key, value in self._fields if key.lower() == name]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k.lower(), v) for k, v in self] == [(k.lower(), v) for k, v in other]

    def __hash__(self) -> int:
        return hash(tuple((k.lower(), v) for k, v in self._fields))

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"

    def __add__(self, other: HeadersLike) -> Headers:
        more = Headers(other)._fields
        return Headers(self._fields + more) if more else self


HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]
"""Anything :class:`Headers` accepts: a mapping or an iterable of (name, value) pairs."""


def is_token(value: str) -> bool:
    """Tell whether ``value`` is an HTTP token (RFC 7230 §3.2.6)."""
    return _TOKEN.fullmatch(value) is not None


def parse_token_list(values: Iterable[str]) -> list[str]:
    """Parse comma-separated token lists such as ``Connection`` or ``Sec-WebSocket-Protocol``.

    Several header lines are one list (RFC 7230 §3.2.2); empty elements are
    ignored (RFC 7230 §7). Case is preserved.

    Raises:
        ValueError: an element is not a token.
    """
    tokens = []
    for value in values:
        for element in value.split(","):
            element = element.strip(" \t")
            if not element:
                continue
            if not _TOKEN.fullmatch(element):
                raise ValueError(f"invalid token {element!r}")
            tokens.append(element)
    return tokens


class ExtensionOffer:
    """One element of a ``Sec-WebSocket-Extensions`` header: a name and its parameters.

    Parameters keep their order and may repeat (a repeated parameter is for the
    extension to refuse, as RFC 7692 §7 does). A parameter without a value has
    the value ``None``.
    """

    __slots__ = ("name", "params")

    def __init__(self, name: str, params: Iterable[tuple[str, str | None]] = ()) -> None:
        self.name = name
        self.params: tuple[tuple[str, str | None], ...] = tuple(params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtensionOffer):
            return NotImplemented
        return (self.name, self.params) == (other.name, other.params)

    def __hash__(self) -> int:
        return hash((self.name, self.params))

    def __repr__(self) -> str:
        return f"ExtensionOffer({self.name!r}, {list(self.params)!r})"

    def __str__(self) -> str:
        return format_extensions([self])


def parse_extensions(values: Iterable[str]) -> list[ExtensionOffer]:
    """Parse ``Sec-WebSocket-Extensions`` header values (RFC 6455 §9.1).

    Raises:
        ValueError: the header does not follow the grammar; in particular a
            quoted parameter value must still be a token once unquoted.
    """
    offers: list[ExtensionOffer] = []
    for value in values:
        pos = 0
        end = len(value)
        while pos < end:
            pos = _OWS.match(value, pos).end()  # type: ignore[union-attr]
            if pos < end and value[pos] == ",":  # empty list element
                pos += 1
                continue
            if pos == end:
                break
            name, pos = _token(value, pos)
            params: list[tuple[str, str | None]] = []
            pos = _OWS.match(value, pos).end()  # type: ignore[union-attr]
            while pos < end and value[pos] == ";":
                pos = _OWS.match(value, pos + 1).end()  # type: ignore[union-attr]
                param, pos = _token(value, pos)
                pos = _OWS.match(value, pos).end()  # type: ignore[union-attr]
                param_value: str | None = None
                if pos < end and value[pos] == "=":
                    pos = _OWS.match(value, pos + 1).end()  # type: ignore[union-attr]
                    if pos < end and value[pos] == '"':
                        quoted = _QUOTED.match(value, pos)
                        if quoted is None:
                            raise ValueError(f"unterminated quoted string in {value!r}")
                        param_value = re.sub(r"\\(.)", r"\1", quoted.group(1))
                        # "the value MUST conform to the 'token' ABNF" -- RFC 6455 §9.1
                        if not _TOKEN.fullmatch(param_value):
                            raise ValueError(
                                f"quoted parameter value {param_value!r} is not a token"
                            )
                        pos = quoted.end()
                    else:
                        param_value, pos = _token(value, pos)
                    pos = _OWS.match(value, pos).end()  # type: ignore[union-attr]
                params.append((param, param_value))
            if pos < end and value[pos] != ",":
                raise ValueError(f"unexpected {value[pos]!r} in {value!r}")
            pos += 1
            offers.append(ExtensionOffer(name, params))
    return offers


def _token(value: str, pos: int) -> tuple[str, int]:
    match = _TOKEN.match(value, pos)
    if match is None:
        raise ValueError(f"expected a token at position {pos} of {value!r}")
    return match.group(), match.end()


def format_extensions(offers: Iterable[ExtensionOffer]) -> str:
    """Format extension offers or responses as one ``Sec-WebSocket-Extensions`` value.

    Raises:
        ValueError: a name or value is not a token (RFC 6455 §9.1).
    """
    parts = []
    for offer in offers:
        items = [offer.name]
        for name, value in offer.params:
            items.append(name if value is None else f"{name}={value}")
        for item in (offer.name, *(p for param in offer.params for p in param if p is not None)):
            if not is_token(item):
                raise ValueError(f"{item!r} is not a token")
        parts.append("; ".join(items))
    return ", ".join(parts)
