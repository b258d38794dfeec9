"""Helpers for the delivery tests: secrets, a stand-in renderer, notifications, a recorder."""

from __future__ import annotations

from dataclasses import dataclass

from kpistream.core.notify.model import AlertEvent, Notification

T0_MS = 1_700_000_000_000
SECRETS = {
    "HOOK_TOKEN": "hooktok0123456789abcdef",
    "WECOM_KEY": "wecomkey-0000-1111-2222-333344445555",
    "DING_TOKEN": "dingtoken0123456789abcdef0123456789",
    "DING_SECRET": "SECdingsecret0123456789ABCDEFxyz",
    "FEISHU_TOKEN": "feishu-token-aaaa-bbbb-cccc",
    "FEISHU_SECRET": "feishuSecretValue987",
    "SMTP_PASSWORD": "smtp-Pa55word-xyz",
}


@dataclass(frozen=True)
class Message:
    """A stand-in for ``kpistream.core.notify.render.Message`` (being written elsewhere)."""

    title: str
    text: str
    markdown: str


def render(n: Notification) -> Message:
    """A tiny stand-in renderer: enough to assert the content each channel receives."""
    event = n.events[0]
    title = f"[{event.state.upper()}] {event.kpi_title or event.kpi}"
    text = f"{event.kpi} = {event.value} ({event.condition}) owner {n.owner}"
    return Message(title, text, f"**{event.kpi}** = `{event.value}`\n> {event.condition}")


def make_notification(urls: tuple[str, ...], *, nid: str = "n-1") -> Notification:
    event = AlertEvent(
        alert="gmv_too_low",
        kpi="gmv",
        labels=(("region", "east"),),
        state="firing",
        severity="critical",
        at_ms=T0_MS + 10 * 60_000,
        since_ms=T0_MS + 7 * 60_000,
        value=812.5,
        condition="value < 1000",
        owner="sales-ops",
        kpi_title="GMV 成交额",
        unit="CNY",
        history=tuple((T0_MS + i * 60_000, 3000.0 - 250 * i) for i in range(10)),
    )
    return Notification(nid, "sales-ops", urls, "zh", (event,), T0_MS + 10 * 60_000)


@dataclass
class Recorder:
    """Counts (channel, result) like the metric would, and the backoff delays asked for."""

    counts: dict[tuple[str, str], int]
    delays: list[float]

    def count(self, channel: str, result: str) -> None:
        self.counts[(channel, result)] = self.counts.get((channel, result), 0) + 1

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
