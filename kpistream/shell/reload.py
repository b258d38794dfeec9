"""Hot reload: a change under the rules directory (or SIGHUP) swaps the rule set live.

The new set is validated first; an invalid one is logged with every problem and the old set
keeps running. A valid one is handed to both stages, which swap it between two polls: KPIs
and alerts whose definitions did not change keep their state (state is keyed by each
definition's signature), changed ones start afresh.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import mode
from prometheus_client import Gauge

from kpistream.core.loader import load_rules, rule_files
from kpistream.core.ruleset import RuleSet
from kpistream.errors import RuleError
from kpistream.shell.exporter import Exporter

__all__ = ["RulesWatcher"]

log = logging.getLogger("kpistream.reload")


class Reloadable(Protocol):
    """A service that swaps ``pending_rules`` in at its next poll."""

    rules: RuleSet
    pending_rules: RuleSet | None


class RulesWatcher(mode.Service):
    """Polls the rules directory's files once a second; reloads when they change."""

    def __init__(self, directory: str, services: Sequence[Reloadable], exporter: Exporter,
                 **kwargs) -> None:
        self.directory = Path(directory)
        self.services = list(services)
        self.exporter = exporter
        self.success = Gauge("kpistream_rules_reload_success",
                             "1 when the last reload attempt loaded a valid rule set.",
                             registry=exporter.registry)
        self.last_reload = Gauge("kpistream_rules_last_reload_timestamp_seconds",
                                 "When the live rule set was last (re)loaded.",
                                 registry=exporter.registry)
        self.success.set(1)
        self.last_reload.set(time.time())
        self._seen = self._fingerprint()
        self._requested = False
        super().__init__(**kwargs)

    def request(self) -> None:
        """Reload at the next tick whatever the files say (SIGHUP)."""
        self._requested = True

    @mode.Service.timer(1.0)
    async def _tick(self) -> None:
        current = self._fingerprint()
        if current == self._seen and not self._requested:
            return
        self._seen, self._requested = current, False
        self.reload()

    def reload(self) -> bool:
        """Validate the directory's rules and hand them over; False when invalid."""
        try:
            rules = load_rules(self.directory)
        except RuleError as e:
            self.success.set(0)
            log.error("rules under %s are invalid; keeping version %s running:\n%s",
                      self.directory, self.running, e)
            return False
        except Exception:  # a loader bug must not stop the daemon: keep the running set
            self.success.set(0)
            log.exception("loading the rules under %s failed; keeping version %s running",
                          self.directory, self.running)
            return False
        self.success.set(1)
        if rules.version != self.running:
            for service in self.services:
                service.pending_rules = rules
            self.last_reload.set(time.time())
            log.info("rules version %s loaded; swapping at the next poll", rules.version)
        return True

    @property
    def running(self) -> str:
        """The version of the rule set running (or about to)."""
        return self.services[0].rules.version

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in rule_files(self.directory) if self.directory.exists() else ():
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\0".encode())
        return digest.hexdigest()
