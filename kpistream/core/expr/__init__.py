r"""Expressions in rule files: ``where:`` filters, ``expr:`` derived KPIs, ``when:`` conditions.

A small, side-effect-free language. :func:`parse` turns text into a tree of frozen dataclasses
(an LALR grammar in lark); :func:`to_polars` compiles it into a polars expression evaluated over
a batch of events, :func:`to_python` into nested closures evaluated over one mapping. Both give
the same result for the same values. Nothing from the rule file reaches ``eval``, ``exec``,
attribute access or builtins: names are keys of a mapping, functions come from a fixed table.

Vocabulary
----------
- literals: numbers ``3``, ``2.5``, ``1e3`` (every number is a float); strings ``"paid"`` or
  ``'paid'`` with the escapes ``\\ \" \' \n \r \t \b \f \uXXXX``; ``true``, ``false``, ``null``;
  durations ``250ms``, ``30s``, ``5m``, ``1h30m``, ``1d``, ``1w``, worth their length in seconds.
- names: ``amount``, or dotted ``user.city`` to read a nested object. A missing field is null.
  Names may not start with ``__``.
- operators, loosest first: ``or``; ``and``; ``not``; ``== != < <= > >=``, ``in [..]`` and
  ``not in [..]`` (a list of literals, without null); ``+ -``; ``* /``; unary ``-``; ``( )``;
  function calls. Comparisons do not chain: write ``a < b and b < c``.

Functions
---------
- ``abs(x)``: absolute value of a number.
- ``min(a, b, ...)``, ``max(a, b, ...)``: smallest or largest of two or more numbers.
- ``round(x)``, ``round(x, n)``: ``x`` rounded to ``n`` decimals (a whole number literal from 0
  to 10, default 0), halves away from zero: ``round(2.5)`` is 3, ``round(-0.125, 2)`` is -0.13.
- ``coalesce(a, b, ...)``: the first argument that is not null (null when all are).
- ``lower(s)``, ``upper(s)``: the string in lower or upper case.
- ``contains(s, sub)``, ``startswith(s, prefix)``, ``endswith(s, suffix)``: substring tests,
  case-sensitive, no patterns.
- ``is_null(x)``: true when ``x`` is null (a missing field, a null literal, a division by zero).

Scalar targets (``expr:``, ``when:``) may add functions: see :func:`to_python`.

Null, types and errors
----------------------
- null propagates through arithmetic, comparisons, ``in`` and every function except
  ``coalesce`` and ``is_null``; ``and``, ``or`` and ``not`` use three-valued logic, as polars
  does: ``null and false`` is false, ``null or true`` is true, anything else with null is null.
- ``x / 0`` is null, never infinite and never an error.
- Types are inferred from usage (:func:`infer_field_types`); comparing a number with a string,
  adding strings or ``not`` on a number are errors at compile time, with a column.
- A value of the wrong type at run time (a string where a number was inferred) raises
  :class:`ExprError` from :func:`to_python` and a polars error from :func:`to_polars`; the shell
  casts event fields to their inferred types first.

Examples
--------
>>> rule = parse('status == "paid" and amount / qty > 10')
>>> check = to_python(rule)
>>> check({"status": "paid", "amount": 50, "qty": 2})
True
>>> print(check({"status": "paid", "amount": 50, "qty": 0}))
None
>>> sorted(infer_field_types(rule).items())
[('amount', <FieldType.NUMBER: 'number'>), ('qty', <FieldType.NUMBER: 'number'>),
 ('status', <FieldType.STRING: 'string'>)]
>>> import polars as pl
>>> batch = pl.DataFrame({"status": ["paid", "open"], "amount": [50.0, 80.0], "qty": [2.0, 1.0]})
>>> batch.filter(to_polars(rule))["amount"].to_list()
[50.0]
"""

from __future__ import annotations

from kpistream.core.expr.errors import ExprError
from kpistream.core.expr.inference import infer_field_types
from kpistream.core.expr.parser import MAX_DEPTH as MAX_DEPTH
from kpistream.core.expr.parser import parse
from kpistream.core.expr.syntax import Binary, Call, Expr, InList, Literal, Name, Unary, names
from kpistream.core.expr.syntax import Value as Value
from kpistream.core.expr.to_polars import to_polars
from kpistream.core.expr.to_python import Compiled as Compiled
from kpistream.core.expr.to_python import Row as Row
from kpistream.core.expr.to_python import ScalarFunction, to_python
from kpistream.core.expr.types import FieldType

__all__ = [
    "Binary",
    "Call",
    "Expr",
    "ExprError",
    "FieldType",
    "InList",
    "Literal",
    "Name",
    "ScalarFunction",
    "Unary",
    "infer_field_types",
    "names",
    "parse",
    "to_polars",
    "to_python",
]

# Public names read as ``kpistream.core.expr.X`` in tracebacks, reprs and pickles, as they did
# before the split (httpx does the same for its private modules). ``Value``, ``Row``,
# ``Compiled`` and ``MAX_DEPTH`` stay importable from here too, outside ``__all__``.
for _obj in (ExprError, FieldType, Expr, Literal, Name, Unary, Binary, InList, Call, names,
             parse, infer_field_types, to_polars, to_python):
    _obj.__module__ = __name__
del _obj
