"""Pydantic models of one rule file, exactly as written (durations still text-free ints).

These validate the shape of each file; cross-file checks (references, windows of derived
KPIs, duplicates) live in :mod:`kpistream.core.loader`, and the compiled, runtime form in
:mod:`kpistream.core.ruleset`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from kpistream.core.durations import parse_duration_ms

__all__ = ["AlertSpec", "KpiSpec", "OwnerSpec", "RuleFileSpec", "SourceSpec"]

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
OWNER_PATTERN = r"^[a-z][a-z0-9_.-]*$"


def _duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s, 1m, 1h, got {value!r}")
    return parse_duration_ms(value)


DurationMs = Annotated[int, BeforeValidator(_duration)]
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
    unit: str | None = None
    owner: str | None = None


class AlertSpec(_Spec):
    """A condition over a KPI's closed windows, per series."""

    name: Name
    kpi: str
    when: str
    for_: DurationMs = Field(default=0, alias="for")
    severity: Literal["info", "warning", "critical"] = "warning"
    owner: str | None = None
    summary: str | None = None


class OwnerSpec(_Spec):
    """Who receives a KPI's alerts, as Apprise URLs (secrets only through ``${ENV_VAR}``)."""

    name: OwnerName
    notify: list[str] = Field(default_factory=list)


class RuleFileSpec(_Spec):
    """One YAML rule file; every section is optional, files are merged into one set."""

    timezone: str | None = None
    sources: list[SourceSpec] = Field(default_factory=list)
    kpis: list[KpiSpec] = Field(default_factory=list)
    alerts: list[AlertSpec] = Field(default_factory=list)
    owners: list[OwnerSpec] = Field(default_factory=list)
