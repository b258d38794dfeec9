"""Decoding batches: every bad message is set aside with its reason, the rest are untouched."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpistream.core.decode import Decoder
from kpistream.core.expr import FieldType

FIELDS = {"amount": FieldType.NUMBER, "region": FieldType.STRING, "user.city": FieldType.STRING}
T = 1_700_000_000


def decoder() -> Decoder:
    return Decoder("ts", FIELDS)


def valid(i: int) -> bytes:
    return orjson.dumps({"ts": T + i, "amount": i * 1.5, "region": f"r{i % 3}",
                         "user": {"city": "北京" if i % 2 else "𝔘𝔫𝔦"}})


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'"a string"', "not a JSON object"),
    (b"", "not a JSON object: empty message"),
    (b"   ", "not a JSON object: empty message"),
    (b'{"ts": 1700000000, "amount": NaN}', "not a JSON object"),
    (b'{"ts": 1700000000, "amount": Infinity}', "not a JSON object"),
    (b'{"ts": 1700000000, "amount": 1e400}', "not a JSON object"),
    (b'{"ts": 1700000000, "amount": "12"}', "a field has the wrong type"),
    (b'{"ts": 1700000000, "amount": {"x": 1}}', "a field has the wrong type"),
    (b'{"ts": 1700000000, "user": "flat"}', "a field has the wrong type"),
    (b'{"amount": 1}', 'missing or unparsable time field "ts"'),
    (b'{"ts": "yesterday"}', 'missing or unparsable time field "ts"'),
    (b'{"ts": null}', 'missing or unparsable time field "ts"'),
    (b'{"ts": 12}', "event time 12000 ms is before 2000-01-01"),
    (b'{"ts": 1700000000', "not a JSON object"),
    (b'\xff\xfe{"ts": 1}', "not a JSON object"),
])
def test_bad_message_is_rejected_with_its_reason(raw, reason):
    out = decoder().decode([valid(1), raw, valid(2)])
    assert out.frame["__row"].to_list() == [0, 2]
    assert [i for i, _ in out.invalid] == [1]
    assert out.invalid[0][1].startswith(reason)


def test_time_formats():
    raws = [b'{"ts": 1700000000}', b'{"ts": 1700000000.25}', b'{"ts": 1700000000123}',
            b'{"ts": "2023-11-14T22:13:20Z"}', b'{"ts": "2023-11-15T06:13:20.5+08:00"}',
            b'{"ts": "2023-11-14 22:13:20"}', b'{"ts": "1700000000"}']
    out = decoder().decode(raws)
    assert out.invalid == []
    assert out.frame["__ts"].to_list() == [1700000000000, 1700000000250, 1700000000123,
                                           1700000000000, 1700000000500, 1700000000000,
                                           1700000000000]


def test_far_future_is_invalid_only_with_a_clock():
    raw = [orjson.dumps({"ts": T + 7200})]
    assert decoder().decode(raw).invalid == []
    out = decoder().decode(raw, max_time_ms=(T + 3600) * 1000)
    assert out.invalid == [(0, f"event time {(T + 7200) * 1000} ms is too far in the future "
                               f"(limit {(T + 3600) * 1000} ms)")]


def test_huge_and_multiline_messages():
    big = orjson.dumps({"ts": T, "region": "x" * 1_000_000})
    pretty = orjson.dumps({"ts": T, "amount": 2}, option=orjson.OPT_INDENT_2)
    out = decoder().decode([big, pretty])
    assert out.invalid == []
    assert out.frame["amount"].to_list() == [None, 2.0]


hostile = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=30).map(str.encode),
    st.builds(lambda v: orjson.dumps({"ts": T, "amount": v}),
              st.one_of(st.text(max_size=5), st.booleans(),
                        st.lists(st.integers(-1000, 1000), max_size=2))),
    st.builds(lambda v: orjson.dumps({"ts": v}), st.one_of(st.text(max_size=8), st.none())),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 1000).map(valid), hostile), max_size=40))
def test_any_mix_keeps_exactly_the_valid_messages(batch):
    out = decoder().decode(batch)
    kept = out.frame["__row"].to_list()
    rejected = [i for i, _ in out.invalid]
    assert sorted(kept + rejected) == list(range(len(batch)))
    for i in kept:  # a kept message reads as what was sent
        event = orjson.loads(batch[i])
        row = out.frame.filter(out.frame["__row"] == i).row(0, named=True)
        assert row["amount"] == (float(event["amount"]) if "amount" in event else None)
    for i, _ in out.invalid:
        assert batch[i] not in {valid(n) for n in range(1001)}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 1000).map(valid), hostile,
                          st.just(b'{"ts": 1700000000, "region": "\\ud800"}')),
                min_size=1, max_size=30))
def test_a_message_is_judged_alone_as_in_any_batch(batch):
    """Verdict and reason do not depend on the batch (the orjson screen runs only when
    polars refuses a batch, and takes only what polars refuses alone)."""
    together = decoder().decode(batch)
    reasons = dict(together.invalid)
    for i, raw in enumerate(batch):
        alone = decoder().decode([raw])
        assert dict(alone.invalid).get(0) == reasons.get(i), raw


def test_absurd_numeric_times_are_invalid_not_a_crash():
    out = decoder().decode([b'{"ts": "1E100"}', b'{"ts": 1e300}', b'{"ts": -1e20}', valid(1)])
    assert [i for i, _ in out.invalid] == [0, 1, 2]
    assert all(r.startswith('missing or unparsable time field "ts"') for _, r in out.invalid)
