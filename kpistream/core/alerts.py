"""Alert evaluation: inactive → pending → firing → resolved, per alert, severity and series.

Evaluated at each closed window of the alert's KPI, as the contract says: pending at the
first close where the condition holds, firing at the first close at least ``for`` later while
it held at every close in between, resolved at the first close where it no longer holds (or
the series has no value). ``keep_firing_for`` holds a firing alert that long after its
condition stops; ``resolve_when`` replaces "no longer holds" by a condition of its own.
Each ``levels:`` severity runs its own state machine; absence alerts fire for a series that
had no events for ``absent_for``, and keeps firing until events come back (even after the
series stopped being reported).

>>> from kpistream.core.loader import load_rules_text
>>> from kpistream.core.values import ClosedWindow
>>> rules = load_rules_text('''
... sources: [{name: s, topic: t}]
... kpis: [{name: gmv, source: s, agg: sum(x), by: [region], window: 1m}]
... alerts: [{name: low, kpi: gmv, when: value < 10, for: 2m, severity: critical}]
... ''')
>>> group = AlertGroup("gmv", [AlertEvaluator(rules.alerts[0], rules, KpiHistory(60_000, 0))])
>>> for end, v in [(60_000, 5.0), (120_000, 4.0), (180_000, 3.0), (240_000, 50.0)]:
...     for e in group.step(ClosedWindow("gmv", end - 60_000, end, {("east",): v})):
...         print(e.state, e.at_ms, e.value, e.since_ms, e.labels)
firing 180000 3.0 0 (('region', 'east'),)
resolved 240000 50.0 0 (('region', 'east'),)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kpistream.core.anomalies import judgement_env
from kpistream.core.anomaly import Judgement
from kpistream.core.baselines import KpiHistory
from kpistream.core.conditions import ConditionColumns, holds
from kpistream.core.join import WindowJoin
from kpistream.core.notify.model import AlertEvent, Band
from kpistream.core.ruleset import Alert, Kpi, RuleSet
from kpistream.core.targets import target_env
from kpistream.core.values import AlertState, ClosedWindow, SeriesKey

__all__ = ["AlertEvaluator", "AlertGroup", "SeriesAlert", "assessment_env"]

#: Points of the series carried by each alert event, for charts.
CHART_POINTS = 60


@dataclass
class SeriesAlert:
    """The state of one alert severity for one series."""

    state: AlertState
    since_ms: int
    false_since_ms: int | None = None


Env = dict[str, object]


class AlertEvaluator:
    """Evaluates one alert rule over its KPI's (and its inputs') closed windows.

    An alert that reads only its own KPI is stepped by :class:`AlertGroup` with the other
    alerts of that KPI, sharing one condition environment per series; one that names other
    KPIs joins their windows first (:meth:`offer`, :meth:`evaluate`).
    """

    def __init__(self, rule: Alert, rules: RuleSet, history: KpiHistory) -> None:
        self.rule = rule
        self.kpi = rules.kpis[rule.kpi]
        self.history = history
        names = (rule.kpi, *rule.inputs)
        zero = {n for n in names if (a := rules.kpis[n].agg) is not None and a.zero_when_empty}
        self.join = WindowJoin({n: rules.kpis[n].by for n in names}, self.kpi.by, zero=zero)
        #: absence alerts: series -> end of the last window with events of it
        self.last_active: dict[SeriesKey, int] = {}
        self._active: dict[int, frozenset[SeriesKey]] = {}
        self.states: dict[tuple[str, SeriesKey], SeriesAlert] = {}
        #: composite alerts: the alert's KPI's windows by end, for their judgements and
        #: standings, until joined
        self._assessed: dict[int, ClosedWindow] = {}

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.join.inputs

    def offer(self, window: ClosedWindow) -> None:
        """Buffer a window of the alert's KPIs (composite alerts)."""
        self.join.offer(window)
        if window.kpi == self.rule.kpi and (window.judgements or window.standings):
            self._assessed[window.end_ms] = window

    def evaluate(self, closed_through: Mapping[str, int | None]) -> list[AlertEvent]:
        """Step every series with the joined windows all inputs have closed."""
        events: list[AlertEvent] = []
        for _, end, rows in self.join.ready(closed_through):
            window = self._assessed.pop(end, None)
            envs = {key: self.env(row.get(self.rule.kpi), key, end, row, window)
                    for key, row in rows.items()}
            events += self.step(end, envs, frozenset())
        return events

    def env(self, value: float | None, key: SeriesKey, end: int, row: Env | None = None,
            window: ClosedWindow | None = None) -> Env:
        """What a condition reads for one series at one window end."""
        env: Env = dict(row) if row else {}
        env.update(value=value, __history=self.history.of(key), __end=end)
        env.update(assessment_env(self.kpi, window, key))
        return env

    def step(self, end: int, envs: Mapping[SeriesKey, Env], active: frozenset[SeriesKey]
             ) -> list[AlertEvent]:
        """Advance the states of every series at window end ``end``."""
        events: list[AlertEvent] = []
        states, absent = self.states, self.rule.absent_for_ms is not None
        keys: Iterable[SeriesKey] = envs
        if absent:
            for key in active:
                self.last_active[key] = end
            keys = set(envs) | set(self.last_active)
        if states:
            keys = set(keys) | {key for _, key in states}
        for key in keys:
            env = envs.get(key)
            if env is None:
                env = self.env(None, key, end)
            for severity, ok in self._verdicts(key, env, end):
                if not ok and (severity, key) not in states:
                    continue  # the common case: nothing to do
                event = self._step(severity, key, ok, env, end)
                if event is not None:
                    events.append(event)
        return events

    def step_verdicts(self, severity: str, window: ClosedWindow, keys: Sequence[SeriesKey],
                      verdicts: Sequence[bool]) -> list[AlertEvent]:
        """Advance one severity's states from verdicts computed for every series at once."""
        events: list[AlertEvent] = []
        states, end, values = self.states, window.end_ms, window.values
        for key, ok in zip(keys, verdicts, strict=True):
            if ok or (severity, key) in states:
                env = self.env(values[key], key, end, window=window)
                event = self._step(severity, key, ok, env, end)
                if event is not None:
                    events.append(event)
        gone = sorted(k for s, k in states if s == severity and k not in values)
        for key in gone:  # a firing or pending series without a value in this window
            event = self._step(severity, key, False, self.env(None, key, end), end)
            if event is not None:
                events.append(event)
        return events

    def retire(self, at_ms: int) -> list[AlertEvent]:
        """Resolve every firing series: the rule is being removed or replaced (hot reload)."""
        events = [self._event(severity, key, "resolved", at_ms, self.env(None, key, at_ms),
                              state.since_ms)
                  for (severity, key), state in self.states.items()
                  if state.state is AlertState.FIRING]
        self.states.clear()
        return events

    def state(self) -> dict:
        return {"join": self.join.state(), "states": self.states, "last_active": self.last_active}

    def load(self, state: dict) -> None:
        self.join.load(state["join"])
        self.states, self.last_active = state["states"], state["last_active"]

    def firing(self) -> list[tuple[str, SeriesKey]]:
        """(severity, series) pairs firing now."""
        return [k for k, s in self.states.items() if s.state is AlertState.FIRING]

    def _verdicts(self, key: SeriesKey, env: Env, end: int) -> list[tuple[str, bool]]:
        if self.rule.absent_for_ms is not None:
            return [(self.rule.severity, self._absent(key, end))]
        if env["value"] is None:
            return [(c.severity, False) for c in self.rule.conditions]
        return [(c.severity, holds(c.test, env)) for c in self.rule.conditions]

    def _absent(self, key: SeriesKey, end: int) -> bool:
        last_active = self.last_active.get(key)
        return last_active is not None and end - last_active >= self.rule.absent_for_ms

    def _step(self, severity: str, key: SeriesKey, ok: bool, env: dict, at_ms: int
              ) -> AlertEvent | None:
        state = self.states.get((severity, key))
        if state is not None and state.state is AlertState.FIRING:
            return self._while_firing(severity, key, state, ok, env, at_ms)
        if not ok:
            self.states.pop((severity, key), None)
            return None
        if state is None:
            state = self.states[(severity, key)] = SeriesAlert(AlertState.PENDING, at_ms)
        if at_ms - state.since_ms >= self.rule.for_ms:
            state.state = AlertState.FIRING
            return self._event(severity, key, "firing", at_ms, env, state.since_ms)
        return None

    def _while_firing(self, severity: str, key: SeriesKey, state: SeriesAlert, ok: bool,
                      env: dict, at_ms: int) -> AlertEvent | None:
        if self.rule.resolve is not None:
            done = env["value"] is None or holds(self.rule.resolve, env)
        elif ok:
            state.false_since_ms = None
            done = False
        else:  # as Prometheus: keep firing for keep_firing_for after the first false close
            if state.false_since_ms is None:
                state.false_since_ms = at_ms
            done = at_ms - state.false_since_ms >= self.rule.keep_firing_for_ms
        if not done:
            return None
        del self.states[(severity, key)]
        return self._event(severity, key, "resolved", at_ms, env, state.since_ms)

    def _event(self, severity: str, key: SeriesKey, state: str, at_ms: int, env: dict,
               since_ms: int) -> AlertEvent:
        rule, kpi = self.rule, self.kpi
        value = env["value"]
        history = tuple(p for p in self.history.of(key).recent(CHART_POINTS) if p[0] < at_ms)
        history = history[-(CHART_POINTS - 1):]
        if value is not None:
            history = (*history, (at_ms, value))
        return AlertEvent(
            alert=rule.name, kpi=rule.kpi, labels=tuple(sorted(zip(kpi.labels, key,
                                                                   strict=True))),
            state=state, severity=severity, at_ms=at_ms,
            since_ms=kpi.calendar.window_start(since_ms),  # the first breaching window began
            value=value,
            condition=_condition_text(rule, severity), owner=rule.owner, kpi_title=kpi.title,
            unit=kpi.unit, summary=rule.summary, notify=rule.notify, history=history,
            band=_band(env.get("__judgement")), standing=env.get("__standing"))


class AlertGroup:
    """The alerts that read only one KPI, evaluated together.

    Their conditions run over every series of a window in one polars ``select``
    (:class:`~kpistream.core.conditions.ConditionColumns`); only series where a condition
    holds, or that have a state, reach the state machines. Absence alerts step per series.
    """

    def __init__(self, kpi: str, evaluators: list[AlertEvaluator]) -> None:
        self.kpi = kpi
        self.evaluators = evaluators
        self.absence = [e for e in evaluators if e.rule.absent_for_ms is not None]
        self.slots: list[tuple[AlertEvaluator, str]] = [
            (e, c.severity) for e in evaluators if e.rule.absent_for_ms is None
            for c in e.rule.conditions]
        texts = [c.text for e in evaluators if e.rule.absent_for_ms is None
                 for c in e.rule.conditions]
        self.columns = ConditionColumns(texts)

    def step(self, window: ClosedWindow) -> list[AlertEvent]:
        end = window.end_ms
        keys = list(window.values)
        events: list[AlertEvent] = []
        if self.slots:
            history = self.slots[0][0].history
            kpi = self.slots[0][0].kpi
            extras = ([assessment_env(kpi, window, k) for k in keys]
                      if kpi.anomaly or kpi.targets else None)
            verdicts = self.columns.verdicts(keys, [window.values[k] for k in keys], history,
                                             end, extras)
            for (evaluator, severity), column in zip(self.slots, verdicts, strict=True):
                events += evaluator.step_verdicts(severity, window, keys, column)
        if self.absence:
            envs = {key: self.absence[0].env(value, key, end)
                    for key, value in window.values.items()}
            for evaluator in self.absence:
                events += evaluator.step(end, envs, window.active)
        return events


def assessment_env(kpi: Kpi, window: ClosedWindow | None, key: SeriesKey) -> Env:
    """The names a KPI's anomaly band and targets give one series' conditions (None where
    the window has no judgement or standing of it), and the judgement for messages."""
    env: Env = {}
    if kpi.anomaly is not None:
        judgement = (window.judgements or {}).get(key) if window else None
        env.update(judgement_env(judgement), __judgement=judgement)
    if kpi.targets:
        standing = (window.standings or {}).get(key) if window else None
        env.update(target_env(standing, tuple(t.period for t in kpi.targets)),
                   __standing=standing[0] if standing else None)
    return env


def _band(judgement: Judgement | None) -> Band | None:
    if judgement is None or judgement.expected is None:
        return None
    return Band(judgement.expected, judgement.lower, judgement.upper, judgement.score,
                judgement.model, judgement.is_anomaly)


def _condition_text(rule: Alert, severity: str) -> str:
    for condition in rule.conditions:
        if condition.severity == severity:
            return condition.text
    return rule.condition_text
