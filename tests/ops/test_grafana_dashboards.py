"""The Grafana files, checked structurally (the live test runs their queries).

Every panel reads the provisioned data source, every variable a query uses is defined, panel
ids are unique and positions valid, and the generated dashboard of rules/demo is the one
checked in.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from dashboard_support import (
    BUILTINS,
    DASHBOARDS,
    REPO,
    Json,
    all_panels,
    load_dashboards,
    panel_queries,
    queries,
    referenced_variables,
    variables,
)

from kpistream.core.loader import load_rules
from kpistream.shell.cli import main
from kpistream.shell.grafana import (
    DATASOURCE_UID,
    fixed_dashboards,
    render,
    rules_dashboard,
)

BOARDS = load_dashboards()
REGENERATE = ("rules/demo changed: regenerate with `kpistream grafana --rules rules/demo "
              "--out grafana/dashboards --fixed` and commit the result")
EXPECTED = {"kpi-overview.json", "kpi-detail.json", "pipeline.json", "kpis-demo.json"}


def test_the_four_dashboards_are_checked_in() -> None:
    assert set(BOARDS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_and_query_reads_the_provisioned_datasource(name: str) -> None:
    board = BOARDS[name]
    for panel in all_panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel
        assert panel["targets"] and all(t["datasource"]["uid"] == DATASOURCE_UID
                                        for t in panel["targets"]), panel["title"]
        assert panel_queries(panel), f"{name}: panel {panel['title']!r} has no query"
    for thing in [*variables(board), *board["annotations"]["list"][1:]]:
        assert thing["datasource"]["uid"] == DATASOURCE_UID, thing


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_variable_used_is_defined(name: str) -> None:
    board = BOARDS[name]
    defined = {v["name"] for v in variables(board)} | set(BUILTINS)
    texts = queries(board) + [v.get("query", "") for v in variables(board)]
    for text in texts:
        assert referenced_variables(text) <= defined, text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panel_ids_are_unique_and_positions_valid(name: str) -> None:
    panels = list(all_panels(BOARDS[name]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert set(pos) == {"x", "y", "w", "h"} and all(type(v) is int for v in pos.values())
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["w"] >= 1
        assert pos["y"] >= 0 and pos["h"] >= 1
        covered = set(itertools.product(range(pos["x"], pos["x"] + pos["w"]),
                                        range(pos["y"], pos["y"] + pos["h"])))
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered


def test_demo_dashboard_has_target_panels_exactly_for_kpis_with_targets() -> None:
    rules = load_rules(REPO / "rules" / "demo")
    board = BOARDS["kpis-demo.json"]
    assert any(kpi.targets for kpi in rules.kpis.values())
    for kpi in rules.kpis.values():
        panels = _kpi_panels(board, kpi.name)
        for title in ("attainment vs pace", "forecast vs target"):
            assert (f"{kpi.name} {title}" in panels) == bool(kpi.targets), (
                f"{kpi.name}: {REGENERATE}")


def test_checked_in_dashboards_are_the_generated_ones() -> None:
    """Regenerate with `kpistream grafana --rules rules/demo --out grafana/dashboards --fixed`."""
    fresh = {"kpis-demo.json": rules_dashboard(load_rules(REPO / "rules" / "demo"), "demo"),
             **fixed_dashboards()}
    for name, board in fresh.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == render(board), (
            f"{name}: {REGENERATE}")


def test_the_command_writes_the_checked_in_file(tmp_path: Path, capsys) -> None:
    assert main(["grafana", "--rules", str(REPO / "rules" / "demo"), "--out",
                 str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "kpis-demo.json")
    assert [p.name for p in tmp_path.iterdir()] == ["kpis-demo.json"]
    assert ((tmp_path / "kpis-demo.json").read_text(encoding="utf-8")
            == (DASHBOARDS / "kpis-demo.json").read_text(encoding="utf-8")), REGENERATE


def test_the_command_refuses_invalid_rules(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.yaml").write_text("kpis:\n  - name: x\n    agg: summ(a)\n")
    assert main(["grafana", "--rules", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


RULES = """
sources:
  - {name: orders, topic: shop.orders}
kpis:
  - {name: gmv, title: GMV, source: orders, agg: sum(amount), by: [region, user.city],
     window: 1m, unit: CNY, owner: sales, anomaly: {}}
  - {name: orders, source: orders, agg: count(), window: 5m, unit: orders}
alerts:
  - {name: gmv_low, kpi: gmv, when: value < 10, severity: critical}
owners:
  - {name: sales, notify: []}
"""


def _kpi_panels(board: Json, kpi: str) -> dict[str, Json]:
    return {p["title"]: p for p in all_panels(board)
            if any(f'kpi="{kpi}"' in q for q in panel_queries(p))}


def test_generated_panels_follow_the_rules(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(RULES)
    board = rules_dashboard(load_rules(tmp_path), "shop")
    assert [v["name"] for v in variables(board)] == ["region", "user_city"]
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["GMV (gmv)", "orders (orders)"]

    gmv = _kpi_panels(board, "gmv")
    assert set(gmv) == {"gmv", "gmv alerts", "gmv anomaly band", "gmv anomaly score"}
    band = [t["expr"] for t in gmv["gmv anomaly band"]["targets"]]
    assert band == [f'kpistream_kpi_{m}{{kpi="gmv", region=~"$region", '
                    f'user_city=~"$user_city"}}' for m in ("value", "expected", "lower",
                                                            "upper")]
    assert gmv["gmv"]["fieldConfig"]["defaults"]["unit"] == "prefix:¥"
    assert "value < 10" in gmv["gmv alerts"]["description"]

    orders = _kpi_panels(board, "orders")
    assert set(orders) == {"orders"}, "no anomaly: no band; no alert: no alert panel"
    assert panel_queries(orders["orders"]) == ['kpistream_kpi_value{kpi="orders"}']
    assert orders["orders"]["fieldConfig"]["defaults"]["unit"] == "suffix: orders"


def test_demo_dashboard_has_bands_exactly_for_anomaly_kpis() -> None:
    rules = load_rules(REPO / "rules" / "demo")
    board = BOARDS["kpis-demo.json"]
    for kpi in rules.kpis.values():
        banded = f"{kpi.name} anomaly band" in _kpi_panels(board, kpi.name)
        assert banded == (kpi.anomaly is not None), f"{kpi.name}: {REGENERATE}"


def test_provisioning_points_at_the_dashboards_and_the_datasource_uid() -> None:
    provisioning = REPO / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    [source] = sources["datasources"]
    assert (source["uid"], source["type"], source["url"]) == (
        DATASOURCE_UID, "prometheus", "${PROMETHEUS_URL}")
    providers = yaml.safe_load((provisioning / "dashboards" / "kpistream.yaml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
