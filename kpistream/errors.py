"""The errors kpistream raises, one short hierarchy.

Shell modules translate third-party errors (aiokafka, Apprise, OS) into these, so callers
never catch a library's own exception types.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BrokerUnavailable",
    "EventError",
    "KpistreamError",
    "Problem",
    "RuleError",
    "UsageError",
]


class KpistreamError(Exception):
    """Base class of every error kpistream raises on purpose."""


class UsageError(KpistreamError):
    """Command-line arguments or settings that do not make sense together."""


class EventError(KpistreamError):
    """An events file that cannot be read (backtest, produce)."""


class BrokerUnavailable(KpistreamError):
    """The Kafka broker could not be reached, or an embedded one could not start."""


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in a rule file, at a 1-based line and column.

    >>> str(Problem("rules/a.yaml", 3, 7, 'kpi "gmv": unknown key "windw"'))
    'rules/a.yaml:3:7: kpi "gmv": unknown key "windw"'
    """

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class RuleError(KpistreamError):
    """A rule set with problems; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
