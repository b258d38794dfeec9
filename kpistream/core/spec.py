"""Pydantic models of one rule file, exactly as written (durations still text-free ints).

These validate the shape of each file; cross-file checks (references, windows of derived
KPIs, duplicates) live in :mod:`kpistream.core.loader`, and the compiled, runtime form in
:mod:`kpistream.core.ruleset`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from kpistream.core.durations import parse_duration_ms, parse_moment

__all__ = ["AlertSpec", "AnomalySpec", "DigestSpec", "ExcludeSpec", "KpiSpec", "LevelSpec",
           "OwnerSpec", "RuleFileSpec", "SilenceSpec", "SourceSpec", "TargetSpec"]

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
OWNER_PATTERN = r"^[a-z][a-z0-9_.-]*$"


def _duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s, 1m, 1h, got {value!r}")
    return parse_duration_ms(value)


def _quiet_hours(value: object) -> tuple[int, int]:
    match = _QUIET.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM in the rules' timezone, e.g. 22:00-08:00, "
                         f"got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"hours 00-23 and minutes 00-59, got {value!r}")
    return h1 * 60 + m1, h2 * 60 + m2


_QUIET = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
DURATION_SCHEMA = {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d|w))+$",
                   "description": "a duration such as 30s, 1m, 1h30m, 1d", "x-duration": True}
DurationMs = Annotated[int, BeforeValidator(_duration), WithJsonSchema(DURATION_SCHEMA)]
QuietHours = Annotated[tuple[int, int], BeforeValidator(_quiet_hours), WithJsonSchema(
    {"type": "string", "pattern": r"^\d\d:\d\d-\d\d:\d\d$",
     "description": "HH:MM-HH:MM in the rules' timezone, e.g. 22:00-08:00"})]
Moment = Annotated[datetime, BeforeValidator(parse_moment), WithJsonSchema(
    {"type": "string", "format": "date-time",
     "description": "RFC 3339 with an offset, e.g. 2026-11-23T18:00:00+08:00"})]
Severity = Literal["info", "warning", "critical"]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
OwnerName = Annotated[str, Field(pattern=OWNER_PATTERN)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourceSpec(_Spec):
    """A stream of JSON events on one Kafka topic."""

    name: Name
    topic: str = Field(min_length=1)
    time_field: str = "ts"
    partitions: int = Field(default=4, ge=1, le=1024)
    description: str | None = None


class ExcludeSpec(_Spec):
    """A time range an anomaly model neither learns from nor alerts in (a known event)."""

    starts: Moment
    ends: Moment
    comment: str | None = None


class AnomalySpec(_Spec):
    """Online anomaly detection for every series of a KPI: a learned band per window.

    ``exclude`` lists time ranges or the names of built-in calendars (``cn_holidays``,
    ``cn_shopping_festivals``) whose windows are neither learned from nor flagged.
    ``noise`` says how the spread follows the level: ``poisson`` (it grows with the
    square root of the expected value, as a count's or a sum of amounts' does),
    ``constant``, or ``auto``: ``poisson`` for ``count()`` and ``sum()``, else ``constant``.
    """

    sensitivity: Literal["low", "medium", "high"] = "medium"
    direction: Literal["up", "down", "both"] = "both"
    warmup: int | None = Field(default=None, ge=1, le=100_000)
    seasonality: Literal["auto", "none"] | DurationMs | list[DurationMs] = "auto"
    exclude: list[ExcludeSpec | str] = Field(default_factory=list)
    noise: Literal["auto", "poisson", "constant"] = "auto"


class TargetSpec(_Spec):
    """A KPI's target for each period (in the rules' timezone): one ``value`` for every
    series, and ``values`` per series, keyed by its label values in ``by`` order joined with
    ``/`` (``east`` for ``by: [region]``, ``east/alice`` for ``by: [region, rep]``)."""

    period: Literal["day", "week", "month", "quarter"]
    value: float | None = Field(default=None, gt=0)
    values: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)


class KpiSpec(_Spec):
    """A windowed aggregate over a source (``agg``) or a formula over other KPIs (``expr``)."""

    name: Name
    title: str | None = None
    description: str | None = None
    source: str | None = None
    where: str | None = None
    agg: str | None = None
    expr: str | None = None
    by: list[str] = Field(default_factory=list)
    window: DurationMs
    hop: DurationMs | None = None
    lateness: DurationMs = 5_000
    series_ttl: DurationMs = 3_600_000
    max_series: int = Field(default=10_000, ge=1, le=10_000_000)
    unit: str | None = None
    owner: str | None = None
    definition: str | None = None
    version: str | None = None
    parent: str | None = None
    targets: list[TargetSpec] = Field(default_factory=list)
    anomaly: AnomalySpec | None = None


class LevelSpec(_Spec):
    """One severity of a multi-level alert: the first level whose condition holds applies."""

    severity: Severity
    when: str


class AlertSpec(_Spec):
    """A condition over a KPI's closed windows, per series."""

    name: Name
    kpi: str
    when: str | None = None
    levels: list[LevelSpec] | None = None
    absent_for: DurationMs | None = None
    for_: DurationMs = Field(default=0, alias="for")
    keep_firing_for: DurationMs = 0
    resolve_when: str | None = None
    severity: Severity = "warning"
    owner: str | None = None
    summary: str | None = None
    explain: str | None = None
    notify: bool = True


class OwnerSpec(_Spec):
    """Who receives a KPI's alerts, as Apprise URLs (secrets only through ``${ENV_VAR}``)."""

    name: OwnerName
    notify: list[str] = Field(default_factory=list)
    language: Literal["zh", "en"] = "zh"
    group_wait: DurationMs = 0
    repeat_interval: DurationMs = 4 * 3_600_000
    send_resolved: bool = True
    quiet_hours: QuietHours | None = None


class SilenceSpec(_Spec):
    """Mutes matching alerts for a bounded time; kept in git, so it must expire."""

    matchers: dict[str, str] = Field(min_length=1)
    starts: Moment
    ends: Moment
    comment: str = Field(min_length=1)
    created_by: str | None = None


class DigestSpec(_Spec):
    """A scheduled summary of KPIs against their targets, sent to an owner's channels."""

    name: Name
    cron: str = Field(min_length=1)
    title: str | None = None
    kpis: list[str] = Field(default_factory=list)
    owner: str | None = None
    notify: list[str] = Field(default_factory=list)
    language: Literal["zh", "en"] | None = None
    top: int = Field(default=5, ge=1, le=50)


class RuleFileSpec(_Spec):
    """One YAML rule file; every section is optional, files are merged into one set."""

    timezone: str | None = None
    sources: list[SourceSpec] = Field(default_factory=list)
    kpis: list[KpiSpec] = Field(default_factory=list)
    alerts: list[AlertSpec] = Field(default_factory=list)
    owners: list[OwnerSpec] = Field(default_factory=list)
    silences: list[SilenceSpec] = Field(default_factory=list)
    digests: list[DigestSpec] = Field(default_factory=list)
