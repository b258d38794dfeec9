"""The demo's anomaly alerts over simulated days: incidents caught, delay, false alerts.

Runs the demo generator's traffic (with its injected incidents) through the engine with the
demo rules, in process, and matches every firing of an alert on a KPI with ``anomaly:`` to
the incidents: a firing is a detection when an incident that targets its series (same region
and/or channel) was active in its window or the window before; any other firing is a false
alert. The models warm up first (``--warmup-hours``, not scored).

    .venv/bin/python bench/anomaly_demo.py [--hours 24] [--rate 200] [--rules rules/demo] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import orjson

from kpistream.core.demo_events import DemoGenerator, Incident
from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules
from kpistream.core.notify.model import AlertEvent
from kpistream.core.ruleset import RuleSet

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3_600_000
MIN = 60_000
START = int(datetime.fromisoformat("2024-06-14T00:00:00+08:00").timestamp() * 1000)


def simulate(rules: RuleSet, generator: DemoGenerator, start: int, end: int
             ) -> list[AlertEvent]:
    """Every alert transition of the demo traffic in ``[start, end)``, a minute at a time."""
    engine = Engine(rules)
    topics = {s.topic: s.name for s in rules.sources.values()}
    transitions: list[AlertEvent] = []
    for t in range(start, end, MIN):
        for topic, events in generator.events_between(t, t + MIN).items():
            engine.ingest(topics[topic], [orjson.dumps(e) for e in events])
        transitions += engine.advance().transitions
    return transitions + engine.finish().transitions


def targets(incident: Incident, labels: dict[str, str]) -> bool:
    """Whether the series is hit by the incident: every target it has a label for matches
    (a KPI by region alone is hit by an incident of one channel in every region)."""
    return all(want is None or name not in labels or labels[name] == want
               for name, want in (("region", incident.region), ("channel", incident.channel)))


def score(firings: list[AlertEvent], incidents: list[Incident]) -> tuple[dict, Counter]:
    """Per incident kind: [incidents, caught, delays]; false alerts per alert name."""
    kinds: dict[str, list] = defaultdict(lambda: [0, 0, []])
    first: dict[int, int] = {}
    false = Counter()
    for event in firings:
        labels = dict(event.labels)
        hit = [i for i, inc in enumerate(incidents)
               if inc.start_ms < event.at_ms <= inc.end_ms + MIN and targets(inc, labels)]
        if not hit:
            false[event.alert] += 1
        for i in hit:
            first[i] = min(first.get(i, event.at_ms), event.at_ms)
    for i, incident in enumerate(incidents):
        row = kinds[incident.kind.value]
        row[0] += 1
        if i in first:
            row[1] += 1
            row[2].append((first[i] - incident.start_ms) // MIN)
    return kinds, false


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--warmup-hours", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules" / "demo")
    parser.add_argument("--incident-every", type=float, default=5.0, metavar="MINUTES",
                        help="the demo's incident period (its default: 5)")
    parser.add_argument("--seed", type=int, default=1,
                        help="the generator's seed: another day of traffic and incidents")
    args = parser.parse_args()
    rules = load_rules(args.rules)
    watched = {a.name for a in rules.alerts if "is_anomaly" in a.condition_text}
    generator = DemoGenerator(seed=args.seed, rate_per_s=args.rate,
                              incident_every_ms=int(args.incident_every * MIN))
    scored_from = START + int(args.warmup_hours * HOUR)
    end = scored_from + int(args.hours * HOUR)
    started = time.perf_counter()
    transitions = simulate(rules, generator, START, end)
    took = time.perf_counter() - started
    firings = [t for t in transitions
               if t.state == "firing" and t.alert in watched and t.at_ms > scored_from]
    incidents = [i for i in generator.incidents_between(scored_from, end)
                 if i.start_ms >= scored_from]
    kinds, false = score(firings, incidents)
    print(f"demo traffic {args.rate:g} events/s (seed {args.seed}), an incident every "
          f"{args.incident_every:g} min, {args.hours:g} h scored after "
          f"{args.warmup_hours:g} h of warm-up ({took:.1f} s); anomaly alerts: "
          f"{', '.join(sorted(watched))}")
    print(f"{'incident kind':<18} {'incidents':>9} {'caught':>7} {'median delay (windows)':>23}")
    for kind, (n, caught, delays) in sorted(kinds.items()):
        median = sorted(delays)[len(delays) // 2] if delays else "-"
        print(f"{kind:<18} {n:>9} {caught:>7} {median!s:>23}")
    days = args.hours / 24
    print(f"false alerts: {sum(false.values())} ({sum(false.values()) / days:.1f} per day) "
          f"{dict(false)}")


if __name__ == "__main__":
    main()
