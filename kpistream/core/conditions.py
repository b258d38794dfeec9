"""Alert conditions over every series of a closed window at once, with polars.

The alerts of one KPI are evaluated together: one frame per window holds each series' value
and the baselines the conditions read (``prev(3)``, ``avg_over(1h)``, ... become columns,
each computed once from the KPI's shared history; ``pct_change(x)`` becomes arithmetic), and
one ``select`` gives every condition's verdict for every series. Only the series where a
condition holds, or that have an alert state, go on to the state machines. This has the same
semantics as the scalar closures (null → the condition does not hold).

>>> from kpistream.core.baselines import KpiHistory
>>> history = KpiHistory(60_000, 600_000)
>>> history.add(60_000, {("a",): 10.0, ("b",): 10.0})
>>> cc = ConditionColumns(["value < 5", "pct_change(prev()) > 50"])
>>> cc.verdicts([("a",), ("b",)], [3.0, 20.0], history, 120_000)
[[True, False], [False, True]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import polars as pl

from kpistream.core import expr as ex
from kpistream.core.baselines import BASELINES, KpiHistory

__all__ = ["ConditionColumns", "holds"]

_FROM_HISTORY = ("prev", "ago", "avg_over")
#: Up to this many series, conditions run as scalar closures: building a polars frame costs
#: more than it saves (a backtest of one series closes a window per event).
SCALAR_MAX_SERIES = 16


def holds(test, env: Mapping[str, object]) -> bool:
    """Whether a compiled condition is true for ``env``; an error or null means it is not."""
    try:
        return test(env) is True
    except (ex.ExprError, ArithmeticError, ValueError, TypeError):
        return False


class ConditionColumns:
    """Compiled conditions over ``value`` and baselines of one KPI."""

    def __init__(self, texts: Sequence[str], *,
                 scalar_max_series: int = SCALAR_MAX_SERIES) -> None:
        self.scalar_max_series = scalar_max_series
        self.baselines: dict[tuple[str, float], str] = {}
        self.exprs = [ex.to_polars(self._rewrite(ex.parse(t)), pl.col).fill_null(False)
                      .alias(f"c{i}") for i, t in enumerate(texts)]
        self.tests = [ex.to_python(ex.parse(t), functions=BASELINES) for t in texts]

    def verdicts(self, keys: Sequence[tuple[str, ...]], values: Sequence[float],
                 history: KpiHistory, end_ms: int,
                 extras: Sequence[Mapping[str, object]] | None = None) -> list[list[bool]]:
        """Per condition, whether it holds for each series (in ``keys`` order).

        ``extras`` gives each series' further names (a KPI's anomaly band, its standing
        against targets: see :func:`kpistream.core.alerts.assessment_env`); they become
        columns, boolean for ``is_anomaly``.
        """
        if not self.exprs:
            return []
        if len(keys) <= self.scalar_max_series:
            return self._scalar_verdicts(keys, values, history, end_ms, extras)
        columns: dict[str, list] = {"value": list(values)}
        for (name, arg), column in self.baselines.items():
            fn = BASELINES[name][0]
            columns[column] = [fn({"__history": history.of(k), "__end": end_ms}, arg)
                               for k in keys]
        schema = dict.fromkeys(columns, pl.Float64)
        if extras:
            for name in (n for n in extras[0] if not n.startswith("__")):
                columns[name] = [env[name] for env in extras]
                schema[name] = pl.Boolean if name == "is_anomaly" else pl.Float64
        frame = pl.DataFrame(columns, schema=schema)
        result = frame.with_columns(self.exprs)  # broadcasts conditions that read no column
        return [result.get_column(f"c{i}").to_list() for i in range(len(self.exprs))]

    def _scalar_verdicts(self, keys, values, history: KpiHistory, end_ms: int,
                         extras: Sequence[Mapping[str, object]] | None) -> list[list[bool]]:
        envs = []
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            env = {"value": value, "__history": history.of(key), "__end": end_ms}
            if extras:
                env.update(extras[i])
            envs.append(env)
        return [[holds(test, env) for env in envs] for test in self.tests]

    def _rewrite(self, node: ex.Expr) -> ex.Expr:
        """Baseline calls become columns; ``pct_change(x)`` becomes ``(value - x) / abs(x) *
        100`` (null when x is 0 or null, as the scalar function)."""
        match node:
            case ex.Call(name=name, args=args) if name in _FROM_HISTORY:
                arg = args[0].value if args else 1.0  # a literal: checked at compile time
                column = self.baselines.setdefault((name, arg), f"b{len(self.baselines)}")
                return ex.Name(column, node.column)
            case ex.Call(name="pct_change", args=(base,)):
                base = self._rewrite(base)
                value = ex.Name("value", node.column)
                change = ex.Binary("-", value, base, node.column)
                ratio = ex.Binary("/", change, ex.Call("abs", (base,), node.column), node.column)
                return ex.Binary("*", ratio, ex.Literal(100.0, node.column), node.column)
            case ex.Call(args=args):
                return replace(node, args=tuple(self._rewrite(a) for a in args))
            case ex.Unary(operand=operand):
                return replace(node, operand=self._rewrite(operand))
            case ex.Binary(left=left, right=right):
                return replace(node, left=self._rewrite(left), right=self._rewrite(right))
            case ex.InList(operand=operand):
                return replace(node, operand=self._rewrite(operand))
        return node
