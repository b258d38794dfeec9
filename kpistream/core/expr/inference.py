"""Type inference: the type of every field follows from how the expression uses it."""

from __future__ import annotations

from kpistream.core.expr.errors import ExprError
from kpistream.core.expr.functions import BUILTINS, COMPARISONS, check_round_digits
from kpistream.core.expr.syntax import Binary, Call, Expr, InList, Literal, Name, Unary
from kpistream.core.expr.types import FieldType, type_of, with_article


class Types:
    """Infers field types from usage; raises :class:`ExprError` on conflicting uses."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[FieldType, int]] = {}
        self.changed = False

    def run(self, expr: Expr, result: FieldType | None) -> Types:
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
                return type_of(v)
            case Name(name=n):
                return self.fields[n][0] if n in self.fields else None
            case Unary(op=op, operand=x):
                kind = FieldType.NUMBER if op == "-" else FieldType.BOOL
                self.expect(x, kind, f'"{op}"')
                return kind
            case Binary(op=op, left=a, right=b) if op not in COMPARISONS:
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
            raise ExprError(f"{what} {with_article(want)}, got {with_article(got)}", node.column)

    def _bind(self, node: Name, want: FieldType) -> None:
        have = self.fields.get(node.name)
        if have is None:
            self.fields[node.name] = (want, node.column)
            self.changed = True
        elif have[0] is not want:
            raise ExprError(f'conflicting types for "{node.name}": used as '
                            f"{with_article(want)} here but as {with_article(have[0])} at column "
                            f"{have[1]}", node.column)

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
            raise ExprError(f"{ctx} compares {with_article(lt)} with {with_article(rt)}",
                            node.column)
        if FieldType.BOOL in (lt, rt) and node.op not in ("==", "!="):
            raise ExprError(f"{ctx} needs numbers or strings, got booleans", node.column)

    def _in(self, node: InList) -> None:
        kind = None
        for item in node.items:
            got = type_of(item.value)
            if got is None:
                raise ExprError("null cannot be in a list; use is_null(...) instead", item.column)
            if kind not in (None, got):
                raise ExprError(f"the list mixes {with_article(kind)}"  # type: ignore
                                f" and {with_article(got)}", item.column)
            kind = got
        if kind is None:
            self.synth(node.operand)
        else:
            self.expect(node.operand, kind, '"in"')

    def _call(self, node: Call) -> FieldType | None:
        spec = BUILTINS.get(node.name)
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
            check_round_digits(node)
        return spec.returns


def infer_field_types(expr: Expr, *, result: FieldType | None = None) -> dict[str, FieldType]:
    """The type of every name whose type follows from how it is used.

    ``result`` is the type the whole expression must have (``FieldType.BOOL`` for ``where:``
    and ``when:``), which types a bare name used as the whole condition. Conflicting uses raise
    :class:`ExprError` at the later use.

    >>> from kpistream.core.expr import parse
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
    types = Types().run(expr, result)
    return {name: kind for name, (kind, _) in types.fields.items()}
