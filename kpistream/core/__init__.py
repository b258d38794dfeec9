"""The pure core: rule sets, expressions, windows, aggregates, alerts, notification decisions.

Contract: synchronous and deterministic. Nothing here imports asyncio, aiokafka, faust,
prometheus_client or apprise (an import-linter contract in ``pyproject.toml`` enforces it),
and nothing reads the clock: processing time is an argument (``now_ms``). The shell feeds
batches of raw messages to :class:`~kpistream.core.engine.Engine` and ships what it returns.
"""

from kpistream.core.engine import Engine, IngestResult, Step
from kpistream.core.loader import load_rules, load_rules_text
from kpistream.core.ruleset import RuleSet

__all__ = ["Engine", "IngestResult", "RuleSet", "Step", "load_rules", "load_rules_text"]
