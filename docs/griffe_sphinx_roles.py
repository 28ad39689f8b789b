"""A griffe extension that turns the docstrings' Sphinx roles into links.

The docstrings say ``:class:`Connection``` and ``:meth:`next_event```, as
h11's and websockets' do. Markdown has no roles, so before mkdocstrings
renders a docstring, each role becomes a cross-reference to the object the
name resolves to from where the docstring is. The references are optional
ones: a name that the reference does not render (a private helper, a name
of the standard library) becomes plain code, never a broken link, so
``mkdocs build --strict`` stays quiet. Only docstring text changes.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|exc|mod|obj|const):`(?P<target>[^`]+)`")
EXPLICIT_TITLE = re.compile(r"(?P<title>.+?)\s*<(?P<name>[^<>]+)>")


def _identifier(obj: griffe.Object | griffe.Alias, name: str) -> str:
    """Resolve ``name`` (possibly dotted) from the scope of ``obj``."""
    head, _, rest = name.partition(".")
    try:
        resolved = obj.resolve(head)
    except griffe.NameResolutionError:
        return name  # already a full path, or nothing we know: autorefs decides
    return f"{resolved}.{rest}" if rest else resolved


def rewrite(obj: griffe.Object | griffe.Alias, text: str) -> str:
    """Return ``text`` with every role replaced by an optional autoref."""

    def link(match: re.Match[str]) -> str:
        target = match["target"].strip()
        if explicit := EXPLICIT_TITLE.fullmatch(target):  # :attr:`title <target>`
            title, name = explicit["title"], explicit["name"]
        else:
            name = target.lstrip("~.")
            title = name.rsplit(".", 1)[-1] if target.startswith("~") else name
        identifier = html.escape(_identifier(obj, name), quote=True)
        code = f"<code>{html.escape(title)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return ROLE.sub(link, text)


class SphinxRoles(griffe.Extension):
    """Rewrite roles in every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Walk the package's own objects (not aliases) and rewrite their docstrings."""
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]
