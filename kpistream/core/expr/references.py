"""Checks that every name and function an expression uses exists, with enough arguments."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping

from kpistream.core.expr.errors import ExprError
from kpistream.core.expr.syntax import Call, Expr, Name, walk


def _plural(n: int) -> str:
    return f"{n} argument" + ("" if n == 1 else "s")


def _arity_text(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"at least {_plural(lo)}"
    if lo == hi:
        return _plural(lo)
    return f"{lo} or {_plural(hi)}" if hi == lo + 1 else f"{lo} to {_plural(hi)}"


def _did_you_mean(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def check_refs(expr: Expr, arities: Mapping[str, tuple[int, int | None]],
               allowed_names: Collection[str] | None, scalar_only: Collection[str] = ()
               ) -> None:
    """Raise for the first (leftmost) unknown name, unknown function or wrong argument count."""
    problems = [p for node in walk(expr)
                if (p := _ref_problem(node, arities, allowed_names, scalar_only))]
    if problems:
        raise min(problems, key=lambda p: p.column)


def _ref_problem(node: Expr, arities: Mapping[str, tuple[int, int | None]],
                 allowed: Collection[str] | None, scalar_only: Collection[str]
                 ) -> ExprError | None:
    if isinstance(node, Name) and allowed is not None:
        if node.name in allowed or node.name.split(".")[0] in allowed:
            return None
        choices = f"expected one of {', '.join(sorted(allowed))}" if allowed else (
            "no names can be used here")
        return ExprError(f'unknown name "{node.name}"; {choices}'
                         f"{_did_you_mean(node.name, allowed)}", node.column)
    if not isinstance(node, Call):
        return None
    if node.name in scalar_only:
        return ExprError(f'function "{node.name}" is not available here; it works only on '
                         "single values (expr:, when:), not on batches of events", node.column)
    if node.name not in arities:
        return ExprError(f'unknown function "{node.name}"; expected one of '
                         f"{', '.join(sorted(arities))}{_did_you_mean(node.name, arities)}",
                         node.column)
    lo, hi = arities[node.name]
    if len(node.args) < lo or (hi is not None and len(node.args) > hi):
        return ExprError(f"{node.name}() takes {_arity_text(lo, hi)}, got {len(node.args)}",
                         node.column)
    return None
