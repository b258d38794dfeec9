"""What flows from alert evaluation to delivery: alert events, policies, notifications.

Everything here is plain, frozen data so that it pickles, checkpoints and crosses the
core/shell boundary unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any

from kpistream.core.contributions import Contribution, Explanation
from kpistream.core.values import TargetStatus

__all__ = [
    "AlertEvent",
    "Band",
    "Notification",
    "OwnerPolicy",
    "Silence",
    "event_from_json",
    "event_to_json",
    "fingerprint",
    "parse_alert_id",
]


def fingerprint(alert: str, labels: tuple[tuple[str, str], ...]) -> str:
    """A stable id of one alert for one series.

    >>> fingerprint("gmv_low", (("region", "east"),))
    'b50690e8ebee6104'
    """
    text = alert + "\0" + "\0".join(f"{k}={v}" for k, v in labels)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Band:
    """What an anomaly model expected of the window that changed the alert, for messages."""

    expected: float
    lower: float | None
    upper: float | None
    score: float
    model: str
    #: the model flagged the window (feedback can then say it was no anomaly)
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert started firing or resolved for one series, with what a message needs."""

    alert: str
    kpi: str
    labels: tuple[tuple[str, str], ...]  # (name, value) pairs, sorted by name
    state: str  # "firing" or "resolved"
    severity: str  # "info", "warning" or "critical"
    at_ms: int  # the window end at which the change happened
    since_ms: int  # when the condition first held (the breach began)
    value: float | None  # the KPI's value at at_ms (the recovery value when resolved)
    condition: str  # the when: text, e.g. "value < 1000"
    owner: str | None
    kpi_title: str | None = None
    unit: str | None = None
    summary: str | None = None
    notify: bool = True  # False: shadow mode, evaluated and exported but never sent
    #: recent (window_end_ms, value) points of the series, oldest first, for charts
    history: tuple[tuple[int, float], ...] = ()
    #: KPIs with ``anomaly:``: the learned band of the window at at_ms
    band: Band | None = None
    #: KPIs with ``targets:``: the series' standing against its first target at at_ms
    standing: TargetStatus | None = None
    #: a parent KPI's firing alert: the parts that explain its change (see core.tree)
    explanation: Explanation | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.alert, self.labels)

    @property
    def id(self) -> str:
        """This alert of this series at this window, as feedback names it.

        >>> AlertEvent("gmv_odd", "gmv", (("region", "east"),), "firing", "warning",
        ...            1795428000000, 0, 5.0, "is_anomaly", None).id
        'gmv_odd:5e04c0c53115bfd5:1795428000'
        """
        return f"{self.alert}:{self.fingerprint}:{self.at_ms // 1000}"


@dataclass(frozen=True, slots=True)
class OwnerPolicy:
    """How one owner wants to be notified."""

    name: str
    urls: tuple[str, ...]  # Apprise URLs, ${ENV_VAR} references not yet expanded
    language: str = "zh"  # "zh" or "en"
    group_wait_ms: int = 0
    repeat_interval_ms: int = 4 * 3_600_000
    send_resolved: bool = True
    quiet_hours: tuple[int, int] | None = None  # (start, end) minutes after local midnight
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes matching alerts between starts_ms and ends_ms.

    ``matchers`` maps ``alert``, ``kpi``, ``severity``, ``owner`` or a label name to the value
    it must equal; every matcher must match.
    """

    id: str
    matchers: tuple[tuple[str, str], ...]
    starts_ms: int
    ends_ms: int
    comment: str = ""
    created_by: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one owner: a group of alert events, ready to render and send."""

    id: str  # deterministic: same events, same id (delivery deduplicates on it)
    owner: str
    urls: tuple[str, ...]
    language: str
    events: tuple[AlertEvent, ...]
    created_ms: int
    repeat: bool = False  # a reminder for alerts still firing
    timezone: str = "UTC"  # the owner's zone, for the times shown in the message



def parse_alert_id(text: str) -> tuple[str, str, int]:
    """``ALERT:FINGERPRINT:WINDOW_END_SECONDS`` → ``(alert, fingerprint, window end ms)``.

    >>> parse_alert_id("gmv_odd:fc3c45b1d8a3a9f9:1795428000")
    ('gmv_odd', 'fc3c45b1d8a3a9f9', 1795428000000)
    """
    parts = text.split(":")
    alert, fp, seconds = parts if len(parts) == 3 else ("", "", "")
    if not alert or len(fp) != 16 or not seconds.isdigit():
        raise ValueError(f'alert id "{text}": expected ALERT:FINGERPRINT:SECONDS as shown in '
                         "the alert message, e.g. gmv_odd:fc3c45b1d8a3a9f9:1795428000")
    return alert, fp, int(seconds) * 1000


def event_to_json(event: AlertEvent) -> dict[str, Any]:
    """Plain JSON-able data for an event (tuples become lists).

    >>> e = AlertEvent("low", "gmv", (("region", "east"),), "firing", "critical", 2, 1, 5.0,
    ...                "value < 10", "ops")
    >>> event_to_json(e)["labels"]
    [['region', 'east']]
    >>> event_from_json(event_to_json(e)) == e
    True
    """
    data = asdict(event)
    data["labels"] = [list(pair) for pair in event.labels]
    data["history"] = [list(point) for point in event.history]
    return data


def event_from_json(data: dict[str, Any]) -> AlertEvent:
    """The event :func:`event_to_json` wrote (unknown keys are ignored)."""
    known = {f.name for f in fields(AlertEvent)}
    values = {k: v for k, v in data.items() if k in known}
    values["labels"] = tuple((str(k), str(v)) for k, v in values.get("labels", ()))
    values["history"] = tuple((int(t), float(v)) for t, v in values.get("history", ()))
    if values.get("band") is not None:
        values["band"] = Band(**values["band"])
    if values.get("standing") is not None:
        values["standing"] = TargetStatus(**values["standing"])
    if values.get("explanation") is not None:
        e = values["explanation"]
        values["explanation"] = Explanation(
            e["baseline"], tuple(Contribution(**c) for c in e["parts"]), e["missing"])
    return AlertEvent(**values)
