"""Sender semantics: retries and backoff, failures, skipped URLs, secrets, deduplication."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import pytest
from apprise.plugins.wecombot import NotifyWeComBot
from delivery_support import SECRETS, make_notification
from prometheus_client import CollectorRegistry, Counter

from kpistream.shell.delivery import RetryPolicy, UrlOutcome, counter_sink


def json_url(receiver, path: str = "/hook") -> str:
    return f"json://{receiver.url.removeprefix('http://')}{path}"


async def test_500_twice_then_200_is_retried_twice_then_sent(make_sender, http_receiver, recorder):
    http_receiver.fail_next(2, status=500)
    sender = make_sender(retry=RetryPolicy(attempts=4, base_delay_s=0.5, factor=2.0))

    delivery = await sender.send(make_notification((json_url(http_receiver),)))

    assert delivery.outcomes == (UrlOutcome("json", json_url(http_receiver), "sent", 3),)
    assert len(await http_receiver.wait_for(3)) == 3
    assert recorder.counts == {("json", "retried"): 2, ("json", "sent"): 1}
    assert recorder.delays == [0.5, 1.0]


async def test_permanent_failure_is_failed_after_all_attempts(make_sender, http_receiver, recorder):
    http_receiver.fail_next(10, status=503)

    delivery = await make_sender().send(make_notification((json_url(http_receiver),)))

    [outcome] = delivery.outcomes
    assert (outcome.result, outcome.attempts, outcome.reason) == (
        "failed",
        3,
        "Apprise status FAILURE",
    )
    assert len(http_receiver.requests) == 3
    assert recorder.counts == {("json", "retried"): 2, ("json", "failed"): 1}
    assert recorder.delays == [1.0, 2.0]


async def test_unreachable_endpoint_fails_without_raising(make_sender, recorder):
    sender = make_sender(retry=RetryPolicy(attempts=1))

    delivery = await sender.send(make_notification(("json://127.0.0.1:9/nobody-home",)))

    assert [o.result for o in delivery.outcomes] == ["failed"]
    assert recorder.counts == {("json", "failed"): 1}


async def test_a_url_apprise_rejects_fails_without_raising(make_sender, recorder):
    delivery = await make_sender().send(make_notification(("nosuchscheme://x",)))

    assert delivery.outcomes[0].result == "failed"
    assert delivery.outcomes[0].reason == 'Apprise does not accept the URL "nosuchscheme://***"'


async def test_missing_variable_skips_the_url_with_a_reason(make_sender, http_receiver, recorder):
    urls = ("kpiwecom://${NOT_SET_ANYWHERE}", json_url(http_receiver))

    delivery = await make_sender().send(make_notification(urls))

    skipped, sent = delivery.outcomes
    assert skipped == UrlOutcome(
        "kpiwecom",
        "kpiwecom://${NOT_SET_ANYWHERE}",
        "skipped",
        0,
        'Apprise URL "kpiwecom://${NOT_SET_ANYWHERE}" skipped: '
        "environment variable NOT_SET_ANYWHERE is not set",
    )
    assert sent.result == "sent"
    assert recorder.counts == {("kpiwecom", "failed"): 1, ("json", "sent"): 1}


async def test_same_id_is_delivered_once(make_sender, http_receiver):
    sender = make_sender()
    n = make_notification((json_url(http_receiver),), nid="once")

    first = await sender.send(n)
    again = await sender.send(n)

    assert [o.result for o in first.outcomes] == ["sent"]
    assert [o.result for o in again.outcomes] == ["duplicate"]
    assert again.delivered
    assert len(http_receiver.requests) == 1


async def test_concurrent_sends_of_one_id_deliver_once(make_sender, http_receiver):
    sender = make_sender()
    n = make_notification((json_url(http_receiver),), nid="racing")

    results = await asyncio.gather(sender.send(n), sender.send(n))

    assert sorted(o.result for d in results for o in d.outcomes) == ["duplicate", "sent"]
    assert len(http_receiver.requests) == 1


async def test_resend_retries_only_the_urls_that_failed(make_sender, http_receiver):
    good, bad = json_url(http_receiver, "/good"), "json://127.0.0.1:9/down"
    sender = make_sender(retry=RetryPolicy(attempts=1))
    n = make_notification((good, bad), nid="partial")

    first = await sender.send(n)
    again = await sender.send(n)

    assert [o.result for o in first.outcomes] == ["sent", "failed"]
    assert [o.result for o in again.outcomes] == ["duplicate", "failed"]
    assert [r.path for r in http_receiver.requests] == ["/good"]


async def test_dedup_memory_is_bounded(make_sender, http_receiver):
    sender = make_sender(remember=2)
    url = json_url(http_receiver)
    for nid in ("a", "b", "c", "a"):
        await sender.send(make_notification((url,), nid=nid))

    assert len(await http_receiver.wait_for(4)) == 4  # "a" was forgotten, so sent again


@pytest.fixture
def stock_wecombot_here(monkeypatch, http_receiver):
    """Point Apprise's own ``wecombot://`` plugin at the receiver: it logs its full endpoint,
    key included, at debug level, which makes it the hardest case for secret hygiene."""
    endpoint = f"{http_receiver.url}/cgi-bin/webhook/send?key={{key}}"
    monkeypatch.setattr(NotifyWeComBot, "notify_url", endpoint)


async def test_secrets_never_reach_logs_or_metric_labels(
    make_sender, http_receiver, smtp_receiver, stock_wecombot_here, caplog
):
    registry = CollectorRegistry()
    counter = Counter("kpistream_notifications", "", ["channel", "result"], registry=registry)
    sender = make_sender(count=counter_sink(counter), retry=RetryPolicy(attempts=2))
    base = quote(http_receiver.url, safe="")
    http_receiver.fail_next(1)
    urls = (
        "wecombot://${WECOM_KEY}",
        f"kpidingtalk://${{DING_SECRET}}@${{DING_TOKEN}}?base={base}",
        f"mailto://alerts:${{SMTP_PASSWORD}}@127.0.0.1:{smtp_receiver.port}"
        "?mode=insecure&to=a@example.com&from=kpistream@example.com",
        f"{json_url(http_receiver)}?token=${{HOOK_TOKEN}}",
        "json://127.0.0.1:9/${FEISHU_TOKEN}",
    )

    with caplog.at_level(logging.DEBUG):
        delivery = await sender.send(make_notification(urls))

    assert [o.result for o in delivery.outcomes] == ["sent", "sent", "sent", "sent", "failed"]
    assert "WeCom Bot GET URL" in caplog.text  # Apprise's debug line was kept, key hidden
    shown = caplog.text + repr(delivery) + str(list(registry.collect()))
    for name, secret in SECRETS.items():
        assert secret not in shown, name
    labels = {s.labels["channel"] for m in registry.collect() for s in m.samples}
    assert labels == {"wecombot", "kpidingtalk", "mailto", "json"}


async def test_a_chart_that_fails_does_not_cost_the_message(make_sender, smtp_receiver,
                                                            caplog):
    def broken(n):
        raise RuntimeError("no fonts today")

    sender = make_sender(chart=broken)
    url = (f"mailto://{smtp_receiver.user}:{smtp_receiver.password}@127.0.0.1:"
           f"{smtp_receiver.port}?mode=insecure&to=ops@example.com&from=k@example.com")
    delivery = await sender.send(make_notification((url,)))
    assert delivery.delivered, delivery
    (mail,) = await smtp_receiver.wait_for(1)
    assert mail.attachments == []
    assert "drawing the chart failed; sending without" in caplog.text
