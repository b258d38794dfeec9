"""Decode a batch of raw JSON messages into one polars frame, setting invalid ones aside.

The fast path hands the whole batch to polars' NDJSON reader with the source's schema (only
the fields its KPIs read, with their types). When polars rejects the batch, a screen with
orjson first sets aside the messages polars is known to reject (not JSON, not an object, a
number field holding a string, boolean, list or object), so a flood of garbage costs one
orjson parse each; the rest is split in halves until each bad message stands alone. A
message is judged the same whatever batch it came in: the screen only takes what polars
would refuse alone, and runs whenever the batch is refused.

>>> from kpistream.core.expr import FieldType
>>> d = Decoder("ts", {"amount": FieldType.NUMBER, "region": FieldType.STRING})
>>> out = d.decode([b'{"ts": 1700000000, "amount": 5, "region": "east"}', b'{"amount": 1}',
...                 b'not json', b'{"ts": "2023-11-14T22:13:21Z", "amount": "x"}'])
>>> out.frame.select("__ts", "__row", "amount", "region").rows()
[(1700000000000, 0, 5.0, 'east')]
>>> [(i, reason.split(";")[0]) for i, reason in out.invalid]
[(1, 'missing or unparsable time field "ts"'), (2, 'not a JSON object'),
 (3, 'a field has the wrong type')]
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson
import polars as pl

from kpistream.core.expr import FieldType

__all__ = ["MIN_EVENT_TIME_MS", "Decoded", "Decoder", "field_column"]

#: Events stamped before 2000-01-01 are taken for broken clocks or wrong units.
MIN_EVENT_TIME_MS = 946_684_800_000
_MS_THRESHOLD = 100_000_000_000  # numbers above 10^11 are epoch milliseconds
_MAX_MS = 2**53  # beyond, a time is nonsense (and not exact as a float)
_DTYPES = {FieldType.NUMBER: pl.Float64, FieldType.STRING: pl.String,
           FieldType.BOOL: pl.Boolean}
_RFC3339 = "%Y-%m-%dT%H:%M:%S%.f%z"
_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"  # no offset: taken as UTC


def field_column(name: str) -> pl.Expr:
    """The column of a (possibly dotted) field name in a decoded frame.

    >>> pl.DataFrame({"user": [{"city": "bj"}]}).select(field_column("user.city")).item()
    'bj'
    """
    head, *rest = name.split(".")
    column = pl.col(head)
    for part in rest:
        column = column.struct.field(part)
    return column


@dataclass
class Decoded:
    """Valid events as a frame (``__ts`` in epoch ms, ``__row`` the batch index) and the rest."""

    frame: pl.DataFrame
    invalid: list[tuple[int, str]] = field(default_factory=list)


class Decoder:
    """Decodes the messages of one source."""

    def __init__(self, time_field: str, fields: Mapping[str, FieldType]) -> None:
        self.time_field = time_field
        self.schema = _schema({**fields, time_field: FieldType.STRING}, time_field)
        #: top-level number fields, which the screen checks
        self.numbers = [n for n, kind in fields.items()
                        if kind is FieldType.NUMBER and "." not in n and n != time_field]
        self.time_column = field_column(time_field)

    def decode(self, values: Sequence[bytes], *, max_time_ms: int | None = None) -> Decoded:
        """Decode ``values``; events later than ``max_time_ms`` (when given) are invalid."""
        invalid: list[tuple[int, str]] = []
        frames: list[pl.DataFrame] = []
        whole = self._read_whole(values)
        if whole is not None:
            frames.append(whole)
        else:
            lines = [_one_line(v) for v in values]
            kept = []
            for index, line in enumerate(lines):
                reason = self._screen(line)
                if reason is None:
                    kept.append((index, line))
                else:
                    invalid.append((index, reason))
            self._parse(kept, frames, invalid)
        frame = pl.concat(frames) if len(frames) > 1 else frames[0] if frames else None
        if frame is None:
            return Decoded(self._empty(), sorted(invalid))
        frame = frame.with_columns(_epoch_ms(self.time_column).alias("__ts"))
        bad = frame["__ts"].is_null() | (frame["__ts"] < MIN_EVENT_TIME_MS)
        if max_time_ms is not None:
            bad = bad | (frame["__ts"] > max_time_ms)
        if bad.any():
            invalid.extend(self._time_problems(frame.filter(bad), max_time_ms))
            frame = frame.filter(~bad)
        return Decoded(frame, sorted(invalid))

    def _read_whole(self, values: Sequence[bytes]) -> pl.DataFrame | None:
        """The fast path: the batch as one NDJSON buffer, when every message is one good line."""
        joined = b"\n".join(values)
        if joined.count(b"\n") != len(values) - 1 or b"\r" in joined:
            return None
        try:
            frame = pl.read_ndjson(io.BytesIO(joined), schema=self.schema)
        except (pl.exceptions.PolarsError, ValueError, OverflowError):
            return None
        return frame.with_row_index("__row") if frame.height == len(values) else None

    def _screen(self, line: bytes | None) -> str | None:
        """Why polars would refuse this message on its own, when orjson can tell; else None.

        Not a JSON text (unless it has ``\\u`` escapes: polars takes lone surrogates that
        orjson refuses), not an object, or a number field that holds a string, boolean,
        list or object.
        """
        if line is None:
            return "not a JSON object: empty message"
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            return None if b"\\u" in line else f"not a JSON object; {str(e)[:200]}"
        if not isinstance(event, dict):
            return f"not a JSON object; a JSON {type(event).__name__}"
        for name in self.numbers:
            value = event.get(name)
            if isinstance(value, str | bool | list | dict):
                return (f'a field has the wrong type; "{name}" should be a number, got '
                        f"{type(value).__name__} {str(value)[:40]!r}")
        return None

    def _parse(self, items: list[tuple[int, bytes]], frames: list[pl.DataFrame],
               invalid: list[tuple[int, str]]) -> None:
        """Parse ``(batch index, line)`` items with polars, halving around bad ones."""
        if not items:
            return
        try:
            frame = pl.read_ndjson(io.BytesIO(b"\n".join(line for _, line in items)),
                                   schema=self.schema)
            if frame.height != len(items):
                raise pl.exceptions.ComputeError("line count mismatch")
        except (pl.exceptions.PolarsError, ValueError, OverflowError) as e:
            if len(items) == 1:
                invalid.append((items[0][0], _reason(e)))
                return
            half = len(items) // 2
            self._parse(items[:half], frames, invalid)
            self._parse(items[half:], frames, invalid)
            return
        rows = pl.Series("__row", [index for index, _ in items], dtype=pl.UInt32)
        frames.append(frame.with_columns(rows).select("__row", *frame.columns))

    def _time_problems(self, bad: pl.DataFrame, max_time_ms: int | None) -> list[tuple[int, str]]:
        out = []
        for row, ts in bad.select("__row", "__ts").iter_rows():
            if ts is None:
                reason = (f'missing or unparsable time field "{self.time_field}"; expected '
                          "epoch seconds, epoch milliseconds or an RFC 3339 time")
            elif ts < MIN_EVENT_TIME_MS:
                reason = f"event time {ts} ms is before 2000-01-01; wrong unit or broken clock?"
            else:
                reason = f"event time {ts} ms is too far in the future (limit {max_time_ms} ms)"
            out.append((row, reason))
        return out

    def _empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema={"__row": pl.UInt32, **self.schema, "__ts": pl.Int64})


def _one_line(value: bytes) -> bytes | None:
    """NDJSON needs one line per message; raw line breaks in JSON are only whitespace."""
    if not value.strip():
        return None
    if b"\n" in value or b"\r" in value:
        return value.replace(b"\r", b" ").replace(b"\n", b" ")
    return value


def _reason(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "cannot parse" in text or "unexpected value" in text:
        return f"a field has the wrong type; {text[:200]}"
    return f"not a JSON object; {text[:200]}"


def _epoch_ms(column: pl.Expr) -> pl.Expr:
    number = column.cast(pl.Float64, strict=False)
    as_ms = pl.when(number.abs() > _MS_THRESHOLD).then(number).otherwise(number * 1000)
    text = column.str.replace(" ", "T").str.replace(r"[zZ]$", "+00:00")
    zoned = text.str.to_datetime(_RFC3339, strict=False, time_unit="ms").dt.epoch("ms")
    naive = text.str.to_datetime(_NAIVE, strict=False, time_unit="ms").dt.epoch("ms")
    parsed = pl.coalesce(zoned, naive)
    in_range = as_ms.abs() < _MAX_MS  # also false for NaN and infinities
    return pl.when(number.is_not_null() & in_range).then(as_ms.round().cast(pl.Int64)).otherwise(
        pl.when(number.is_null()).then(parsed)
    )


def _schema(fields: Mapping[str, FieldType], time_field: str) -> dict[str, pl.DataType]:
    tree: dict = {}
    for name, kind in sorted(fields.items()):
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node.setdefault(leaf, _DTYPES[kind])
    return {k: _dtype(v) for k, v in tree.items()}


def _dtype(node: dict | pl.DataType) -> pl.DataType:
    if isinstance(node, dict):
        return pl.Struct({k: _dtype(v) for k, v in node.items()})
    return node
