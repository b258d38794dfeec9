"""Hostile input live: 100,000 bad messages mixed into valid traffic on the embedded broker.

Zero crashes, the exact invalid count, valid aggregates equal to the truth, and every bad
message in the dead-letter topic, raw, with its reason in a header.
"""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
from daemon_support import Daemon, poll, produce

from kpistream.shell.broker import ensure_topics
from kpistream.shell.topics import read_tail

T = 1_700_000_040_000  # a minute boundary
MIN = 60_000
VALID = 20_000
HOSTILE = 100_000
RULES = """
sources: [{name: orders, topic: TOPIC, partitions: 1}]
kpis:
  - {name: amount, source: orders, agg: sum(amount), by: [region], window: 1m, lateness: 0s}
"""
HUGE = b"9" * 999_000  # a ~1 MB value (kpistream produce takes messages up to 1 MB)


def hostile(i: int, ts: int) -> bytes:
    """The i-th bad message: every kind the decoder must set aside, in rotation."""
    kinds = [
        b"not json {",
        b'{"ts": %d, "amount": "abc", "region": "east"}' % ts,  # wrong type
        b'{"ts": %d, "amount": NaN, "region": "east"}' % ts,  # NaN is no JSON
        b'{"ts": 86400, "amount": 1, "region": "east"}',  # 1970: a broken clock
        b'{"ts": "2999-01-01T00:00:00Z", "amount": 1, "region": "east"}',  # far future
        b'{"ts": %d, "amount": 1, "region": "\xff\xfe"}' % ts,  # not UTF-8
        b'{"amount": 1, "region": "east"}',  # no time
        b"[1, 2, 3]",
        '{"ts": %d, "amount": "１２", "region": "东"}'.encode() % ts,  # full-width digits
    ]
    if i % 25_000 == 0:  # a few 1 MB values
        return b'{"ts": %d, "amount": "' % ts + HUGE + b'", "region": "east"}'
    return kinds[i % len(kinds)]


def traffic() -> tuple[list[bytes], dict[tuple[int, str], float]]:
    """Valid orders over 5 minutes with hostile messages between them, and the truth."""
    lines: list[bytes] = []
    truth: Counter = Counter()
    per_valid = HOSTILE // VALID
    for n in range(VALID):
        ts = T + n * (5 * MIN) // VALID
        region = ("east", "west", "华南")[n % 3]
        amount = n % 7 + 0.5
        lines.append(orjson.dumps({"ts": ts, "amount": amount, "region": region}))
        truth[(ts - ts % MIN + MIN, region)] += amount
        lines += [hostile(n * per_valid + k, ts) for k in range(per_valid)]
    lines.append(orjson.dumps({"ts": T + 5 * MIN, "amount": 0, "region": "east"}))  # closes
    return lines, dict(truth)


async def test_hostile_messages_are_counted_set_aside_and_change_nothing(broker, tmp_path):
    topic = f"hostile-{uuid.uuid4().hex[:8]}"
    dead = f"{topic}-dead"
    await ensure_topics(broker.bootstrap, {topic: 1})
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "orders.yaml").write_text(RULES.replace("TOPIC", topic))
    lines, truth = traffic()
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    daemon = Daemon(rules, broker.url, {
        "KPISTREAM_GROUP_ID": f"g-{topic}", "KPISTREAM_IDLE_TIMEOUT": "1h",
        "KPISTREAM_CHECKPOINT_TOPIC": f"cp-{topic}", "KPISTREAM_DELIVERY_LOG_TOPIC": f"dl-{topic}",
        "KPISTREAM_DEAD_LETTER_TOPIC": dead})
    try:
        produce(broker.url, topic, events)
        await poll(lambda: daemon.value("kpistream_events_total", status="ok") == VALID + 1,
                   deadline_s=120, what="every valid event")
        await poll(lambda: daemon.value("kpistream_events_total", status="invalid") == HOSTILE,
                   deadline_s=60, what="every hostile message counted invalid")
        assert daemon.value("kpistream_events_total", status="late") == 0
        assert daemon.proc.poll() is None  # still running
        end = T + 5 * MIN
        await poll(lambda: daemon.value("kpistream_kpi_window_end_timestamp_seconds",
                                        kpi="amount", region="east") == end / 1000,
                   deadline_s=30, what="the last window to close")
        last = {region: daemon.value("kpistream_kpi_value", kpi="amount", region=region)
                for region in ("east", "west", "华南")}
        assert last == {region: truth[(end, region)] for region in ("east", "west", "华南")}
        records = await read_tail(broker.bootstrap, dead, first=1 << 30)
        assert len(records) == HOSTILE
        assert [r.value for r in records[:5]] == [hostile(k, T) for k in range(5)]  # raw
        headers = dict(records[1].headers)
        assert headers["kpistream-source"] == b"orders"
        assert headers["kpistream-origin"] == f"{topic}/0/2".encode()
        reasons = Counter(dict(r.headers)["kpistream-reason"].split(b";")[0] for r in records)
        assert len(reasons) >= 4, reasons
        assert sum(len(r.value) > len(HUGE) for r in records) == HOSTILE // 25_000
    finally:
        output = daemon.stop()
    assert "Traceback" not in output and daemon.proc.returncode == 0, output[-3000:]
