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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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

    def __init__(self, rules: Path, broker_url: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kpistream", "run", "--rules", str(rules), "--broker",
             broker_url, "--metrics-addr", f"127.0.0.1:{self.port}", "--start-from",
             "earliest"],
            env={**os.environ, "KPISTREAM_SESSION_TIMEOUT": "6s", **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

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
