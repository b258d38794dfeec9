"""``kpistream backtest``'s report: index.html, the stdout summary and ``--compare``."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parents[1] / "data" / "backtest_alerts"
VOID = {"meta", "img", "br", "hr", "link", "input"}


def backtest(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kpistream", "backtest", "--rules", str(SCENARIO / "rules.yaml"),
         "--events", str(SCENARIO / "events.jsonl"), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120)


class Page(HTMLParser):
    """Collects images, alert table rows and the text, and checks that tags nest."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.rows: list[list[str]] = []
        self.in_row = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        if tag == "tr" and ("class", "alert") in attrs:
            self.in_row = True
            self.rows.append([])
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing"
        if tag == "tr":
            self.in_row = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.in_row and data.strip() and self.open[-1] in ("td", "span", "code"):
            self.rows[-1].append(data.strip())


def parse(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = Page()
    page.feed(text)
    page.close()
    assert page.open == []
    return page


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("report")
    return backtest(out), out


def test_stdout_ends_with_one_line_per_alert_and_the_notified_total(run):
    done, out = run
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2:] == [
        "alert low: 2 firing, 2 resolved, first at 2024-01-01T10:02:00Z",
        "alert silent: 1 firing, 1 resolved, first at 2024-01-01T10:05:00Z",
        "alert shadow: 3 firing, 1 resolved, first at 2024-01-01T10:01:00Z, shadow",
        "would have notified: 6 transition(s)",
        f"report: {out}/index.html",
    ]


def test_index_html_has_a_chart_per_series_and_a_row_per_alert(run):
    _, out = run
    page = parse(out / "index.html")
    assert [image["alt"] for image in page.images] == ['n {"r":"x"}', 'n {"r":"y"}']
    assert all(image["src"].startswith("data:image/png;base64,iVBORw0KGgo")
               for image in page.images)
    assert page.rows == [
        ["low", "n", "value < 2 / value < 5", "2", "2", "2024-01-01T10:02:00Z", "4"],
        ["silent", "n", "absent_for: 120s", "1", "1", "2024-01-01T10:05:00Z", "2"],
        ["shadow", "shadow", "n", "value > 5", "3", "1", "2024-01-01T10:01:00Z", "0"],
    ]
    assert "http" not in (out / "index.html").read_text()  # self-contained: nothing fetched
    assert not (out / "compare.txt").exists()


def test_charts_are_capped_per_kpi_and_the_rest_counted(tmp_path):
    (tmp_path / "rules.yaml").write_text(
        "sources: [{name: s, topic: t}]\n"
        "kpis: [{name: n, source: s, agg: count(), by: [r], window: 1m}]\n")
    events = "".join(f'{{"ts": {1704103200000 + i * 1000}, "r": "r{i:02d}"}}\n'
                      for i in range(15))
    (tmp_path / "events.jsonl").write_text(events)
    done = subprocess.run(
        [sys.executable, "-m", "kpistream", "backtest", "--rules", str(tmp_path / "rules.yaml"),
         "--events", str(tmp_path / "events.jsonl"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = parse(tmp_path / "out" / "index.html")
    assert len(page.images) == 12
    assert page.images[0]["alt"] == 'n {"r":"r00"}'
    assert "15 series; charting the 12 with the most alert transitions, 3 left out" in page.text


def test_no_report_skips_index_html(tmp_path):
    (tmp_path / "index.html").write_text("stale")
    done = backtest(tmp_path, "--no-report")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "index.html").exists()
    assert done.stdout.splitlines()[-1] == "would have notified: 6 transition(s)"


def test_compare_lists_what_a_threshold_edit_adds_and_removes(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    rules = (SCENARIO / "rules.yaml").read_text()
    assert "when: value > 5, notify" in rules
    (old / "rules.yaml").write_text(rules.replace("when: value > 5", "when: value > 2"))
    done = backtest(tmp_path / "out", "--compare", str(old))
    assert done.returncode == 0, done.stderr
    expected = [
        '+ shadow {"r":"x"} resolved (warning) 2024-01-01T10:02:00Z',
        '- shadow {"r":"x"} resolved (warning) 2024-01-01T10:03:00Z',
    ]
    lines = done.stdout.splitlines()
    start = lines.index(f"compared with {old}: 1 transition(s) added, 1 removed")
    assert lines[start + 1:start + 3] == expected
    assert (tmp_path / "out" / "compare.txt").read_text().splitlines() == expected
    page = parse(tmp_path / "out" / "index.html")
    assert "\n".join(expected) in "".join(page.text)


def test_compare_with_the_same_rules_changes_nothing(tmp_path):
    done = backtest(tmp_path, "--compare", str(SCENARIO / "rules.yaml"))
    assert done.returncode == 0, done.stderr
    assert f"compared with {SCENARIO / 'rules.yaml'}: 0 transition(s) added, 0 removed" \
        in done.stdout
    assert (tmp_path / "compare.txt").read_text() == ""


@pytest.mark.parametrize("broken", ["missing", "bad"])
def test_old_rules_that_do_not_load_exit_1_with_a_message(tmp_path, broken):
    old = tmp_path / "old"
    if broken == "bad":
        old.mkdir()
        (old / "rules.yaml").write_text("alerts:\n  - {name: y, kpi: z, when: 'value > 1'}\n")
    done = backtest(tmp_path / "out", "--compare", str(old))
    assert done.returncode == 1
    assert done.stderr.startswith(f"kpistream: --compare {old}: the old rules do not load:\n")
    message = ("no such file or directory" if broken == "missing"
               else 'alert "y": unknown kpi "z"')
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing replayed


def test_compare_shows_a_severity_change(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    rules = (SCENARIO / "rules.yaml").read_text()
    (old / "rules.yaml").write_text(rules.replace(
        "{name: silent, kpi: n, absent_for: 2m, severity: critical}",
        "{name: silent, kpi: n, absent_for: 2m, severity: info}"))
    done = backtest(tmp_path / "out", "--compare", str(old))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "compare.txt").read_text().splitlines() == [
        '+ silent {"r":"x"} firing (critical) 2024-01-01T10:05:00Z',
        '+ silent {"r":"x"} resolved (critical) 2024-01-01T10:06:00Z',
        '- silent {"r":"x"} firing (info) 2024-01-01T10:05:00Z',
        '- silent {"r":"x"} resolved (info) 2024-01-01T10:06:00Z',
    ]
