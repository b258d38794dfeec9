"""The error every stage of the expression language raises."""

from __future__ import annotations

from kpistream.errors import KpistreamError


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
