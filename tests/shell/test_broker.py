"""The broker edge against the real embedded broker: produce, read back, reachability, stop."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kpistream.errors import BrokerUnavailable, UsageError
from kpistream.shell.broker import EmbeddedBroker, parse_bootstrap, wait_for_broker
from kpistream.shell.produce import produce_lines, read_lines

Record = tuple[bytes | None, bytes]  # key, value


async def read_all(
    bootstrap: str, topic: str, *, timeout_s: float = 10.0
) -> dict[int, list[Record]]:
    """Every (key, value) of each partition of ``topic``, read up to the fetch high watermark."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        assert tps, f"topic {topic} has no partitions"
        consumer.assign(tps)
        async with asyncio.timeout(timeout_s):
            return await _drain(consumer, tps)
    finally:
        await consumer.stop()


async def _drain(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[int, list[Record]]:
    # The fetch high watermark, not end_offsets(): Tansu's ListOffsets(latest) is wrong.
    records: dict[int, list[Record]] = {tp.partition: [] for tp in tps}
    while True:
        batches = await consumer.getmany(*tps, timeout_ms=200)
        for tp, batch in batches.items():
            records[tp.partition].extend((m.key, m.value) for m in batch)
        if await _at_high_watermark(consumer, tps):
            return records


async def _at_high_watermark(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True


def test_parse_bootstrap_accepts_lists_and_rejects_other_schemes() -> None:
    assert parse_bootstrap(" kafka://a:1,b:2/ ") == "a:1,b:2"
    assert parse_bootstrap("[::1]:9092") == "[::1]:9092"
    with pytest.raises(UsageError) as info:
        parse_bootstrap("kafka://a:99999")
    assert str(info.value) == (
        'broker "kafka://a:99999": port "99999" is not a number from 1 to 65535'
    )


async def test_produce_lines_round_trips_bytes_and_keys(broker: EmbeddedBroker, new_topic) -> None:
    topic = await new_topic(partitions=4)
    events = [orjson.dumps({"order": {"id": f"o-{i}"}, "amount": i}) for i in range(2000)]
    odd = [b"{not json", b'{"order": {"id": 7}}', b'{"order": null}', b"[1]"]
    lines = [*events, b"", b"   \n", *odd]

    sent = await produce_lines(broker.bootstrap, topic, lines, key_field="order.id")

    expected = [(f"o-{i}".encode(), e) for i, e in enumerate(events)] + [
        (None, b"{not json"), (b"7", b'{"order": {"id": 7}}'), (None, b'{"order": null}'),
        (None, b"[1]"),
    ]
    assert sent == len(expected)
    got = [r for records in (await read_all(broker.bootstrap, topic)).values() for r in records]
    assert sorted(got, key=repr) == sorted(expected, key=repr)


async def test_same_key_lands_in_one_partition_in_order(broker: EmbeddedBroker, new_topic) -> None:
    topic = await new_topic(partitions=4)
    lines = [orjson.dumps({"shop": i % 3, "seq": i}) for i in range(300)]

    await produce_lines(broker.bootstrap, topic, lines, key_field="shop")

    by_partition = await read_all(broker.bootstrap, topic)
    for shop in (b"0", b"1", b"2"):
        [(partition, seqs)] = [
            (p, [orjson.loads(v)["seq"] for k, v in records if k == shop])
            for p, records in by_partition.items()
            if any(k == shop for k, _ in records)
        ]
        assert seqs == list(range(int(shop), 300, 3)), f"shop {shop} in partition {partition}"


async def test_unkeyed_lines_go_round_the_partitions(broker: EmbeddedBroker, new_topic) -> None:
    topic = await new_topic(partitions=4)
    lines = [b"line %d" % i for i in range(400)]

    assert await produce_lines(broker.bootstrap, topic, lines) == 400

    by_partition = await read_all(broker.bootstrap, topic)
    assert [len(by_partition[p]) for p in range(4)] == [100, 100, 100, 100]


async def test_read_lines_strips_line_endings_only(tmp_path, broker, new_topic) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n{"a": "\xc3\xa9"} \n{"a": 3}')
    topic = await new_topic(partitions=1)

    sent = await produce_lines(broker.bootstrap, topic, read_lines(str(path)))

    assert sent == 3
    values = [v for _, v in (await read_all(broker.bootstrap, topic))[0]]
    assert values == [b'{"a": 1}', b'{"a": "\xc3\xa9"} ', b'{"a": 3}']


async def test_wait_for_broker_gives_up_on_a_closed_port_with_a_clear_message() -> None:
    lines: list[str] = []
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(BrokerUnavailable) as info:
        await wait_for_broker("127.0.0.1:9", timeout_s=1.2, log=lines.append)

    assert loop.time() - started < 1.2 + 0.6
    assert lines[0] == "broker 127.0.0.1:9 not reachable (Connection refused); retrying in 0.5 s"
    assert str(info.value).startswith(
        "broker 127.0.0.1:9 not reachable after 3 attempts in 1.2 s (Connection refused); "
        "check that it is running"
    )


async def test_wait_for_broker_returns_when_the_broker_answers(broker: EmbeddedBroker) -> None:
    lines: list[str] = []
    await wait_for_broker(broker.bootstrap, timeout_s=5, log=lines.append)
    assert lines == []


async def test_stop_leaves_no_process() -> None:
    embedded = EmbeddedBroker()
    async with embedded:
        pid = embedded.pid
        assert pid is not None and _alive(pid)
        assert embedded.url == f"kafka://{embedded.bootstrap}"
        log_path = embedded.log_path
    assert not _alive(pid)
    assert log_path is not None and not os.path.exists(log_path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
