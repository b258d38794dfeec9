"""Running `kpistream run` as a real subprocess in tests, and reading its /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One `kpistream run` child process and its metrics port."""

    def __init__(self, rules: Path, broker_url: str, env: dict[str, str],
                 log: Path | None = None) -> None:
        """``log``: a file for its output (for long runs: an unread pipe fills and blocks)."""
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kpistream", "run", "--rules", str(rules), "--broker",
             broker_url, "--metrics-addr", f"127.0.0.1:{self.port}", "--start-from",
             "earliest"],
            env={**os.environ, "KPISTREAM_SESSION_TIMEOUT": "6s", **env},
            stdout=subprocess.PIPE if log is None else log.open("ab"),
            stderr=subprocess.STDOUT)

    def scrape(self) -> Metrics:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for (n, ls), v in self.scrape().items()
                   if n == name and set(labels.items()) <= set(ls))

    def stop(self) -> str:
        """SIGINT, wait, and return what it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.log is not None:
            return self.log.read_text(errors="replace")
        return self.proc.stdout.read().decode() if self.proc.stdout else ""

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


async def poll(condition: Callable[[], T], *, deadline_s: float, what: str) -> T:
    """Await ``condition()`` becoming truthy, checking every 50 ms until the deadline."""
    end = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < end:
        try:
            last = condition()
            if last:
                return last
        except OSError:
            pass
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last seen: {last}")


def produce(broker_url: str, topic: str, path: Path, *key: str) -> None:
    subprocess.run([sys.executable, "-m", "kpistream", "produce", "--broker", broker_url,
                    "--topic", topic, *key, str(path)], check=True, capture_output=True,
                   timeout=60)


#: The shop of the live alert tests: orders per minute, an alert when fewer than 3.
T = 1_700_000_040_000  # a minute boundary (2023-11-14T22:14:00Z)
MIN = 60_000
SHOP_RULES = """
sources:
  - {name: orders, topic: TOPIC, partitions: 1}
kpis:
  - {name: paid, title: Paid orders, unit: orders, source: orders, agg: count(), by: [region],
     window: 1m, lateness: 0s, owner: ops}
alerts:
  - {name: too_few_orders, kpi: paid, when: value < 3, severity: critical,
     summary: checkout may be broken}
owners:
  - name: ops
    language: en
    notify: ["${HOOK}", "${MAIL}"]
"""


class Shop:
    """A rules directory, a topic, and a way to send a minute's orders."""

    def __init__(self, broker, tmp_path: Path, http_receiver, smtp_receiver) -> None:
        self.broker, self.tmp_path = broker, tmp_path
        self.topic = f"alerts-{uuid.uuid4().hex[:8]}"
        self.rules = tmp_path / "rules"
        self.rules.mkdir()
        (self.rules / "shop.yaml").write_text(SHOP_RULES.replace("TOPIC", self.topic))
        self.env = {
            "KPISTREAM_GROUP_ID": f"g-{self.topic}", "KPISTREAM_IDLE_TIMEOUT": "1h",
            "KPISTREAM_CHECKPOINT_INTERVAL": "200ms",
            "KPISTREAM_CHECKPOINT_TOPIC": f"cp-{self.topic}",
            "KPISTREAM_DELIVERY_LOG_TOPIC": f"dl-{self.topic}",
            "HOOK": f"json://{http_receiver.url.removeprefix('http://')}/hook",
            "MAIL": (f"mailto://{smtp_receiver.user}:{smtp_receiver.password}@127.0.0.1:"
                     f"{smtp_receiver.port}?mode=insecure&to=ops@example.com"
                     "&from=kpistream@example.com"),
        }
        self.sent = 0

    def daemon(self) -> Daemon:
        return Daemon(self.rules, self.broker.url, self.env)

    def minute(self, index: int, orders: int) -> None:
        path = self.tmp_path / f"m{index}-{self.sent}.jsonl"
        path.write_bytes(b"".join(orjson.dumps({"ts": T + index * MIN + i, "region": "east"})
                                  + b"\n" for i in range(orders)))
        produce(self.broker.url, self.topic, path)
        self.sent += orders
