"""Reading Grafana dashboards in tests: their queries, variables and Grafana's built-ins.

>>> board = {"panels": [{"id": 1, "type": "row", "panels": [
...     {"id": 2, "targets": [{"expr": "rate(x[$__rate_interval])"}]}]}],
...     "templating": {"list": [{"name": "kpi", "type": "query",
...                              "query": "label_values(kpistream_kpi_value, kpi)"}]},
...     "annotations": {"list": [{"expr": 'up{kpi="$kpi"}'}]}}
>>> [p["id"] for p in all_panels(board)], queries(board)
([1, 2], ['rate(x[$__rate_interval])', 'up{kpi="$kpi"}'])
>>> sorted(referenced_variables("sum(x{a=~\\"$region\\", b=\\"${channel}\\"}[$__range])"))
['__range', 'channel', 'region']
>>> substitute('x{kpi="$kpi"}[$__rate_interval]', {"kpi": "gmv"})
'x{kpi="gmv"}[1m]'
>>> parse_label_values("label_values(kpistream_kpi_value, region)")
('kpistream_kpi_value', 'region')
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "grafana" / "dashboards"
#: Grafana's built-in variables as Grafana would fill them for these dashboards: the data
#: source's scrape interval is 15s, so $__rate_interval is 4 x 15s; the default range is 1h
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
            "__range_s": "3600", "__interval_ms": "15000"}
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)$")

Json = dict[str, Any]


def load_dashboards() -> dict[str, Json]:
    """The checked-in dashboards, by file name."""
    return {p.name: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(DASHBOARDS.glob("*.json"))}


def all_panels(board: Json) -> Iterator[Json]:
    """Every panel, rows' nested panels included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(panel: Json) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if t.get("expr")]


def annotation_queries(board: Json) -> list[str]:
    return [a["expr"] for a in board.get("annotations", {}).get("list", []) if a.get("expr")]


def queries(board: Json) -> list[str]:
    """Every PromQL expression of the dashboard's panels and annotations."""
    found = [q for panel in all_panels(board) for q in panel_queries(panel)]
    return found + annotation_queries(board)


def variables(board: Json) -> list[Json]:
    return board.get("templating", {}).get("list", [])


def referenced_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with dashboard variables and Grafana's built-ins replaced."""
    merged = {**BUILTINS, **values}

    def one(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return merged[name]

    return _VARIABLE.sub(one, text)


def parse_label_values(query: str) -> tuple[str | None, str]:
    """(selector or None, label) of a ``label_values(...)`` variable query."""
    match = _LABEL_VALUES.match(query.strip())
    assert match, f"not a label_values() query: {query}"
    return match.group(1), match.group(2)
