"""Compiling a syntax tree to nested Python closures over one mapping (no ``eval``)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping

from kpistream.core.expr.errors import ExprError
from kpistream.core.expr.functions import ARITHMETIC, BUILTINS, COMPARISONS, Builtin
from kpistream.core.expr.inference import Types
from kpistream.core.expr.references import check_refs
from kpistream.core.expr.syntax import Binary, Call, Expr, InList, Literal, Name, Unary
from kpistream.core.expr.types import type_of, with_article

Row = Mapping[str, object]
Compiled = Callable[[Row], object]
ScalarFunction = tuple[Callable[..., object], tuple[int, int | None]]
"""An extra scalar function: ``(fn, (min_args, max_args))``, ``max_args`` None for no limit.

``fn(row, *args)`` gets the mapping the compiled expression was called with and the evaluated
arguments (None for null, no null propagation); its result is used as-is.
"""


def _kind_name(value: object) -> str:
    kind = type_of(value)
    return with_article(kind) if kind else with_article(type(value).__name__)


def _lookup(name: str) -> Compiled:
    root, *path = name.split(".")

    def read(row: Row) -> object:
        value = row.get(root)
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    return read


def _truth(value: object, node: Expr, op: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ExprError(f'"{op}" expects a boolean, got {_kind_name(value)}', node.column)


def _py_not(node: Unary, x: Compiled) -> Compiled:
    def run(row: Row) -> bool | None:
        v = _truth(x(row), node, "not")
        return None if v is None else not v

    return run


def _py_logic(node: Binary, left: Compiled, right: Compiled) -> Compiled:
    """Kleene ``and``/``or``: the deciding value wins over null."""
    decides = node.op == "or"  # True decides "or", False decides "and"

    def run(row: Row) -> bool | None:
        a = _truth(left(row), node, node.op)
        if a is decides:
            return decides
        b = _truth(right(row), node, node.op)
        if b is decides:
            return decides
        return None if a is None or b is None else not decides

    return run


def _divide(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def _py_strict(node: Unary | Binary, fn: Callable[..., object], parts: list[Compiled]
               ) -> Compiled:
    """Apply ``fn`` to the parts' values; null when any is null."""

    def run(row: Row) -> object:
        values = [part(row) for part in parts]
        if None in values:
            return None
        try:
            return fn(*values)
        except (TypeError, ValueError, OverflowError) as e:
            kinds = " and ".join(_kind_name(v) for v in values)
            raise ExprError(f'cannot apply "{node.op}" to {kinds}', node.column) from e

    return run


def _py_in(node: InList, x: Compiled) -> Compiled:
    values = frozenset(item.value for item in node.items)

    def run(row: Row) -> bool | None:
        v = x(row)
        if v is None:
            return None
        if isinstance(v, Mapping | list):
            raise ExprError(f'"in" cannot look up {_kind_name(v)}', node.column)
        return (v in values) is not node.negated

    return run


def _py_builtin(node: Call, spec: Builtin, args: list[Compiled]) -> Compiled:
    def run(row: Row) -> object:
        values = [arg(row) for arg in args]
        if spec.nulls and None in values:
            return None
        try:
            return spec.py(*values)
        except (TypeError, ValueError, OverflowError) as e:
            kinds = ", ".join(_kind_name(v) for v in values)
            raise ExprError(f"{node.name}() cannot take {kinds}", node.column) from e

    return run


def _py_extra(fn: Callable[..., object], args: list[Compiled]) -> Compiled:
    return lambda row: fn(row, *(arg(row) for arg in args))


class _ToPython:
    def __init__(self, functions: Mapping[str, ScalarFunction]) -> None:
        self.functions = functions

    def compile(self, node: Expr) -> Compiled:
        match node:
            case Literal(value=v):
                return lambda row: v
            case Name(name=n):
                return _lookup(n)
            case Unary(op="-", operand=x):
                return _py_strict(node, operator.neg, [self.compile(x)])
            case Unary(operand=x):
                return _py_not(node, self.compile(x))
            case Binary(op="and" | "or", left=a, right=b):
                return _py_logic(node, self.compile(a), self.compile(b))
            case Binary(op=op, left=a, right=b):
                fn = _divide if op == "/" else {**ARITHMETIC, **COMPARISONS}[op]
                return _py_strict(node, fn, [self.compile(a), self.compile(b)])
            case InList(operand=x):
                return _py_in(node, self.compile(x))
            case Call(name=name, args=args):
                compiled = [self.compile(arg) for arg in args]
                if name in BUILTINS:
                    return _py_builtin(node, BUILTINS[name], compiled)
                return _py_extra(self.functions[name][0], compiled)
        raise TypeError(f"not an expression: {node!r}")  # pragma: no cover


def _arities(functions: Mapping[str, ScalarFunction]) -> dict[str, tuple[int, int | None]]:
    clash = sorted(set(functions) & set(BUILTINS))
    if clash:
        raise ValueError(f"functions {', '.join(clash)} are built in; choose other names")
    table = {k: (v.min_args, v.max_args) for k, v in BUILTINS.items()}
    return table | {name: arity for name, (_, arity) in functions.items()}


def to_python(expr: Expr, *, allowed_names: Collection[str] | None = None,
              functions: Mapping[str, ScalarFunction] | None = None) -> Compiled:
    """Compile to a function of one mapping (nested closures, no ``eval``).

    ``allowed_names``: when given, any other name is an error. ``functions``: extra scalar
    functions, ``name -> (fn, (min_args, max_args))``; ``fn(row, *args)`` receives the mapping
    and the argument values (see :data:`ScalarFunction`).

    >>> from kpistream.core.expr import parse
    >>> ratio = to_python(parse("round(paid / visits * 100, 1)"), allowed_names=["paid", "visits"])
    >>> ratio({"paid": 2, "visits": 3}), ratio({"paid": 2, "visits": 0})
    (66.7, None)
    >>> prev = {"prev": (lambda row, n: row["history"][-int(n)], (1, 1))}
    >>> to_python(parse("value < prev(1) / 2"), functions=prev)({"value": 4, "history": [9, 10]})
    True
    >>> to_python(parse("valeu > 1"), allowed_names=["value", "expected"])
    Traceback (most recent call last):
    ...
    kpistream.core.expr.ExprError: column 1: unknown name "valeu"; expected one of expected, value
    (did you mean "value"?)
    """
    extra = dict(functions or {})
    check_refs(expr, _arities(extra), allowed_names)
    Types().run(expr, None)
    return _ToPython(extra).compile(expr)
