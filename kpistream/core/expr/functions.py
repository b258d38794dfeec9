"""Operators and built-in functions, each in Python and polars, shared by both compilers."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from kpistream.core.expr.errors import ExprError
from kpistream.core.expr.syntax import Call, Literal
from kpistream.core.expr.types import FieldType

ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul}
COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _round(x: float, digits: float = 0) -> float:
    """Round half away from zero the way polars does: scale, round, scale back."""
    scale = 10.0 ** int(digits)
    y = x * scale
    a = abs(y)
    whole = math.floor(a) if math.isfinite(a) else a
    r = math.copysign(whole + 1 if a - whole >= 0.5 else whole, y)
    return r / scale if digits else r


def _first_present(*xs: object) -> object:
    return next((x for x in xs if x is not None), None)


def _pl_present(xs: Sequence[pl.Expr], result: pl.Expr) -> pl.Expr:
    return pl.when(pl.any_horizontal(*(x.is_null() for x in xs))).then(None).otherwise(result)


def pl_coalesce(*xs: pl.Expr) -> pl.Expr:
    """``fill_null`` chain: ``pl.coalesce`` next to a literal comparison loses rows (polars 2.1)."""
    out = xs[0]
    for x in xs[1:]:
        out = out.fill_null(x)
    return out


def pl_round(x: pl.Expr, digits: int = 0) -> pl.Expr:
    return x.round(digits, mode="half_away_from_zero")


@dataclass(frozen=True)
class Builtin:
    min_args: int
    max_args: int | None
    params: FieldType | None  # every argument's type; None: any (or see coalesce)
    returns: FieldType | None
    py: Callable[..., object]
    pl: Callable[..., pl.Expr]
    nulls: bool = True  # null in, null out


_N, _S, _B = FieldType.NUMBER, FieldType.STRING, FieldType.BOOL
BUILTINS: dict[str, Builtin] = {
    "abs": Builtin(1, 1, _N, _N, abs, pl.Expr.abs),
    "min": Builtin(2, None, _N, _N, min, lambda *xs: _pl_present(xs, pl.min_horizontal(*xs))),
    "max": Builtin(2, None, _N, _N, max, lambda *xs: _pl_present(xs, pl.max_horizontal(*xs))),
    "round": Builtin(1, 2, _N, _N, _round, pl_round),
    "coalesce": Builtin(1, None, None, None, _first_present, pl_coalesce, nulls=False),
    "lower": Builtin(1, 1, _S, _S, str.lower, lambda s: s.str.to_lowercase()),
    "upper": Builtin(1, 1, _S, _S, str.upper, lambda s: s.str.to_uppercase()),
    "contains": Builtin(2, 2, _S, _B, str.__contains__,
                        lambda s, sub: s.str.contains(sub, literal=True)),
    "startswith": Builtin(2, 2, _S, _B, str.startswith, lambda s, p: s.str.starts_with(p)),
    "endswith": Builtin(2, 2, _S, _B, str.endswith, lambda s, p: s.str.ends_with(p)),
    "is_null": Builtin(1, 1, None, _B, lambda x: x is None, pl.Expr.is_null, nulls=False),
}


def check_round_digits(node: Call) -> None:
    """Require ``round()``'s decimals to be a whole number literal from 0 to 10."""
    if len(node.args) < 2:
        return
    digits = node.args[1]
    value = digits.value if isinstance(digits, Literal) else None
    if not (isinstance(value, float) and value.is_integer() and 0 <= value <= 10):
        raise ExprError("round() takes its decimals as a whole number from 0 to 10, got "
                        f"{digits}", digits.column)
