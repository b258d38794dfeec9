"""Text to syntax tree: the LALR grammar, the tree builder, and positioned syntax errors."""

from __future__ import annotations

import math
import re
from collections.abc import Collection

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from kpistream.core.durations import parse_duration_ms
from kpistream.core.expr.errors import ExprError
from kpistream.core.expr.syntax import Binary, Call, Expr, InList, Literal, Name, Unary, children

MAX_DEPTH = 100

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
        stack.extend((child, depth + 1) for child in children(node))
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
