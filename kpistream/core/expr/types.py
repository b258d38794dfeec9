"""The types of values and fields in expressions."""

from __future__ import annotations

import enum


class FieldType(enum.Enum):
    """The type of a field as used by an expression."""

    NUMBER = "number"
    STRING = "string"
    BOOL = "boolean"


def with_article(kind: FieldType | str) -> str:
    word = kind.value if isinstance(kind, FieldType) else kind
    return ("an " if word[0] in "aeiou" else "a ") + word


def type_of(value: object) -> FieldType | None:
    if isinstance(value, bool):
        return FieldType.BOOL
    if isinstance(value, int | float):
        return FieldType.NUMBER
    return FieldType.STRING if isinstance(value, str) else None
