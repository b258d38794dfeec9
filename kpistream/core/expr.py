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

import difflib
import enum
import math
import operator
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import polars as pl
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from kpistream.core.durations import parse_duration_ms
from kpistream.errors import KpistreamError

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

MAX_DEPTH = 100
Row = Mapping[str, object]
Value = float | str | bool | None
ScalarFunction = tuple[Callable[..., object], tuple[int, int | None]]
"""An extra scalar function: ``(fn, (min_args, max_args))``, ``max_args`` None for no limit.

``fn(row, *args)`` gets the mapping the compiled expression was called with and the evaluated
arguments (None for null, no null propagation); its result is used as-is.
"""


class ExprError(KpistreamError):
    """An expression that cannot be parsed, compiled or evaluated, at a 1-based column.

    >>> str(ExprError('unknown name "x"', 5))
    'column 5: unknown name "x"'
    """

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message, column)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"


class FieldType(enum.Enum):
    """The type of a field as used by an expression."""

    NUMBER = "number"
    STRING = "string"
    BOOL = "boolean"


# --- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """Base of the syntax tree; ``str()`` renders it back, fully parenthesised."""

    def __str__(self) -> str:
        return _render(self)


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


def _children(node: Expr) -> tuple[Expr, ...]:
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


def _walk(expr: Expr) -> Iterator[Expr]:
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(_children(node)))


def _render(node: Expr) -> str:
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

    >>> sorted(names(parse("user.city == 'x' or lower(a) in ['y'] and f(b)")))
    ['a', 'b', 'user.city']
    """
    return {node.name for node in _walk(expr) if isinstance(node, Name)}


# --- parsing -----------------------------------------------------------------------------------

_GRAMMAR = r"""
?start: or_
?or_: and_ | or_ OR and_ -> binary
?and_: not_ | and_ AND not_ -> binary
?not_: cmp | NOT not_ -> unary
?cmp: sum
    | sum CMP sum -> binary
    | sum IN choices -> in_list
    | sum NOT IN choices -> not_in_list
?sum: prod | sum PLUS prod -> binary | sum MINUS prod -> binary
?prod: neg | prod STAR neg -> binary | prod SLASH neg -> binary
?neg: atom | MINUS neg -> unary
?atom: literal
    | NAME -> name
    | NAME LPAR [args] RPAR -> call
    | LPAR or_ RPAR -> paren
args: or_ (COMMA or_)*
choices: LSQB [choice (COMMA choice)*] RSQB
?choice: literal | MINUS NUMBER -> negative | MINUS DURATION -> negative
?literal: NUMBER -> number
    | DURATION -> duration
    | STRING -> string
    | TRUE -> true
    | FALSE -> false
    | NULL -> null

OR: "or"
AND: "and"
NOT: "not"
IN: "in"
TRUE: "true"
FALSE: "false"
NULL: "null"
CMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
LPAR: "("
RPAR: ")"
LSQB: "["
RSQB: "]"
COMMA: ","
DURATION.2: /(\d+(ms|s|m|h|d|w))+(?![A-Za-z0-9_])/
NUMBER: /(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/
STRING: /"(\\.|[^"\\\n])*"/ | /'(\\.|[^'\\\n])*'/
%ignore /\s+/
"""
_IDENT = "[A-Za-z_][A-Za-z0-9_]*"
_KEYWORDS = "and|or|not|in|true|false|null"  # never names, even where a keyword cannot go
_GRAMMAR += f"NAME: /(?!({_KEYWORDS})(?![A-Za-z0-9_])){_IDENT}(\\.{_IDENT})*/\n"

_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t", "b": "\b",
            "f": "\f"}
_RENDER_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")


def _col(tok: Token) -> int:
    return (tok.start_pos or 0) + 1


def _unescape(tok: Token) -> str:
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code in _ESCAPES:
            return _ESCAPES[code]
        if len(code) == 5 and not 0xD800 <= int(code[1:], 16) <= 0xDFFF:
            return chr(int(code[1:], 16))
        raise ExprError(f'unknown escape "\\{code}" in string; expected one of '
                        '\\\\ \\" \\\' \\n \\r \\t \\b \\f \\uXXXX', _col(tok) + 1 + m.start())

    return _ESCAPE.sub(one, tok[1:-1])


def _number(tok: Token, sign: float = 1.0) -> Literal:
    if tok.type == "DURATION":
        return Literal(sign * parse_duration_ms(str(tok)) / 1000, _col(tok))
    value = float(tok)
    if not math.isfinite(value):
        raise ExprError(f"number {tok} is too large", _col(tok))
    return Literal(sign * value, _col(tok))


def _name(tok: Token) -> str:
    if any(part.startswith("__") for part in tok.split(".")):
        raise ExprError(f'name "{tok}" is not allowed; names may not start with "__"', _col(tok))
    return str(tok)


@v_args(inline=True)
class _Build(Transformer):
    """Builds the syntax tree while the LALR parser reduces (no recursion)."""

    def number(self, tok: Token) -> Literal:
        return _number(tok)

    duration = number

    def negative(self, _minus: Token, tok: Token) -> Literal:
        return _number(tok, -1.0)

    def string(self, tok: Token) -> Literal:
        return Literal(_unescape(tok), _col(tok))

    def true(self, tok: Token) -> Literal:
        return Literal(True, _col(tok))

    def false(self, tok: Token) -> Literal:
        return Literal(False, _col(tok))

    def null(self, tok: Token) -> Literal:
        return Literal(None, _col(tok))

    def name(self, tok: Token) -> Name:
        return Name(_name(tok), _col(tok))

    def call(self, tok: Token, _lpar: Token, args: list[Expr] | None, _rpar: Token) -> Call:
        return Call(_name(tok), tuple(args or ()), _col(tok))

    def args(self, *items: Expr | Token) -> list[Expr]:
        return [x for x in items if isinstance(x, Expr)]

    def choices(self, *items: Literal | Token | None) -> tuple[Literal, ...]:
        return tuple(x for x in items if isinstance(x, Literal))

    def paren(self, _lpar: Token, inner: Expr, _rpar: Token) -> Expr:
        return inner

    def unary(self, op: Token, operand: Expr) -> Unary:
        return Unary(str(op), operand, _col(op))

    def binary(self, left: Expr, op: Token, right: Expr) -> Binary:
        return Binary(str(op), left, right, _col(op))

    def in_list(self, operand: Expr, op: Token, items: tuple[Literal, ...]) -> InList:
        return InList(operand, items, False, _col(op))

    def not_in_list(self, operand: Expr, op: Token, _in: Token, items: tuple[Literal, ...]
                    ) -> InList:
        return InList(operand, items, True, _col(op))


_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="contextual", transformer=_Build(),
               maybe_placeholders=True)

_VALUE_TERMINALS = {"NAME"}  # every state that takes a value takes a name
_LITERAL_TERMINALS = {"NUMBER", "STRING", "DURATION", "TRUE", "FALSE", "NULL"}
_OPERATOR_TERMINALS = {"OR", "AND", "CMP", "PLUS", "STAR", "SLASH", "IN"}
_PUNCTUATION = (("IN", '"in"'), ("LSQB", '"["'), ("COMMA", '","'), ("RPAR", '")"'),
                ("RSQB", '"]"'), ("$END", "end of expression"))
_CHAR_HINTS = {"=": ' (use "==" to compare)', "&": ' (use "and")', "|": ' (use "or")',
               "!": ' (use "not" or "!=")'}


def _expected(terminals: Collection[str] | None) -> str:
    """Describe what the parser would have accepted, in words."""
    allowed = set(terminals or ())
    parts = []
    if allowed & _VALUE_TERMINALS:
        parts.append("a value")
    elif allowed & _LITERAL_TERMINALS:
        parts.append("a literal")
    if allowed & (_OPERATOR_TERMINALS - {"IN"}):
        parts.append("an operator")
        allowed.discard("IN")
    parts += [words for term, words in _PUNCTUATION if term in allowed]
    if not parts:
        return ""
    return "; expected " + (" or ".join(parts) if len(parts) < 3
                            else ", ".join(parts[:-1]) + " or " + parts[-1])


def _describe(tok: Token) -> str:
    text = tok if len(tok) <= 30 else tok[:27] + "..."
    match tok.type:
        case "$END":
            return "end of expression"
        case "STRING":
            return f"string {text}"
        case "NUMBER" | "DURATION":
            return f"number {text}"
        case "NAME":
            return f'name "{text}"'
    return f'"{text}"'


def _accepted(err: UnexpectedInput, fallback: Collection[str] | None) -> Collection[str]:
    """The terminals the parser accepts here; LALR's own lists merge unrelated contexts."""
    try:
        return err.interactive_parser.accepts()
    except AttributeError:  # pragma: no cover - lark attaches a parser to every LALR error
        return fallback or ()


def _syntax_error(text: str, err: UnexpectedInput) -> ExprError:
    if isinstance(err, UnexpectedToken):
        tok, expected = err.token, _accepted(err, err.expected)
        if tok.type == "$END":
            return ExprError(f"unexpected end of expression{_expected(expected)}",
                             len(text.rstrip()) + 1)
        if tok.type == "CMP" and "CMP" not in expected:
            return ExprError(f'unexpected "{tok}"; comparisons cannot be chained, join them '
                             'with "and"', _col(tok))
        return ExprError(f"unexpected {_describe(tok)}{_expected(expected)}", _col(tok))
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream
        char = text[pos]
        if char in "\"'":
            return ExprError("unterminated string; expected a closing " + char, pos + 1)
        message = f'unexpected character "{char}"{_expected(_accepted(err, err.allowed))}'
        return ExprError(message + _CHAR_HINTS.get(char, ""), pos + 1)
    return ExprError("cannot parse the expression", 1)  # pragma: no cover - lark's other errors


def _depth(expr: Expr) -> int:
    best, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        best = max(best, depth)
        stack.extend((child, depth + 1) for child in _children(node))
    return best


def parse(text: str) -> Expr:
    """Parse expression text into a syntax tree; raise :class:`ExprError` with a column.

    >>> print(parse("a + b * -c > 2 or not x in ['p', 'q']"))
    (((a + (b * (-c))) > 2) or (not (x in ["p", "q"])))
    >>> parse("amount > )")
    Traceback (most recent call last):
    ...
    kpistream.core.expr.ExprError: column 10: unexpected ")"; expected a value
    """
    if not text.strip():
        raise ExprError("empty expression; expected a value", 1)
    try:
        expr = _PARSER.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from e
    if _depth(expr) > MAX_DEPTH:
        raise ExprError(f"expression nested too deeply; expected at most {MAX_DEPTH} levels", 1)
    return expr


# --- functions ---------------------------------------------------------------------------------


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


def _pl_coalesce(*xs: pl.Expr) -> pl.Expr:
    """``fill_null`` chain: ``pl.coalesce`` next to a literal comparison loses rows (polars 2.1)."""
    out = xs[0]
    for x in xs[1:]:
        out = out.fill_null(x)
    return out


def _pl_round(x: pl.Expr, digits: int = 0) -> pl.Expr:
    return x.round(digits, mode="half_away_from_zero")


@dataclass(frozen=True)
class _Builtin:
    min_args: int
    max_args: int | None
    params: FieldType | None  # every argument's type; None: any (or see coalesce)
    returns: FieldType | None
    py: Callable[..., object]
    pl: Callable[..., pl.Expr]
    nulls: bool = True  # null in, null out


_N, _S, _B = FieldType.NUMBER, FieldType.STRING, FieldType.BOOL
_BUILTINS: dict[str, _Builtin] = {
    "abs": _Builtin(1, 1, _N, _N, abs, pl.Expr.abs),
    "min": _Builtin(2, None, _N, _N, min, lambda *xs: _pl_present(xs, pl.min_horizontal(*xs))),
    "max": _Builtin(2, None, _N, _N, max, lambda *xs: _pl_present(xs, pl.max_horizontal(*xs))),
    "round": _Builtin(1, 2, _N, _N, _round, _pl_round),
    "coalesce": _Builtin(1, None, None, None, _first_present, _pl_coalesce, nulls=False),
    "lower": _Builtin(1, 1, _S, _S, str.lower, lambda s: s.str.to_lowercase()),
    "upper": _Builtin(1, 1, _S, _S, str.upper, lambda s: s.str.to_uppercase()),
    "contains": _Builtin(2, 2, _S, _B, str.__contains__,
                         lambda s, sub: s.str.contains(sub, literal=True)),
    "startswith": _Builtin(2, 2, _S, _B, str.startswith, lambda s, p: s.str.starts_with(p)),
    "endswith": _Builtin(2, 2, _S, _B, str.endswith, lambda s, p: s.str.ends_with(p)),
    "is_null": _Builtin(1, 1, None, _B, lambda x: x is None, pl.Expr.is_null, nulls=False),
}


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


def _check_round_digits(node: Call) -> None:
    if len(node.args) < 2:
        return
    digits = node.args[1]
    value = digits.value if isinstance(digits, Literal) else None
    if not (isinstance(value, float) and value.is_integer() and 0 <= value <= 10):
        raise ExprError("round() takes its decimals as a whole number from 0 to 10, got "
                        f"{digits}", digits.column)


def _check_refs(expr: Expr, arities: Mapping[str, tuple[int, int | None]],
                allowed_names: Collection[str] | None, scalar_only: Collection[str] = ()
                ) -> None:
    """Raise for the first (leftmost) unknown name, unknown function or wrong argument count."""
    problems = [p for node in _walk(expr)
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


# --- types -------------------------------------------------------------------------------------

_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _a(kind: FieldType | str) -> str:
    word = kind.value if isinstance(kind, FieldType) else kind
    return ("an " if word[0] in "aeiou" else "a ") + word


def _type_of(value: object) -> FieldType | None:
    if isinstance(value, bool):
        return FieldType.BOOL
    if isinstance(value, int | float):
        return FieldType.NUMBER
    return FieldType.STRING if isinstance(value, str) else None


class _Types:
    """Infers field types from usage; raises :class:`ExprError` on conflicting uses."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[FieldType, int]] = {}
        self.changed = False

    def run(self, expr: Expr, result: FieldType | None) -> _Types:
        """Repeat until no new name gets a type, so later uses inform earlier ones."""
        self.changed = True
        while self.changed:
            self.changed = False
            if result is None:
                self.synth(expr)
            else:
                self.expect(expr, result, None)
        return self

    def synth(self, node: Expr) -> FieldType | None:
        """The node's type, or None when it cannot be known (null, untyped names)."""
        match node:
            case Literal(value=v):
                return _type_of(v)
            case Name(name=n):
                return self.fields[n][0] if n in self.fields else None
            case Unary(op=op, operand=x):
                kind = FieldType.NUMBER if op == "-" else FieldType.BOOL
                self.expect(x, kind, f'"{op}"')
                return kind
            case Binary(op=op, left=a, right=b) if op not in _COMPARISONS:
                kind = FieldType.BOOL if op in ("and", "or") else FieldType.NUMBER
                self.expect(a, kind, f'"{op}"')
                self.expect(b, kind, f'"{op}"')
                return kind
            case Binary():
                self._compare(node)
            case InList():
                self._in(node)
            case Call():
                return self._call(node)
        return FieldType.BOOL

    def expect(self, node: Expr, want: FieldType, ctx: str | None) -> None:
        """Require ``node`` to have type ``want``; names get that type."""
        if isinstance(node, Name):
            self._bind(node, want)
        elif isinstance(node, Call) and node.name == "coalesce":
            for arg in node.args:
                self.expect(arg, want, ctx)
        elif (got := self.synth(node)) not in (None, want):
            what = f"{ctx} expects" if ctx else "expected"
            raise ExprError(f"{what} {_a(want)}, got {_a(got)}", node.column)

    def _bind(self, node: Name, want: FieldType) -> None:
        have = self.fields.get(node.name)
        if have is None:
            self.fields[node.name] = (want, node.column)
            self.changed = True
        elif have[0] is not want:
            raise ExprError(f'conflicting types for "{node.name}": used as {_a(want)} here but '
                            f"as {_a(have[0])} at column {have[1]}", node.column)

    def _compare(self, node: Binary) -> None:
        for side in (node.left, node.right):
            if isinstance(side, Literal) and side.value is None:
                raise ExprError("comparing with null always gives null; use is_null(...) "
                                "instead", side.column)
        ctx = f'"{node.op}"'
        lt, rt = self.synth(node.left), self.synth(node.right)
        if lt is None or rt is None or lt is rt:
            if lt is None and rt is not None:
                self.expect(node.left, rt, ctx)
            elif rt is None and lt is not None:
                self.expect(node.right, lt, ctx)
        elif isinstance(node.right, Name):  # a name typed earlier: blame this use of it
            self.expect(node.right, lt, ctx)
        elif isinstance(node.left, Name):
            self.expect(node.left, rt, ctx)
        else:
            raise ExprError(f"{ctx} compares {_a(lt)} with {_a(rt)}", node.column)
        if FieldType.BOOL in (lt, rt) and node.op not in ("==", "!="):
            raise ExprError(f"{ctx} needs numbers or strings, got booleans", node.column)

    def _in(self, node: InList) -> None:
        kind = None
        for item in node.items:
            got = _type_of(item.value)
            if got is None:
                raise ExprError("null cannot be in a list; use is_null(...) instead", item.column)
            if kind not in (None, got):
                raise ExprError(f"the list mixes {_a(kind)} and {_a(got)}",  # type: ignore
                                item.column)
            kind = got
        if kind is None:
            self.synth(node.operand)
        else:
            self.expect(node.operand, kind, '"in"')

    def _call(self, node: Call) -> FieldType | None:
        spec = _BUILTINS.get(node.name)
        if spec is None or node.name == "is_null":  # extra functions are untyped
            for arg in node.args:
                self.synth(arg)
            return spec.returns if spec else None
        if node.name == "coalesce":
            kinds = [k for arg in node.args if (k := self.synth(arg)) is not None]
            if not kinds:
                return None
            for arg in node.args:
                self.expect(arg, kinds[0], "coalesce()")
            return kinds[0]
        for arg in node.args:
            self.expect(arg, spec.params, f"{node.name}()")  # type: ignore[arg-type]
        if node.name == "round":
            _check_round_digits(node)
        return spec.returns


def infer_field_types(expr: Expr, *, result: FieldType | None = None) -> dict[str, FieldType]:
    """The type of every name whose type follows from how it is used.

    ``result`` is the type the whole expression must have (``FieldType.BOOL`` for ``where:``
    and ``when:``), which types a bare name used as the whole condition. Conflicting uses raise
    :class:`ExprError` at the later use.

    >>> infer_field_types(parse('amount > 0 and status in ["paid"] and not vip'))
    {'amount': <FieldType.NUMBER: 'number'>, 'status': <FieldType.STRING: 'string'>,
     'vip': <FieldType.BOOL: 'boolean'>}
    >>> infer_field_types(parse("vip"), result=FieldType.BOOL)
    {'vip': <FieldType.BOOL: 'boolean'>}
    >>> infer_field_types(parse('amount > 0 or amount == "x"'))
    Traceback (most recent call last):
    ...
    kpistream.core.expr.ExprError: column 15: conflicting types for "amount": used as a string
    here but as a number at column 1
    """
    types = _Types().run(expr, result)
    return {name: kind for name, (kind, _) in types.fields.items()}


# --- compiling to polars -----------------------------------------------------------------------

_DTYPES = {FieldType.NUMBER: pl.Float64, FieldType.STRING: pl.String,
           FieldType.BOOL: pl.Boolean}


def _default_column(name: str) -> pl.Expr:
    root, *path = name.split(".")
    column = pl.col(root)
    for part in path:
        column = column.struct.field(part)
    return column


class _ToPolars:
    def __init__(self, column: Callable[[str], pl.Expr], types: _Types) -> None:
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
        if node.op in _COMPARISONS:
            want = self.types.synth(node.left) or self.types.synth(node.right)
            a, b = self.compile(node.left, want), self.compile(node.right, want)
            if not a.meta.root_names() and b.meta.root_names():
                # constant first: polars 2.1 can return one row instead of the batch
                return _COMPARISONS[_FLIPPED[node.op]](b, a)
            return _COMPARISONS[node.op](a, b)
        kind = FieldType.BOOL if node.op in ("and", "or") else FieldType.NUMBER
        a, b = self.compile(node.left, kind), self.compile(node.right, kind)
        if node.op == "and":
            return a & b
        if node.op == "or":
            return a | b
        if node.op == "/":
            return pl.when(b == 0).then(None).otherwise(a / b)
        return _ARITHMETIC[node.op](a, b)

    def _in(self, node: InList) -> pl.Expr:
        kind = _type_of(node.items[0].value) if node.items else None
        operand = self.compile(node.operand, kind)
        if kind is FieldType.NUMBER:
            operand = operand.cast(pl.Float64)
        if node.items:
            hit = operand.is_in([item.value for item in node.items])
        else:
            hit = pl.when(operand.is_null()).then(None).otherwise(pl.lit(False))
        return ~hit if node.negated else hit

    def _call(self, node: Call, want: FieldType | None) -> pl.Expr:
        spec = _BUILTINS[node.name]
        if node.name == "coalesce":
            return self._coalesce(node.args, want)
        args = [self.compile(arg, spec.params) for arg in node.args]
        if node.name == "round":  # polars takes the decimals as an int, not an expression
            digits = node.args[1] if len(node.args) > 1 else Literal(0.0, node.column)
            return _pl_round(args[0], int(digits.value))  # type: ignore[attr-defined, arg-type]
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
        return _pl_coalesce(*(self.compile(arg, want) for arg in kept))


def to_polars(expr: Expr, column: Callable[[str], pl.Expr] = _default_column, *,
              scalar_only: Collection[str] = ()) -> pl.Expr:
    """Compile to a polars expression over a batch of events, usable in ``df.filter()``.

    ``column`` maps a name to a column (default: ``"a.b"`` reads struct field ``b`` of column
    ``a``). Names in ``scalar_only`` are functions that exist for scalar targets only; using them
    here gets a clearer error than an unknown function. Columns should already have the types
    :func:`infer_field_types` gives (numbers as Float64).

    >>> df = pl.DataFrame({"user": [{"city": "Xi'an"}, {"city": "Lhasa"}], "n": [3.0, 0.0]})
    >>> df.select(to_polars(parse("user.city == 'Lhasa' or 6 / n > 1")).alias("r"))["r"].to_list()
    [True, True]
    >>> df.select(to_polars(parse("6 / n")).alias("r"))["r"].to_list()
    [2.0, None]
    """
    _check_refs(expr, {k: (v.min_args, v.max_args) for k, v in _BUILTINS.items()}, None,
                scalar_only)
    return _ToPolars(column, _Types().run(expr, None)).compile(expr)


# --- compiling to Python closures --------------------------------------------------------------

Compiled = Callable[[Row], object]


def _kind_name(value: object) -> str:
    kind = _type_of(value)
    return _a(kind) if kind else _a(type(value).__name__)


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


def _py_builtin(node: Call, spec: _Builtin, args: list[Compiled]) -> Compiled:
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
                fn = _divide if op == "/" else {**_ARITHMETIC, **_COMPARISONS}[op]
                return _py_strict(node, fn, [self.compile(a), self.compile(b)])
            case InList(operand=x):
                return _py_in(node, self.compile(x))
            case Call(name=name, args=args):
                compiled = [self.compile(arg) for arg in args]
                if name in _BUILTINS:
                    return _py_builtin(node, _BUILTINS[name], compiled)
                return _py_extra(self.functions[name][0], compiled)
        raise TypeError(f"not an expression: {node!r}")  # pragma: no cover


def _arities(functions: Mapping[str, ScalarFunction]) -> dict[str, tuple[int, int | None]]:
    clash = sorted(set(functions) & set(_BUILTINS))
    if clash:
        raise ValueError(f"functions {', '.join(clash)} are built in; choose other names")
    table = {k: (v.min_args, v.max_args) for k, v in _BUILTINS.items()}
    return table | {name: arity for name, (_, arity) in functions.items()}


def to_python(expr: Expr, *, allowed_names: Collection[str] | None = None,
              functions: Mapping[str, ScalarFunction] | None = None) -> Compiled:
    """Compile to a function of one mapping (nested closures, no ``eval``).

    ``allowed_names``: when given, any other name is an error. ``functions``: extra scalar
    functions, ``name -> (fn, (min_args, max_args))``; ``fn(row, *args)`` receives the mapping
    and the argument values (see :data:`ScalarFunction`).

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
    _check_refs(expr, _arities(extra), allowed_names)
    _Types().run(expr, None)
    return _ToPython(extra).compile(expr)
