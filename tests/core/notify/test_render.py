"""Rendered messages as exact strings, in Chinese and English."""

from __future__ import annotations

import json
from pathlib import Path

from notify_factories import MIN, make_event

from kpistream.core.notify.model import Notification
from kpistream.core.notify.render import grafana_link, render

T0 = 1_704_074_400_000  # 2024-01-01 02:00 UTC, 10:00 in Shanghai
GMV = make_event(kpi_title="GMV 成交额", unit="CNY", since_ms=T0, at_ms=T0 + 12 * MIN,
                 summary="华东区成交额过低")
RECOVERED = make_event(kpi_title="GMV 成交额", unit="CNY", since_ms=T0, at_ms=T0 + 42 * MIN,
                       state="resolved", value=1520.0)
WARN = make_event(alert="visits_low", kpi="visits", severity="warning", labels=(),
                  since_ms=T0, at_ms=T0 + 5 * MIN, value=None, condition="value < 10")


def note(language, *events, repeat=False, created=T0 + 42 * MIN):
    return Notification("id", "sales-ops", (), language, events, created, repeat,
                        "Asia/Shanghai")


def test_single_firing_zh_with_link():
    m = render(note("zh", GMV), grafana_url="https://grafana.example.com")
    link = ("https://grafana.example.com/d/kpistream-kpi-detail/kpi-detail?var-kpi=gmv"
            f"&var-filters=region%7C%3D%7Ceast&from={T0 - 3_600_000}&to={T0 + 22 * MIN}")
    assert m.title == "[kpistream] 🔴 告警 · 严重 · GMV 成交额 (gmv_low)"
    assert m.text == (
        "[kpistream] 🔴 告警 · 严重 · GMV 成交额 (gmv_low)\n"
        "负责人: sales-ops\n\n"
        "🔴 告警 · 严重 · GMV 成交额 (gmv_low)\n"
        "标签: region=east\n"
        "当前值: GMV 成交额 = 812.5 CNY (条件: value < 1000)\n"
        "开始于: 2024-01-01 10:00 (UTC+08:00)，持续 12 分钟\n"
        "摘要: 华东区成交额过低\n"
        f"查看 Grafana 面板: {link}"
    )
    assert m.markdown == (
        "### [kpistream] 🔴 告警 · 严重 · GMV 成交额 (gmv_low)\n"
        "**负责人**: sales-ops\n\n"
        "#### 🔴 告警 · 严重 · GMV 成交额 (gmv_low)\n"
        "- **标签**: region=east\n"
        "- **当前值**: GMV 成交额 = 812.5 CNY (条件: value < 1000)\n"
        "- **开始于**: 2024-01-01 10:00 (UTC+08:00)，持续 12 分钟\n"
        "- **摘要**: 华东区成交额过低\n"
        f"- [查看 Grafana 面板]({link})"
    )


def test_resolved_en_carries_recovery_value_and_breach_length():
    m = render(note("en", RECOVERED))
    assert m.text == (
        "[kpistream] ✅ resolved · critical · GMV 成交额 (gmv_low)\n"
        "Owner: sales-ops\n\n"
        "✅ resolved · critical · GMV 成交额 (gmv_low)\n"
        "Labels: region=east\n"
        "Recovered at: GMV 成交额 = 1520 CNY (condition: value < 1000)\n"
        "Since: 2024-01-01 10:00 (UTC+08:00), for 42 min"
    )


def test_grouped_zh_lists_firing_first_critical_first():
    m = render(note("zh", RECOVERED, WARN, GMV))
    assert m.title == "[kpistream] 2 条告警 / 1 条恢复 · sales-ops"
    headings = [line for line in m.text.splitlines() if line and line[0] in "🔴✅"]
    assert headings == [
        "🔴 告警 · 严重 · GMV 成交额 (gmv_low)",
        "🔴 告警 · 警告 · visits (visits_low)",
        "✅ 恢复 · 严重 · GMV 成交额 (gmv_low)",
    ]
    assert "当前值: visits = 无数据 (条件: value < 10)" in m.text


def test_grouped_en_title():
    assert render(note("en", GMV, WARN)).title == "[kpistream] 2 firing · sales-ops"


def test_repeat_says_still_firing_and_counts_duration_to_now():
    zh = render(note("zh", GMV, repeat=True, created=T0 + 2 * 60 * MIN + 5 * MIN))
    assert zh.title == "[kpistream] 🔴 仍在告警 · 严重 · GMV 成交额 (gmv_low)"
    assert "开始于: 2024-01-01 10:00 (UTC+08:00)，持续 2 小时 5 分钟" in zh.text
    en = render(note("en", GMV, WARN, repeat=True))
    assert en.title == "[kpistream] 2 still firing · sales-ops"
    assert "🔴 still firing · warning · visits (visits_low)" in en.text


def test_the_link_names_the_detail_dashboard_and_its_variables():
    """grafana_link's uid and variables are those of grafana/dashboards/kpi-detail.json."""
    path = Path(__file__).resolve().parents[3] / "grafana" / "dashboards" / "kpi-detail.json"
    dashboard = json.loads(path.read_text())
    variables = {v["name"]: v["type"] for v in dashboard["templating"]["list"]}
    link = grafana_link("https://g", GMV)
    assert link.startswith(f"https://g/d/{dashboard['uid']}/")
    assert variables["kpi"] == "query" and variables["filters"] == "adhoc"
