"""The syntax tree: frozen dataclasses, rendered back to text by ``str()``, and walked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

Value = float | str | bool | None


@dataclass(frozen=True)
class Expr:
    """Base of the syntax tree; ``str()`` renders it back, fully parenthesised."""

    def __str__(self) -> str:
        return render(self)


@dataclass(frozen=True)
class Literal(Expr):
    """A number (float), string, boolean, or null (None); durations become seconds."""

    value: Value
    column: int


@dataclass(frozen=True)
class Name(Expr):
    """A field read by name; dotted names read nested objects."""

    name: str
    column: int


@dataclass(frozen=True)
class Unary(Expr):
    """``-x`` or ``not x``; ``column`` is the operator's."""

    op: str
    operand: Expr
    column: int


@dataclass(frozen=True)
class Binary(Expr):
    """Arithmetic, comparison, ``and``, ``or``; ``column`` is the operator's."""

    op: str
    left: Expr
    right: Expr
    column: int


@dataclass(frozen=True)
class InList(Expr):
    """``x in [..]`` or ``x not in [..]``; ``column`` is the operator's."""

    operand: Expr
    items: tuple[Literal, ...]
    negated: bool
    column: int


@dataclass(frozen=True)
class Call(Expr):
    """``name(args...)``; ``column`` is the function name's."""

    name: str
    args: tuple[Expr, ...]
    column: int


def children(node: Expr) -> tuple[Expr, ...]:
    match node:
        case Unary(operand=x):
            return (x,)
        case Binary(left=a, right=b):
            return (a, b)
        case InList(operand=x, items=items):
            return (x, *items)
        case Call(args=args):
            return args
    return ()


def walk(expr: Expr) -> Iterator[Expr]:
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def render(node: Expr) -> str:
    match node:
        case Literal(value=v):
            return _render_value(v)
        case Name(name=n):
            return n
        case Unary(op="-", operand=x):
            return f"(-{x})"
        case Unary(op=op, operand=x):
            return f"({op} {x})"
        case Binary(op=op, left=a, right=b):
            return f"({a} {op} {b})"
        case InList(operand=x, items=items, negated=neg):
            return f"({x} {'not in' if neg else 'in'} [{', '.join(map(str, items))}])"
        case Call(name=name, args=args):
            return f"{name}({', '.join(map(str, args))})"
    raise TypeError(f"not an expression: {node!r}")


_RENDER_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _render_value(v: Value) -> str:
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, str):
        body = "".join(_RENDER_ESCAPES.get(c, c if c.isprintable() else f"\\u{ord(c):04x}")
                       for c in v)
        return f'"{body}"'
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)


def names(expr: Expr) -> set[str]:
    """Every name the expression reads, dotted names as written.

    >>> from kpistream.core.expr import parse
    >>> sorted(names(parse("user.city == 'x' or lower(a) in ['y'] and f(b)")))
    ['a', 'b', 'user.city']
    """
    return {node.name for node in walk(expr) if isinstance(node, Name)}
