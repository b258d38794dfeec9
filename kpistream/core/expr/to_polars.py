"""Compiling a syntax tree to a polars expression over a batch of events."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import polars as pl

from kpistream.core.expr.functions import (
    ARITHMETIC,
    BUILTINS,
    COMPARISONS,
    FLIPPED,
    pl_coalesce,
    pl_round,
)
from kpistream.core.expr.inference import Types
from kpistream.core.expr.references import check_refs
from kpistream.core.expr.syntax import Binary, Call, Expr, InList, Literal, Name, Unary
from kpistream.core.expr.types import FieldType, type_of

_DTYPES = {FieldType.NUMBER: pl.Float64, FieldType.STRING: pl.String,
           FieldType.BOOL: pl.Boolean}


def _default_column(name: str) -> pl.Expr:
    root, *path = name.split(".")
    column = pl.col(root)
    for part in path:
        column = column.struct.field(part)
    return column


class _ToPolars:
    def __init__(self, column: Callable[[str], pl.Expr], types: Types) -> None:
        self.column = column
        self.types = types

    def compile(self, node: Expr, want: FieldType | None = None) -> pl.Expr:
        """Compile ``node``; ``want`` types null literals so polars never sees a Null dtype."""
        match node:
            case Literal(value=None):
                return pl.lit(None, dtype=_DTYPES[want] if want else pl.Null)
            case Literal(value=v):
                return pl.lit(v)
            case Name(name=n):
                return self.column(n)
            case Unary(op="-", operand=x):
                return -self.compile(x, FieldType.NUMBER)
            case Unary(operand=x):
                return ~self.compile(x, FieldType.BOOL)
            case Binary():
                return self._binary(node)
            case InList():
                return self._in(node)
            case Call():
                return self._call(node, want)
        raise TypeError(f"not an expression: {node!r}")  # pragma: no cover

    def _binary(self, node: Binary) -> pl.Expr:
        if node.op in COMPARISONS:
            want = self.types.synth(node.left) or self.types.synth(node.right)
            a, b = self.compile(node.left, want), self.compile(node.right, want)
            if not a.meta.root_names() and b.meta.root_names():
                # constant first: polars 2.1 can return one row instead of the batch
                return COMPARISONS[FLIPPED[node.op]](b, a)
            return COMPARISONS[node.op](a, b)
        kind = FieldType.BOOL if node.op in ("and", "or") else FieldType.NUMBER
        a, b = self.compile(node.left, kind), self.compile(node.right, kind)
        if node.op == "and":
            return a & b
        if node.op == "or":
            return a | b
        if node.op == "/":
            return pl.when(b == 0).then(None).otherwise(a / b)
        return ARITHMETIC[node.op](a, b)

    def _in(self, node: InList) -> pl.Expr:
        kind = type_of(node.items[0].value) if node.items else None
        operand = self.compile(node.operand, kind)
        if kind is FieldType.NUMBER:
            operand = operand.cast(pl.Float64)
        if node.items:
            hit = operand.is_in([item.value for item in node.items])
        else:
            hit = pl.when(operand.is_null()).then(None).otherwise(pl.lit(False))
        return ~hit if node.negated else hit

    def _call(self, node: Call, want: FieldType | None) -> pl.Expr:
        spec = BUILTINS[node.name]
        if node.name == "coalesce":
            return self._coalesce(node.args, want)
        args = [self.compile(arg, spec.params) for arg in node.args]
        if node.name == "round":  # polars takes the decimals as an int, not an expression
            digits = node.args[1] if len(node.args) > 1 else Literal(0.0, node.column)
            return pl_round(args[0], int(digits.value))  # type: ignore[attr-defined, arg-type]
        return spec.pl(*args)


    def _coalesce(self, args: Sequence[Expr], want: FieldType | None) -> pl.Expr:
        """Skip null literals and stop at the first other literal, so that no polars
        expression is rooted at a literal while reading columns (polars 2.1 would then
        return one row instead of the batch)."""
        kept: list[Expr] = []
        for arg in args:
            if isinstance(arg, Literal) and arg.value is None:
                continue
            kept.append(arg)
            if isinstance(arg, Literal):
                break
        if not kept:
            return self.compile(args[0], want)
        return pl_coalesce(*(self.compile(arg, want) for arg in kept))


def to_polars(expr: Expr, column: Callable[[str], pl.Expr] = _default_column, *,
              scalar_only: Collection[str] = ()) -> pl.Expr:
    """Compile to a polars expression over a batch of events, usable in ``df.filter()``.

    ``column`` maps a name to a column (default: ``"a.b"`` reads struct field ``b`` of column
    ``a``). Names in ``scalar_only`` are functions that exist for scalar targets only; using them
    here gets a clearer error than an unknown function. Columns should already have the types
    :func:`infer_field_types` gives (numbers as Float64).

    >>> import polars as pl
    >>> from kpistream.core.expr import parse
    >>> df = pl.DataFrame({"user": [{"city": "Xi'an"}, {"city": "Lhasa"}], "n": [3.0, 0.0]})
    >>> df.select(to_polars(parse("user.city == 'Lhasa' or 6 / n > 1")).alias("r"))["r"].to_list()
    [True, True]
    >>> df.select(to_polars(parse("6 / n")).alias("r"))["r"].to_list()
    [2.0, None]
    """
    check_refs(expr, {k: (v.min_args, v.max_args) for k, v in BUILTINS.items()}, None,
               scalar_only)
    return _ToPolars(column, Types().run(expr, None)).compile(expr)
