"""Deliver rendered notifications through Apprise: per URL, retried, counted, deduplicated.

Each URL gets its own Apprise object, so its outcome comes from that call's one
``NotifyResult`` (Apprise 2.x); Apprise's own retries stay off and :class:`RetryPolicy`
decides. Nothing Apprise or the network raises reaches the caller: :meth:`Sender.send`
returns a :class:`Delivery` with one :class:`UrlOutcome` per URL.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import apprise
from apprise.attachment.memory import AttachMemory

import kpistream.shell.delivery.plugins  # noqa: F401  (registers the kpi* schemes)
from kpistream.core.notify.model import Notification
from kpistream.shell.delivery.scrub import SecretScrubber
from kpistream.shell.delivery.secrets import (
    MissingVariable,
    channel_of,
    expand_url,
    redact,
    referenced_values,
    secret_parts,
)

__all__ = [
    "Counter",
    "Delivery",
    "Rendered",
    "RetryPolicy",
    "Sender",
    "UrlOutcome",
    "counter_sink",
]

log = logging.getLogger(__name__)

Result = Literal["sent", "failed", "skipped", "duplicate"]
Counter = Callable[[str, str], None]  # (channel, result) with result sent|failed|retried
Sleep = Callable[[float], Awaitable[None]]

#: channels whose Apprise plugin renders markdown; the others get the plain text
MARKDOWN_CHANNELS = frozenset(
    {"kpiwecom", "kpidingtalk", "kpifeishu", "kpilark", "dingtalk", "slack", "mailto", "mailtos"}
)
CHART_NAME = "chart.png"
#: channels that get the chart attached (email shows it; chat webhooks would only delay)
CHART_CHANNELS = frozenset({"mailto", "mailtos"})
#: third-party loggers that may print endpoint URLs (Apprise's debug lines, urllib3's
#: request lines); a SecretScrubber on each hides the secrets this Sender expanded
SCRUBBED_LOGGERS = ("apprise", "urllib3.connectionpool", "urllib3.util.retry", "requests")


class Rendered(Protocol):
    """What ``render(n)`` returns (``kpistream.core.notify.render.Message``)."""

    title: str
    text: str
    markdown: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per URL and the exponential backoff between them.

    >>> [RetryPolicy(attempts=5, base_delay_s=1.0, max_delay_s=5.0).delay_s(i) for i in range(4)]
    [1.0, 2.0, 4.0, 5.0]
    """

    attempts: int = 3
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        return min(self.max_delay_s, self.base_delay_s * self.factor**retry)


@dataclass(frozen=True, slots=True)
class UrlOutcome:
    """What happened to one URL of a notification. ``url`` is redacted."""

    channel: str
    url: str
    result: Result
    attempts: int = 0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of :meth:`Sender.send` for one notification."""

    notification_id: str
    outcomes: tuple[UrlOutcome, ...]

    @property
    def delivered(self) -> bool:
        """True when every URL has the message (now or by an earlier send)."""
        return all(o.result in ("sent", "duplicate") for o in self.outcomes)


def counter_sink(counter: Any) -> Counter:
    """Adapt a ``Counter`` with labels ``channel``, ``result`` to a :data:`Counter` callback."""
    return lambda channel, result: counter.labels(channel=channel, result=result).inc()


class _Remembered:
    """A bounded set of keys; the oldest is forgotten first."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._size = size

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, str]) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)


class Sender:
    """Sends each notification to each of its Apprise URLs, at most once per (id, URL).

    Parameters
    ----------
    render: turns a notification into a title, plain text and markdown.
    environ: where ``${VAR}`` references in URLs are looked up.
    count: called with (channel, "sent" | "failed" | "retried") per event; a missing
        ``${VAR}`` counts as "failed" (the owner did not get the message).
    retry: attempts per URL and backoff; ``sleep`` waits between attempts.
    chart: builds the PNG attached to the ``chart_channels`` (runs in a thread); the other
        channels are sent without waiting for it.
    timeout_s: Apprise's deadline for one attempt.
    remember: how many delivered (notification id, URL) pairs to remember for deduplication.
    """

    def __init__(
        self,
        *,
        render: Callable[[Notification], Rendered],
        environ: Mapping[str, str],
        count: Counter | None = None,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Sleep = asyncio.sleep,
        chart: Callable[[Notification], bytes | None] | None = None,
        timeout_s: float = 30.0,
        remember: int = 10_000,
        chart_channels: Collection[str] = CHART_CHANNELS,
    ) -> None:
        self._chart_channels = frozenset(chart_channels)
        self._render, self._environ, self._retry = render, environ, retry
        self._count: Counter = count or (lambda channel, result: None)
        self._sleep, self._chart, self._timeout_s = sleep, chart, timeout_s
        self._delivered = _Remembered(remember)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._scrubber = SecretScrubber()
        for name in SCRUBBED_LOGGERS:
            logging.getLogger(name).addFilter(self._scrubber)

    def close(self) -> None:
        """Detach the log scrubber from the third-party loggers."""
        for name in SCRUBBED_LOGGERS:
            logging.getLogger(name).removeFilter(self._scrubber)

    async def send(self, n: Notification) -> Delivery:
        """Deliver ``n`` to every URL not yet delivered for ``n.id``; never raises delivery
        errors."""
        lock, users = self._locks.get(n.id, (asyncio.Lock(), 0))
        self._locks[n.id] = (lock, users + 1)
        try:
            async with lock:  # a concurrent send of the same id waits, then sees duplicates
                return await self._send(n)
        finally:
            lock, users = self._locks[n.id]
            if users == 1:
                del self._locks[n.id]
            else:
                self._locks[n.id] = (lock, users - 1)

    async def _send(self, n: Notification) -> Delivery:
        pending = [url for url in dict.fromkeys(n.urls) if (n.id, url) not in self._delivered]
        if not pending:
            return Delivery(n.id, tuple(_duplicate(url) for url in n.urls))
        message = self._render(n)
        kind = _notify_type(n)
        charted = [url for url in pending if self._wants_chart(url)]
        chart = (asyncio.ensure_future(asyncio.to_thread(self._safe_chart, n))
                 if charted and self._chart else None)

        async def deliver(url: str) -> UrlOutcome:
            # channels without a chart do not wait for it (rendering takes ~0.1 s)
            png = await chart if chart is not None and url in charted else None
            return await self._deliver(n.id, url, message, png, kind)

        sent = await asyncio.gather(*(deliver(url) for url in pending))
        by_url = dict(zip(pending, sent, strict=True))
        return Delivery(n.id, tuple(by_url.get(url) or _duplicate(url) for url in n.urls))

    def _safe_chart(self, n: Notification) -> bytes | None:
        """The chart, or None: a chart that fails must not cost the message."""
        try:
            return self._chart(n) if self._chart else None
        except Exception:
            log.exception("notification %s: drawing the chart failed; sending without", n.id)
            return None

    def _wants_chart(self, template: str) -> bool:
        try:
            return channel_of(expand_url(template, self._environ)) in self._chart_channels
        except MissingVariable:
            return False

    async def _deliver(
        self, nid: str, template: str, message: Rendered, png: bytes | None, kind: str
    ) -> UrlOutcome:
        try:
            url = expand_url(template, self._environ)
        except MissingVariable as e:
            log.warning("notification %s: %s", nid, e)
            self._count(channel_of(template), "failed")
            return UrlOutcome(channel_of(template), redact(template), "skipped", 0, str(e))
        secrets = secret_parts(url) or {url}
        self._scrubber.add(secrets | set(referenced_values(template, self._environ)))
        channel, safe = channel_of(url), redact(url)
        if _apprise_for(url) is None:
            reason = f'Apprise does not accept the URL "{safe}"'
            log.warning("notification %s: %s", nid, reason)
            self._count(channel, "failed")
            return UrlOutcome(channel, safe, "failed", 0, reason)
        outcome = await self._with_retries(url, channel, safe, message, png, kind)
        if outcome.result == "sent":
            self._delivered.add((nid, template))
        else:
            log.warning("notification %s to %s failed: %s", nid, safe, outcome.reason)
        return outcome

    async def _with_retries(
        self,
        url: str,
        channel: str,
        safe: str,
        message: Rendered,
        png: bytes | None,
        kind: str,
    ) -> UrlOutcome:
        reason = "no attempt made"
        for attempt in range(1, self._retry.attempts + 1):
            ok, reason = await self._attempt(url, channel, message, png, kind)
            if ok:
                self._count(channel, "sent")
                return UrlOutcome(channel, safe, "sent", attempt)
            if attempt < self._retry.attempts:
                self._count(channel, "retried")
                await self._sleep(self._retry.delay_s(attempt - 1))
        self._count(channel, "failed")
        return UrlOutcome(channel, safe, "failed", self._retry.attempts, reason)

    async def _attempt(
        self,
        url: str,
        channel: str,
        message: Rendered,
        png: bytes | None,
        kind: str,
    ) -> tuple[bool, str]:
        """One Apprise call; (success, reason) from its per-service result.

        A fresh Apprise object per attempt: a plugin's own throttle (``request_rate_per_sec``,
        5.5 s for ``wecombot://``) is per instance and would outlast the backoff and timeout.
        """
        service = _apprise_for(url)
        if service is None:
            return False, "Apprise does not accept the URL"
        markdown = channel in MARKDOWN_CHANNELS
        fmt = apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT
        try:
            result = await service.async_notify(
                body=message.markdown if markdown else message.text,
                title=message.title,
                body_format=fmt,
                notify_type=kind,
                attach=_attachment(png),
                timeout=self._timeout_s,
            )
        except Exception as e:  # Apprise reports failures in its result; this is a safety net
            return False, f"Apprise raised {type(e).__name__}"
        outcome = result.results[0] if result.results else None
        if outcome is None:
            return False, f"Apprise status {result.status.name}"
        return bool(outcome), f"Apprise status {outcome.status.name}"


def _apprise_for(url: str) -> apprise.Apprise | None:
    """An Apprise object holding just ``url``, or None when Apprise rejects it."""
    asset = apprise.AppriseAsset(storage_mode=apprise.PersistentStoreMode.MEMORY)
    service = apprise.Apprise(asset=asset)
    try:
        return service if service.add(url) else None
    except Exception:  # a plugin raising while parsing is still a rejected URL
        return None


def _attachment(png: bytes | None) -> apprise.AppriseAttachment | None:
    if png is None:
        return None
    memory = AttachMemory(content=png, name=CHART_NAME, mimetype="image/png")
    return apprise.AppriseAttachment(memory)


def _notify_type(n: Notification) -> apprise.NotifyType:
    firing = [e for e in n.events if e.state == "firing"]
    if not firing:
        return apprise.NotifyType.SUCCESS
    if any(e.severity == "critical" for e in firing):
        return apprise.NotifyType.FAILURE
    if any(e.severity == "warning" for e in firing):
        return apprise.NotifyType.WARNING
    return apprise.NotifyType.INFO


def _duplicate(url: str) -> UrlOutcome:
    return UrlOutcome(channel_of(url), redact(url), "duplicate")
