"""The dashboards and recording rules against a real Prometheus scraping a running demo.

One demo (`kpistream demo`, embedded broker, generated traffic) and one Prometheus 2.42
(Debian's package; the test fails when it is missing) scraping it every second with
deploy/prometheus/prometheus.yml's scrape job and rules. Then every PromQL expression of
every panel and annotation of every dashboard (the checked-in ones and a fresh generation
for rules/demo), variables filled with values Prometheus lists, and every recording rule
must return at least one series. promtool checks the config, the rules and the scraped
/metrics text.

The demo runs on a copy of rules/demo with two timing knobs turned down so that every
series exists within the time budget: anomaly warm-up 1 window instead of 200 (bands from
the second closed window instead of after 200 minutes), and gmv_hourly's hop 1m instead of
5m (its first window closes within a minute). KPI names, labels and metrics, which is what
the queries read, are unchanged.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from dashboard_support import (
    REPO,
    Json,
    all_panels,
    annotation_queries,
    load_dashboards,
    panel_queries,
    parse_label_values,
    referenced_variables,
    substitute,
    variables,
)

from kpistream.core.loader import load_rules
from kpistream.shell.grafana import rules_dashboard

sys.path.insert(0, str(REPO / "tests" / "shell"))
from daemon_support import free_port, poll

DEPLOY = REPO / "deploy" / "prometheus"
#: from the demo's start until every query answers (first windows close within ~70 s,
#: bands a window later)
DEADLINE_S = 200.0


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} not installed (Debian package `prometheus`; make test installs it)")
    return path


def _promtool(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([_binary("promtool"), *args], input=stdin, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert "SUCCESS" in _promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert "SUCCESS: 6 rules found" in _promtool("check", "rules", str(DEPLOY / "rules.yml"))


# -- processes -----------------------------------------------------------------------------


def _fast_demo_rules(out: Path) -> Path:
    """rules/demo with anomaly warm-up 1 and hops of 1m (see the module docstring)."""
    out.mkdir()
    for path in sorted((REPO / "rules" / "demo").glob("*.yaml")):
        if path.name.endswith(".test.yaml"):
            continue
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for kpi in doc.get("kpis", []):
            if "anomaly" in kpi:
                kpi["anomaly"] = {**(kpi["anomaly"] or {}), "warmup": 1}
            if "hop" in kpi:
                kpi["hop"] = "1m"
        (out / path.name).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return out


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running `kpistream demo`; yields its metrics address."""
    rules = _fast_demo_rules(tmp_path_factory.mktemp("demo") / "rules")
    addr = f"127.0.0.1:{free_port()}"
    log = (tmp_path_factory.mktemp("demo-log") / "demo.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpistream", "demo", "--metrics-addr", addr, "--rules",
         str(rules)], env={**os.environ, "KPISTREAM_SESSION_TIMEOUT": "6s"},
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield addr
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def prometheus(demo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus with deploy/prometheus's job and rules, scraping the demo every second."""
    binary = _binary("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [demo]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    _promtool("check", "config", str(work / "prometheus.yml"))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", job["job_name"])
    finally:
        _stop(proc, signal.SIGTERM)
        log.close()


# -- the HTTP API --------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    job: str

    def get(self, path: str, **params: str) -> Json:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[Json]:
        """The series an instant query returns now; a PromQL error fails the test."""
        try:
            return self.get("/api/v1/query", query=expr)["result"]
        except urllib.error.HTTPError as e:  # 400/422: the expression is wrong
            pytest.fail(f"Prometheus rejected {expr!r}: {e.read().decode()}")

    def label_values(self, query: str) -> list[str]:
        selector, label = parse_label_values(query)
        params = {"match[]": selector} if selector else {}
        return self.get(f"/api/v1/label/{label}/values", **params)

    def target_up(self) -> bool:
        return bool(self.query(f'up{{job="{self.job}"}} == 1'))


@dataclass
class Missing:
    """Queries still without a series; truthy once there are none (for ``poll``)."""

    queries: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.queries

    def __repr__(self) -> str:
        return f"still empty: {self.queries}"


# -- what to ask ---------------------------------------------------------------------------


def _dashboards() -> dict[str, Json]:
    fresh = rules_dashboard(load_rules(REPO / "rules" / "demo"), "demo")
    return {**load_dashboards(), "kpis-demo.json (fresh)": fresh}


def _choices(prom: Prometheus, board: Json) -> dict[str, list[str]]:
    """Every value Prometheus lists for each query variable (real values, not "All")."""
    choices = {}
    for variable in variables(board):
        if variable["type"] != "query":
            continue
        values = prom.label_values(variable["query"])
        assert values, f"variable {variable['name']}: no values"
        choices[variable["name"]] = values
    return choices


def _expansions(expr: str, choices: dict[str, list[str]]) -> list[str]:
    names = sorted(referenced_variables(expr) & set(choices))
    return [substitute(expr, dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(choices[n] for n in names))]


def _answers(prom: Prometheus, expr: str, choices: dict[str, list[str]]) -> bool:
    """Whether the expression returns a series for some choice of its variables' values
    (e.g. failed payments of one region and channel: not every pair had one yet)."""
    return any(prom.query(e) for e in _expansions(expr, choices))


def _all_queries(prom: Prometheus) -> list[tuple[str, str, dict[str, list[str]]]]:
    """(where, expression, variable choices) for every query of every dashboard."""
    found = []
    for name, board in _dashboards().items():
        choices = _choices(prom, board)
        for panel in all_panels(board):
            found += [(f"{name} / {panel['title']}", q, choices) for q in panel_queries(panel)]
        found += [(f"{name} / annotation", q, choices) for q in annotation_queries(board)]
    return found


def _recording_rules() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"]]


# -- the test ------------------------------------------------------------------------------


def _metrics_text(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_every_dashboard_query_and_recording_rule_returns_data(
        demo: str, prometheus: Prometheus) -> None:
    started = time.monotonic()
    text = await poll(lambda: "kpistream_kpi_value{" in (t := _metrics_text(demo)) and t,
                      deadline_s=DEADLINE_S, what="the demo's first KPI values")
    _promtool("check", "metrics", stdin=text)
    assert ('kpistream_kpi_info{definition="已支付订单的金额之和（元），不含未支付和已取消订单，'
            '退款不冲减",kpi="gmv",owner="sales-ops",parent="gmv_by_region",title=') in text
    await poll(prometheus.target_up, deadline_s=30, what="Prometheus scraping the demo")
    await poll(lambda: prometheus.query("kpistream_kpi_value"), deadline_s=30,
               what="KPI values in Prometheus")

    asked = _all_queries(prometheus)
    missing = Missing([f"{where}: {expr}" for where, expr, _ in asked])
    pending = {f"{where}: {expr}": (expr, choices) for where, expr, choices in asked}
    pending |= {f"recording rule: {name}": (name, {}) for name in _recording_rules()}

    def answered() -> Missing:
        for key in list(pending):
            expr, choices = pending[key]
            if _answers(prometheus, expr, choices):
                del pending[key]
        missing.queries = sorted(pending)
        return missing

    remaining = DEADLINE_S - (time.monotonic() - started)
    await poll(answered, deadline_s=max(remaining, 1.0),
               what="every dashboard query and recording rule to return a series")

    print(f"every query answered {time.monotonic() - started:.0f} s after the demo started")
    # the last pass: everything at once, now
    empty = [f"{where}: {expr}" for where, expr, choices in asked
             if not _answers(prometheus, expr, choices)]
    empty += [name for name in _recording_rules() if not prometheus.query(name)]
    assert not empty, empty
    assert len(asked) > 100


async def test_the_detail_dashboard_has_no_empty_panel_for_any_kpi(
        demo: str, prometheus: Prometheus) -> None:
    """Whatever KPI is picked, each panel shows data or says why it cannot."""
    board = load_dashboards()["kpi-detail.json"]
    kpis = prometheus.label_values(board["templating"]["list"][0]["query"])
    assert len(kpis) == len(load_rules(REPO / "rules" / "demo").kpis)
    for panel in all_panels(board):
        if panel["fieldConfig"]["defaults"].get("noValue"):
            continue
        for kpi in kpis:
            assert any(prometheus.query(substitute(q, {"kpi": kpi}))
                       for q in panel_queries(panel)), (panel["title"], kpi)
