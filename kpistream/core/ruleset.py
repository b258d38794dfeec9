"""The compiled rule set: what the engine runs, built from validated rule files.

Everything here is immutable and already compiled (filters to polars expressions, formulas
and conditions to closures), so the hot path never parses anything.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl

from kpistream.core.aggregates import Aggregation
from kpistream.core.anomaly import MODEL_VERSION, AnomalyConfig
from kpistream.core.calendar import Calendar
from kpistream.core.expr import FieldType
from kpistream.core.notify.model import Silence

__all__ = ["Alert", "Condition", "Digest", "Kpi", "Owner", "RuleSet", "Source", "Target",
           "label_name"]

Formula = Callable[[Mapping[str, object]], object]


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def label_name(field_name: str) -> str:
    """The Prometheus label for a dimension field: dots become underscores.

    >>> label_name("user.city")
    'user_city'
    """
    return field_name.replace(".", "_")


@dataclass(frozen=True)
class Source:
    """A topic of JSON events and the fields (with types) its KPIs read."""

    name: str
    topic: str
    time_field: str
    partitions: int
    fields: Mapping[str, FieldType]


@dataclass(frozen=True)
class Target:
    """A KPI's target per ``period`` (day, week, month, quarter in the rules' timezone)."""

    period: str
    #: every series' target, unless ``values`` names the series
    value: float | None
    values: Mapping[tuple[str, ...], float] = field(default_factory=dict)

    def of(self, key: tuple[str, ...]) -> float | None:
        """The target of one series (label values in ``by`` order), or None.

        >>> Target("month", 100.0, {("east",): 300.0}).of(("east",))
        300.0
        """
        return self.values.get(key, self.value)


@dataclass(frozen=True, eq=False)
class Kpi:
    """A KPI: aggregated from a source (``agg``) or derived from other KPIs (``formula``)."""

    name: str
    window_ms: int
    hop_ms: int | None
    calendar: Calendar
    by: tuple[str, ...]
    lateness_ms: int
    series_ttl_ms: int
    #: label sets beyond this many fold into ``__other__`` (cardinality guard)
    max_series: int = 10_000
    title: str | None = None
    unit: str | None = None
    owner: str | None = None
    source: str | None = None
    where: pl.Expr | None = None
    agg: Aggregation | None = None
    formula: Formula | None = None
    inputs: tuple[str, ...] = ()
    #: what is computed, as written (``agg where filter``, or the formula)
    computation: str = ""
    #: definitions as data: the business definition (口径), a free description, a version
    definition: str | None = None
    description: str | None = None
    version: str | None = None
    #: the KPI tree: the KPI this one breaks down
    parent: str | None = None
    targets: tuple[Target, ...] = ()
    #: online anomaly detection (``anomaly:``), and the ranges its models skip
    anomaly: AnomalyConfig | None = None
    anomaly_exclude: tuple[tuple[int, int], ...] = ()

    @functools.cached_property
    def labels(self) -> tuple[str, ...]:
        return tuple(label_name(f) for f in self.by)

    @property
    def signature(self) -> str:
        """A hash of what the KPI's state depends on: a change starts its state afresh."""
        return _digest(self.source, self.computation, self.window_ms, self.hop_ms, self.by,
                       self.lateness_ms, self.series_ttl_ms, self.inputs)

    @property
    def anomaly_signature(self) -> str:
        """A hash of what the KPI's anomaly models depend on (its definition, its options, the
        models' version): a change starts fresh models."""
        return _digest(self.signature, self.anomaly, MODEL_VERSION)

    @property
    def derived(self) -> bool:
        return self.formula is not None


@dataclass(frozen=True, eq=False)
class Condition:
    """One severity of an alert and the condition that makes it fire."""

    severity: str
    test: Formula
    text: str


@dataclass(frozen=True, eq=False)
class Alert:
    """Conditions evaluated at each window close of ``kpi``, per series.

    ``conditions`` holds one entry per severity (``levels:``), or one for ``when:``; an
    absence alert (``absent_for``) has none and fires for a series silent that long.
    """

    name: str
    kpi: str
    conditions: tuple[Condition, ...]
    severity: str
    owner: str | None
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    resolve: Formula | None = None
    resolve_text: str | None = None
    absent_for_ms: int | None = None
    summary: str | None = None
    notify: bool = True
    #: the baseline contribution analysis compares against (``ago(1d)``, ``expected``, ...)
    explain: str | None = None
    #: other KPIs (same dimensions) the conditions read, and how far back they look
    inputs: tuple[str, ...] = ()
    lookback_ms: int = 0

    @property
    def signature(self) -> str:
        """A hash of what the alert's state depends on."""
        return _digest(self.kpi, [(c.severity, c.text) for c in self.conditions], self.for_ms,
                       self.keep_firing_for_ms, self.absent_for_ms, self.severity,
                       self.inputs, self.lookback_ms, self.resolve_text)

    @property
    def severities(self) -> tuple[str, ...]:
        return tuple(c.severity for c in self.conditions) or (self.severity,)

    @property
    def condition_text(self) -> str:
        if self.absent_for_ms is not None:
            return f"absent_for: {self.absent_for_ms // 1000}s"
        return " / ".join(c.text for c in self.conditions)


@dataclass(frozen=True)
class Owner:
    name: str
    notify: tuple[str, ...]
    language: str = "zh"
    group_wait_ms: int = 0
    repeat_interval_ms: int = 4 * 3_600_000
    send_resolved: bool = True
    quiet_hours: tuple[int, int] | None = None


@dataclass(frozen=True)
class Digest:
    """A scheduled summary of KPIs against their targets (``cron`` in the rules' timezone)."""

    name: str
    cron: str
    kpis: tuple[str, ...]
    title: str | None = None
    owner: str | None = None
    #: Apprise URLs besides the owner's, ${ENV_VAR} references not yet expanded
    notify: tuple[str, ...] = ()
    language: str | None = None
    top: int = 5


@dataclass(frozen=True)
class RuleSet:
    """Every source, KPI (inputs before the KPIs derived from them), alert and owner."""

    timezone: str
    sources: Mapping[str, Source]
    kpis: Mapping[str, Kpi]
    alerts: tuple[Alert, ...]
    owners: Mapping[str, Owner]
    silences: tuple[Silence, ...] = ()
    digests: tuple[Digest, ...] = ()
    files: tuple[str, ...] = field(default=())
    text_digest: str = ""

    @property
    def version(self) -> str:
        """A short hash of the rule files' text, for ``kpistream_rules_info``."""
        return hashlib.sha256(self.text_digest.encode()).hexdigest()[:12]

    def kpis_of(self, source: str) -> list[Kpi]:
        return [k for k in self.kpis.values() if k.source == source]
