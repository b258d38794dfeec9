"""Deterministic demo traffic: e-commerce orders, visits and payments, with injected incidents.

Pure: times are arguments, randomness comes from ``random.Random`` seeded per second of
simulated time, so any interval can be generated on its own and always gives the same events.

Shape of the traffic (``rate_per_s`` is the daily mean of all three topics together):

- visits arrive as a Poisson process whose rate follows a daily e-commerce curve in
  Asia/Shanghai time (UTC+8, no DST): trough around 04:00 (~0.2x the daily mean), a lunch
  peak at 12:00 and the evening peak at 20:00-22:00 (~1.8x);
- regions (east 30%, south 24%, north 20%, central 14%, west 12%) and channels (app 50%,
  mini_program 30%, web 20%) have fixed weights; orders arrive at a channel-dependent share of
  the visit rate (app 10%, mini_program 8%, web 5%), with lognormal amounts (median ~120 CNY);
- 6% of orders stay ``created`` (abandoned), 3% are ``cancelled`` before paying, the rest pay
  within a minute: each attempt fails with a small method-dependent probability (card 4%,
  alipay/wechat ~1%) and users retry a failed payment up to twice; an order whose every attempt
  failed is ``cancelled``.

Incidents start one minute into every ``incident_every_ms`` period (aligned to the epoch), so
with the defaults each fills exactly two 1-minute windows; they rotate through
:class:`IncidentKind` and their targets are drawn from the seed.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "CHANNELS",
    "METHODS",
    "ORDERS_TOPIC",
    "PAYMENTS_TOPIC",
    "REGIONS",
    "TOPICS",
    "VISITS_TOPIC",
    "DemoGenerator",
    "Incident",
    "IncidentKind",
    "seasonality",
]

ORDERS_TOPIC = "demo.orders"
VISITS_TOPIC = "demo.visits"
PAYMENTS_TOPIC = "demo.payments"
TOPICS: tuple[str, ...] = (ORDERS_TOPIC, VISITS_TOPIC, PAYMENTS_TOPIC)

_REGION_WEIGHTS = {"east": 0.30, "north": 0.20, "south": 0.24, "west": 0.12, "central": 0.14}
_CHANNEL_WEIGHTS = {"app": 0.50, "web": 0.20, "mini_program": 0.30}
REGIONS: tuple[str, ...] = tuple(_REGION_WEIGHTS)
CHANNELS: tuple[str, ...] = tuple(_CHANNEL_WEIGHTS)
METHODS: tuple[str, ...] = ("alipay", "wechat", "card")

_ORDER_RATE = {"app": 0.10, "web": 0.05, "mini_program": 0.08}  # orders per visit
_METHOD_MIX = {  # channel -> weights over METHODS
    "app": (0.55, 0.30, 0.15),
    "web": (0.50, 0.20, 0.30),
    "mini_program": (0.10, 0.85, 0.05),
}
_FAIL_PROB = {"alipay": 0.010, "wechat": 0.012, "card": 0.040}
_PAGES = ("home", "search", "product", "cart", "checkout")
_PAGE_WEIGHTS = (0.30, 0.20, 0.35, 0.10, 0.05)
_AMOUNT_MU = {"app": math.log(130.0), "web": math.log(150.0), "mini_program": math.log(95.0)}
_AMOUNT_SIGMA = 0.8
_P_ABANDON, _P_CANCEL, _P_RETRY, _MAX_ATTEMPTS = 0.06, 0.03, 0.6, 3
_USERS_PER_REGION = 200_000

# Incident effects.
_INCIDENT_FAIL_PROB = 0.9  # payment_failures: the method fails this often in the region
_GMV_DROP_KEEP = 0.05  # gmv_drop: share of the region's orders that still arrive
_CHECKOUT_BROKEN = 0.95  # conversion_drop: share of the channel's orders that never pay
_INCIDENT_LEAD_MS = 60_000

_BUCKET_MS = 1_000
_FIRST_PAY_DELAY_MS = (1_000, 15_000)
_RETRY_DELAY_MS = (3_000, 20_000)
_MAX_PAY_DELAY_MS = _FIRST_PAY_DELAY_MS[1] + (_MAX_ATTEMPTS - 1) * _RETRY_DELAY_MS[1]
_CACHE_BUCKETS = 512
_SHANGHAI_OFFSET_MS = 8 * 3_600_000

# Daily curve, hourly anchors in Asia/Shanghai local time (00:00 .. 23:00), interpolated.
_HOURLY = (0.95, 0.62, 0.40, 0.27, 0.22, 0.24, 0.33, 0.52, 0.78, 0.98, 1.10, 1.22,
           1.38, 1.30, 1.12, 1.05, 1.04, 1.08, 1.18, 1.38, 1.66, 1.78, 1.62, 1.28)
_HOURLY_NORM = tuple(h * len(_HOURLY) / sum(_HOURLY) for h in _HOURLY)


def seasonality(ts_ms: int) -> float:
    """Traffic multiplier at ``ts_ms`` (daily mean 1.0; Asia/Shanghai trough 04:00, peak 21:00).

    >>> round(seasonality(1_718_395_200_000), 2)  # 2024-06-15 04:00 Shanghai
    0.22
    >>> round(seasonality(1_718_456_400_000), 2)  # 2024-06-15 21:00 Shanghai
    1.82
    """
    hour = ((ts_ms + _SHANGHAI_OFFSET_MS) % 86_400_000) / 3_600_000
    i = int(hour)
    frac = hour - i
    return _HOURLY_NORM[i] * (1 - frac) + _HOURLY_NORM[(i + 1) % 24] * frac


class IncidentKind(StrEnum):
    """What goes wrong during an incident, in rotation order."""

    PAYMENT_FAILURES = "payment_failures"  # one method fails ~90% in one region
    GMV_DROP = "gmv_drop"  # a region's orders fall by ~95%
    VISITS_OUTAGE = "visits_outage"  # a channel gets no visits (nor orders)
    CONVERSION_DROP = "conversion_drop"  # visits normal, ~95% of a channel's orders never pay


_KIND_ORDER = tuple(IncidentKind)


@dataclass(frozen=True)
class Incident:
    """One injected incident over ``[start_ms, end_ms)``; unused targets are ``None``."""

    kind: IncidentKind
    start_ms: int
    end_ms: int
    description: str
    region: str | None = None
    channel: str | None = None
    method: str | None = None

    def active_at(self, ts_ms: int) -> bool:
        """True when ``ts_ms`` falls inside the incident."""
        return self.start_ms <= ts_ms < self.end_ms


_Row = tuple[int, int, dict[str, Any]]  # (ts, sequence number within its bucket, event)


class DemoGenerator:
    """Seeded generator of demo orders, visits and payments; see the module docstring.

    Parameters
    ----------
    seed
        Same seed, same events and incidents.
    rate_per_s
        Approximate daily mean of events per second, all topics together (at 04:00 Shanghai
        about 0.2x this, at 21:00 about 1.8x).
    incident_every_ms
        Period of injected incidents; 0 disables them.
    incident_duration_ms
        How long each incident lasts; at most ``incident_every_ms``. The default, two minutes
        starting on a minute boundary, lets alerts with ``for: 1m`` on 1-minute windows fire.

    Examples
    --------
    >>> gen = DemoGenerator(seed=7)
    >>> t0 = 1_718_452_800_000  # 2024-06-15 12:00:00 UTC = 20:00 in Shanghai
    >>> batch = gen.events_between(t0, t0 + 1_000)
    >>> {topic: len(events) for topic, events in batch.items()}
    {'demo.orders': 24, 'demo.visits': 258, 'demo.payments': 22}
    >>> batch["demo.orders"][0]
    {'ts': 1718452800001, 'order_id': 'o171845280000000', 'user_id': 'u2087463',
     'region': 'south', 'channel': 'mini_program', 'status': 'paid', 'amount': 339.9}
    >>> first, rest = gen.events_between(t0, t0 + 400), gen.events_between(t0 + 400, t0 + 1_000)
    >>> all(batch[topic] == first[topic] + rest[topic] for topic in TOPICS)
    True
    >>> for incident in gen.incidents_between(t0, t0 + 900_000):
    ...     print(incident.kind.value, incident.start_ms - t0, incident.description)
    payment_failures 60000 wechat payments failing ~90% in region south
    gmv_drop 360000 orders (GMV) down ~95% in region east
    visits_outage 660000 visits outage: no traffic on channel mini_program
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        rate_per_s: float = 200.0,
        incident_every_ms: int = 300_000,
        incident_duration_ms: int = 120_000,
    ) -> None:
        if not 0 < rate_per_s <= 50_000:
            raise ValueError(f"rate_per_s must be in (0, 50000], got {rate_per_s}")
        if incident_every_ms < 0 or (incident_every_ms and incident_duration_ms <= 0):
            raise ValueError(
                "incident_every_ms must be >= 0 and incident_duration_ms > 0, got "
                f"{incident_every_ms} and {incident_duration_ms}"
            )
        if incident_every_ms and incident_duration_ms > incident_every_ms:
            raise ValueError(
                f"incident_duration_ms ({incident_duration_ms}) must not exceed "
                f"incident_every_ms ({incident_every_ms})"
            )
        self.seed = seed
        self.rate_per_s = rate_per_s
        self.incident_every_ms = incident_every_ms
        self.incident_duration_ms = incident_duration_ms
        self._lead_ms = min(_INCIDENT_LEAD_MS, incident_every_ms - incident_duration_ms)
        self._cells = [(r, c) for r in REGIONS for c in CHANNELS]
        visit_w = [_REGION_WEIGHTS[r] * _CHANNEL_WEIGHTS[c] for r, c in self._cells]
        order_w = [w * _ORDER_RATE[c] for w, (_, c) in zip(visit_w, self._cells, strict=True)]
        self._visit_cum = _cumulative(visit_w)
        self._order_cum = _cumulative(order_w)
        orders_per_visit = sum(order_w)
        events_per_visit = 1 + orders_per_visit * (1 + 0.92)  # order + ~0.92 payment attempts
        self._visit_rate_ms = rate_per_s / events_per_visit / 1000
        self._order_rate_ms = self._visit_rate_ms * orders_per_visit
        self._cache: OrderedDict[int, dict[str, list[_Row]]] = OrderedDict()

    # -- public -------------------------------------------------------------------------

    def events_between(self, t0_ms: int, t1_ms: int) -> dict[str, list[dict[str, Any]]]:
        """Events with ``t0_ms <= ts < t1_ms``, keyed by topic, each list sorted by ``ts``.

        Consecutive intervals give exactly the events of their union, in the same order.
        """
        out: dict[str, list[dict[str, Any]]] = {}
        for topic in TOPICS:
            lookback = _MAX_PAY_DELAY_MS if topic == PAYMENTS_TOPIC else 0
            first, last = (t0_ms - lookback) // _BUCKET_MS, (t1_ms - 1) // _BUCKET_MS
            rows: list[tuple[int, int, int, dict[str, Any]]] = [
                (ts, b, seq, event)
                for b in range(first, last + 1)
                for ts, seq, event in self._bucket(b)[topic]
                if t0_ms <= ts < t1_ms
            ]
            rows.sort(key=lambda row: row[:3])
            out[topic] = [dict(row[3]) for row in rows]
        return out

    def incidents_between(self, t0_ms: int, t1_ms: int) -> list[Incident]:
        """Incidents overlapping ``[t0_ms, t1_ms)``, by start time."""
        every = self.incident_every_ms
        if not every or t1_ms <= t0_ms:
            return []
        first = (t0_ms - self._lead_ms - self.incident_duration_ms) // every
        last = (t1_ms - 1 - self._lead_ms) // every
        found = (self._incident(k) for k in range(first, last + 1))
        return [i for i in found if i.start_ms < t1_ms and i.end_ms > t0_ms]

    def incident_at(self, ts_ms: int) -> Incident | None:
        """The incident active at ``ts_ms``, if any."""
        found = self.incidents_between(ts_ms, ts_ms + 1)
        return found[0] if found else None

    # -- incidents ----------------------------------------------------------------------

    def _incident(self, k: int) -> Incident:
        """The k-th incident since the epoch (kind rotates, targets come from the seed)."""
        rng = random.Random(f"{self.seed}:incident:{k}")
        kind = _KIND_ORDER[k % len(_KIND_ORDER)]
        start = k * self.incident_every_ms + self._lead_ms
        region, channel, method = rng.choice(REGIONS), rng.choice(CHANNELS), None
        if kind is IncidentKind.PAYMENT_FAILURES:
            method = rng.choice(("alipay", "wechat"))
            text, channel = f"{method} payments failing ~90% in region {region}", None
        elif kind is IncidentKind.GMV_DROP:
            text, channel = f"orders (GMV) down ~95% in region {region}", None
        elif kind is IncidentKind.VISITS_OUTAGE:
            text, region = f"visits outage: no traffic on channel {channel}", None
        else:
            text, region = f"conversion drop: ~95% of {channel} orders never pay", None
        return Incident(kind, start, start + self.incident_duration_ms, text,
                        region=region, channel=channel, method=method)

    # -- buckets ------------------------------------------------------------------------

    def _bucket(self, b: int) -> dict[str, list[_Row]]:
        """Events born in second ``b`` (payments may fall later), memoised LRU."""
        rows = self._cache.get(b)
        if rows is None:
            rows = self._generate(b)
            self._cache[b] = rows
            if len(self._cache) > _CACHE_BUCKETS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(b)
        return rows

    def _generate(self, b: int) -> dict[str, list[_Row]]:
        start = b * _BUCKET_MS
        rng = random.Random(f"{self.seed}:{b}")
        factor = seasonality(start)
        incidents = self.incidents_between(start, start + _BUCKET_MS + _MAX_PAY_DELAY_MS)
        rows: dict[str, list[_Row]] = {topic: [] for topic in TOPICS}
        self._visits(rng, start, factor, incidents, rows[VISITS_TOPIC])
        self._orders(rng, b, factor, incidents, rows)
        return rows

    def _visits(self, rng: random.Random, start: int, factor: float,
                incidents: list[Incident], out: list[_Row]) -> None:
        times = _arrivals(rng, start, self._visit_rate_ms * factor)
        cells = rng.choices(self._cells, cum_weights=self._visit_cum, k=len(times))
        pages = rng.choices(_PAGES, weights=_PAGE_WEIGHTS, k=len(times))
        for seq, (ts, (region, channel), page) in enumerate(zip(times, cells, pages, strict=True)):
            if incidents and _channel_down(incidents, ts, channel):
                continue
            out.append((ts, seq, {"ts": ts, "user_id": _user(rng, region), "region": region,
                                  "channel": channel, "page": page}))

    def _orders(self, rng: random.Random, b: int, factor: float,
                incidents: list[Incident], rows: dict[str, list[_Row]]) -> None:
        times = _arrivals(rng, b * _BUCKET_MS, self._order_rate_ms * factor)
        cells = rng.choices(self._cells, cum_weights=self._order_cum, k=len(times))
        for seq, (ts, (region, channel)) in enumerate(zip(times, cells, strict=True)):
            keep = _keep_share(incidents, ts, region, channel) if incidents else 1.0
            if keep < 1.0 and rng.random() >= keep:
                continue
            amount = round(rng.lognormvariate(_AMOUNT_MU[channel], _AMOUNT_SIGMA), 2)
            order = {"ts": ts, "order_id": f"o{b}{seq:05d}", "user_id": _user(rng, region),
                     "region": region, "channel": channel, "status": "created", "amount": amount}
            order["status"] = self._checkout(rng, order, incidents, rows[PAYMENTS_TOPIC])
            rows[ORDERS_TOPIC].append((ts, seq, order))

    def _checkout(self, rng: random.Random, order: dict[str, Any],
                  incidents: list[Incident], payments: list[_Row]) -> str:
        """Append the order's payment attempts; return its final status."""
        ts, channel = order["ts"], order["channel"]
        broken = any(i.kind is IncidentKind.CONVERSION_DROP and i.channel == channel
                     and i.active_at(ts) for i in incidents)
        draw = rng.random()
        if broken and draw < _CHECKOUT_BROKEN:
            return "created"
        if draw < _P_ABANDON:
            return "created"
        if draw < _P_ABANDON + _P_CANCEL:
            return "cancelled"
        method = rng.choices(METHODS, weights=_METHOD_MIX[channel])[0]
        at = ts + rng.randint(*_FIRST_PAY_DELAY_MS)
        for _ in range(_MAX_ATTEMPTS):
            failed = rng.random() < _fail_prob(incidents, at, order["region"], method)
            payments.append((at, len(payments), {
                "ts": at, "order_id": order["order_id"], "region": order["region"],
                "channel": channel, "method": method, "result": "failed" if failed else "success",
                "amount": order["amount"]}))
            if not failed:
                return "paid"
            if rng.random() >= _P_RETRY:
                break
            at += rng.randint(*_RETRY_DELAY_MS)
        return "cancelled"


def _cumulative(weights: Any) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def _arrivals(rng: random.Random, start: int, rate_per_ms: float) -> list[int]:
    """Poisson arrival times (int ms) in ``[start, start + 1 s)``."""
    times: list[int] = []
    if rate_per_ms <= 0:
        return times
    t, end = float(start), start + _BUCKET_MS
    while True:
        t += rng.expovariate(rate_per_ms)
        if t >= end:
            return times
        times.append(int(t))


_USER_PREFIX = {region: f"u{i}" for i, region in enumerate(REGIONS)}


def _user(rng: random.Random, region: str) -> str:
    """A user id such as ``u2066046``; the digit after ``u`` is the user's region."""
    return f"{_USER_PREFIX[region]}{int(rng.random() * _USERS_PER_REGION):06d}"


def _channel_down(incidents: list[Incident], ts: int, channel: str) -> bool:
    """True during a visits outage of ``channel``."""
    return any(i.kind is IncidentKind.VISITS_OUTAGE and i.channel == channel and i.active_at(ts)
               for i in incidents)


def _keep_share(incidents: list[Incident], ts: int, region: str, channel: str) -> float:
    """Share of orders that still arrive at ``ts`` (none during an outage, few in a GMV drop)."""
    if _channel_down(incidents, ts, channel):
        return 0.0
    for i in incidents:
        if i.kind is IncidentKind.GMV_DROP and i.region == region and i.active_at(ts):
            return _GMV_DROP_KEEP
    return 1.0


def _fail_prob(incidents: list[Incident], ts: int, region: str, method: str) -> float:
    for i in incidents:
        if (i.kind is IncidentKind.PAYMENT_FAILURES and i.region == region
                and i.method == method and i.active_at(ts)):
            return _INCIDENT_FAIL_PROB
    return _FAIL_PROB[method]
