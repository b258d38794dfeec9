r"""Rule documents: a parsed YAML file and the way back from a location to ``line:col``.

>>> from ruamel.yaml import YAML
>>> tree = YAML(typ="rt").load("kpis:\n  - name: gmv\n    window: 1x\n")
>>> doc = RuleDocument("a.yaml", tree, RuleFileSpec())
>>> str(doc.at(("kpis", 0, "window"), "window: invalid duration"))
'a.yaml:3:13: kpi "gmv": window: invalid duration'
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel
from ruamel.yaml.comments import CommentedMap, CommentedSeq, merge_attrib
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from kpistream.core.spec import (
    AlertSpec,
    DigestSpec,
    KpiSpec,
    OwnerSpec,
    RuleFileSpec,
    SilenceSpec,
    SourceSpec,
)
from kpistream.errors import Problem

__all__ = ["SECTIONS", "Loc", "Located", "RuleDocument", "check_timezone", "iter_items"]

SECTIONS: dict[str, tuple[str, type[BaseModel]]] = {
    "sources": ("source", SourceSpec),
    "kpis": ("kpi", KpiSpec),
    "alerts": ("alert", AlertSpec),
    "owners": ("owner", OwnerSpec),
    "silences": ("silence", SilenceSpec),
    "digests": ("digest", DigestSpec),
}
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class RuleDocument:
    """One parsed rule file: its validated spec and the YAML tree for positions."""

    path: str
    tree: Any
    spec: RuleFileSpec

    def at(self, loc: Loc, message: str, *, key: bool = False, offset: int = 0) -> Problem:
        """A problem at the node ``loc`` (its key when ``key``), ``offset`` columns in."""
        line, col = _position(self.tree, loc, key=key)
        return Problem(self.path, line, col + offset, _context(self.tree, loc) + message)

    def in_expression(self, loc: Loc, message: str, column: int) -> Problem:
        """A problem at 1-based ``column`` of the expression text held at ``loc``."""
        value = _lookup(self.tree, loc)
        quoted = isinstance(value, DoubleQuotedScalarString | SingleQuotedScalarString)
        return self.at(loc, message, offset=column - 1 + int(quoted))


@dataclass(frozen=True)
class Located:
    """A spec item with the document and location it came from."""

    doc: RuleDocument
    loc: Loc
    spec: Any

    def problem(self, field: str | None, message: str, *, column: int | None = None) -> Problem:
        loc = self.loc if field is None else (*self.loc, field)
        if column is not None:
            return self.doc.in_expression(loc, message, column)
        return self.doc.at(loc, message)


def _lookup(tree: Any, loc: Loc) -> Any:
    node = tree
    for step in loc:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _position(tree: Any, loc: Loc, *, key: bool) -> tuple[int, int]:
    """1-based line and column of the node at ``loc`` (or of its nearest existing parent)."""
    node, line, col = tree, 0, 0
    for i, step in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedMap) and step in node:
            owner = _defining_map(node, step)
            if owner is None:
                break
            line, col = owner.lc.key(step) if (last and key) else owner.lc.value(step)
        elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
            position = node.lc.item(step)  # None for items of a tagged flow sequence
            if position is None:
                break
            line, col = position
        else:
            break
        node = node[step]
    return line + 1, col + 1


def _defining_map(node: CommentedMap, key: Any, depth: int = 0) -> CommentedMap | None:
    """The map that spells ``key`` out: ``node`` itself or one merged in with ``<<:``."""
    if key in (node.lc.data or {}):
        return node
    for merged in getattr(node, merge_attrib, None) or ():
        if depth < 20 and isinstance(merged, CommentedMap) and key in merged:
            found = _defining_map(merged, key, depth + 1)
            if found is not None:
                return found
    return None


def _context(tree: Any, loc: Loc) -> str:
    if len(loc) < 2 or loc[0] not in SECTIONS:
        return ""
    item = _lookup(tree, loc[:2])
    name = item.get("name") if isinstance(item, dict) else None
    return f'{SECTIONS[str(loc[0])][0]} "{name}": ' if isinstance(name, str) else ""


def iter_items(docs: list[RuleDocument], section: str) -> Iterator[Located]:
    """Every valid item of ``section`` across documents, with where it came from."""
    for doc in docs:
        places = _places_by_name(doc.tree.get(section))
        for position, spec in enumerate(getattr(doc.spec, section)):
            queue = places.get(getattr(spec, "name", None), [position])  # unnamed: by order
            index = queue.pop(0) if len(queue) > 1 else queue[0]
            yield Located(doc, (section, index), spec)


def _places_by_name(items: Any) -> dict[str, list[int]]:
    """Item indexes per name, in file order (duplicates keep every place)."""
    places: dict[str, list[int]] = {}
    if isinstance(items, list):
        for i, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                places.setdefault(item["name"], []).append(i)
    return places


def check_timezone(docs: list[RuleDocument], problems: list[Problem]) -> str:
    """The one timezone of the set (default UTC); differing or unknown ones are problems."""
    chosen: tuple[str, RuleDocument] | None = None
    for doc in docs:
        tz = doc.spec.timezone
        if tz is None:
            continue
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Asia" is a folder of tzdata
            problems.append(doc.at(("timezone",), f'unknown timezone "{tz}"; expected an IANA '
                                   "name such as Asia/Shanghai or UTC"))
            continue
        if chosen and chosen[0] != tz:
            problems.append(doc.at(("timezone",), f'timezone "{tz}" differs from "{chosen[0]}" '
                                   f"set in {chosen[1].path}; one rule set has one timezone"))
        elif not chosen:
            chosen = (tz, doc)
    return chosen[0] if chosen else "UTC"
