"""Rule loading: the contract's example loads; every bad file gets exact, positioned problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpistream.core.loader import load_rules, load_rules_text
from kpistream.errors import RuleError

DATA = Path(__file__).parents[1] / "data"
SOURCE = "sources: [{name: orders, topic: t}]\n"


def problems(text: str) -> list[str]:
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    return [str(p) for p in e.value.problems]


def test_contract_example_is_checked_as_written(tmp_path):
    # the contract's example reads a source "visits" it never defines
    with pytest.raises(RuleError) as e:
        load_rules(DATA / "contract_example.yaml")
    assert [str(p).split("/")[-1] for p in e.value.problems] == [
        'contract_example.yaml:27:13: kpi "visits": unknown source "visits"; define it under '
        'sources']
    fixed = tmp_path / "rules.yaml"
    fixed.write_text((DATA / "contract_example.yaml").read_text().replace(
        "kpis:", "  - {name: visits, topic: shop.visits}\n\nkpis:"))
    rules = load_rules(fixed)
    assert list(rules.kpis)[-1] == "conversion"
    assert rules.kpis["conversion"].inputs == ("paid_orders", "visits")
    assert rules.kpis["gmv"].labels == ("region",)
    assert rules.timezone == "Asia/Shanghai"
    assert rules.alerts[0].for_ms == 180_000


@pytest.mark.parametrize(("text", "expected"), [
    (SOURCE + "kpis:\n  - {name: gmv, source: orders, agg: summ(amount), window: 1m}\n",
     ['r.yaml:3:38: kpi "gmv": unknown aggregation "summ"; expected one of count, sum, avg, '
      'min, max, count_distinct, quantile (did you mean "sum"?)']),
    (SOURCE + "kpis:\n  - name: gmv\n    source: orders\n    agg: count()\n    windw: 1m\n",
     ['r.yaml:3:5: kpi "gmv": missing required key "window"',
      'r.yaml:6:5: kpi "gmv": unknown key "windw"; expected one of name, title, description, '
      'source, where, agg, expr, by, window, hop, lateness, series_ttl, max_series, unit, '
      'owner, definition, version, parent, targets, anomaly (did you mean "window"?)']),
    (SOURCE + "kpis:\n  - {name: gmv, source: orders, agg: count(), window: 5 minutes}\n",
     ['r.yaml:3:55: kpi "gmv": window: invalid duration "5 minutes"; expected a number and a '
      "unit such as 30s, 1m, 1h30m, 1d (units: ms, s, m, h, d, w)"]),
    (SOURCE + "kpis:\n  - {name: gmv, source: order, agg: count(), window: 1m}\n",
     ['r.yaml:3:25: kpi "gmv": unknown source "order"; define it under sources '
      '(did you mean "orders"?)']),
    (SOURCE + "kpis:\n  - name: gmv\n    source: orders\n    agg: count()\n    window: 1m\n"
     "    where: status == and amount > 0\n",
     ['r.yaml:7:22: kpi "gmv": where: unexpected "and"; expected a value']),
    (SOURCE + "kpis:\n  - {name: Gmv, source: orders, agg: count(), window: 1m}\n",
     ['r.yaml:3:12: kpi "Gmv": invalid name "Gmv"; expected lowercase letters, digits and _ '
      "starting with a letter (e.g. gmv_total)"]),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), window: 1m}\n"
     "  - {name: a, source: orders, agg: count(), window: 1m}\n",
     ['r.yaml:4:12: kpi "a": duplicate kpi name "a", first defined at r.yaml:3; names are '
      "unique across files"]),
    (SOURCE + "kpis:\n  - {name: a, expr: b + 1, window: 1m}\n  - {name: b, expr: a * 2, "
     "window: 1m}\n",
     ['r.yaml:3:21: kpi "a": derived KPIs form a cycle: a -> b -> a']),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), window: 1m}\n"
     "  - {name: r, expr: a / 2, window: 5m}\n",
     ['r.yaml:4:36: kpi "r": window differs from input "a"; a derived KPI has the same window '
      "and hop as its inputs"]),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), by: [r], window: 1m}\n"
     "  - {name: t, source: orders, agg: count(), window: 1m}\n"
     "  - {name: s, expr: t / t, by: [r], window: 1m}\n  - {name: u, expr: a / t, window: 1m}\n",
     ['r.yaml:5:5: kpi "s": no input has every dimension of by [\'r\']; a derived KPI\'s series '
      "are those of an input with all of them",
      'r.yaml:6:5: kpi "u": input "a" has dimensions [\'r\'] beyond by []; a derived KPI\'s '
      "inputs have its dimensions or fewer (a total beside its parts)"]),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), window: 1m}\n"
     "alerts:\n  - {name: x, kpi: a, when: valu < 3}\n",
     ['r.yaml:5:29: alert "x": when: unknown name "valu"; expected one of value '
      '(did you mean "value"?)']),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), by: [user.id, kpi], "
     "window: 1m}\n",
     ['r.yaml:3:59: kpi "a": dimension "kpi" cannot be a Prometheus label; use letters, '
      "digits and _ (not starting with __), and none of kpi, alert, severity, period"]),
    ("timezone: Mars/Olympus\n" + SOURCE,
     ['r.yaml:1:11: unknown timezone "Mars/Olympus"; expected an IANA name such as '
      "Asia/Shanghai or UTC"]),
    ("kpis: [unclosed\n",
     ["r.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"]),
    ("- just\n- a list\n", ["r.yaml:1:1: expected a mapping with keys timezone, sources, kpis, "
                            "alerts, owners"]),
])
def test_bad_rules_report_exact_positioned_problems(text, expected):
    assert problems(text) == expected


def test_every_problem_is_reported_not_just_the_first():
    text = (SOURCE + "kpis:\n  - {name: a, source: nope, agg: count(), window: 1m}\n"
            "  - {name: b, source: orders, agg: mean(x), window: 1m}\n"
            "alerts:\n  - {name: c, kpi: zzz, when: value > 1, severity: huge}\n")
    found = problems(text)
    # the alert with an invalid severity is set aside whole, so its kpi is not looked up
    assert [p.split(": ", 1)[0] for p in found] == ["r.yaml:3:23", "r.yaml:4:36", "r.yaml:6:52"]


def test_field_read_with_two_types_is_a_problem():
    text = (SOURCE + "kpis:\n  - {name: a, source: orders, agg: sum(x), window: 1m}\n"
            "  - {name: b, source: orders, agg: count(), where: 'x == \"y\"', window: 1m}\n")
    assert problems(text) == ['r.yaml:4:5: kpi "b": reads field "x" as string, but another KPI '
                              'of source "orders" reads it as number']


def test_missing_directory_and_empty_directory(tmp_path):
    with pytest.raises(RuleError, match="no such file or directory"):
        load_rules(tmp_path / "nope")
    with pytest.raises(RuleError, match=r"no rule files \(\*.yaml, \*.yml\) found here"):
        load_rules(tmp_path)


# --- bad input found by fuzzing (tests/core/test_loader_fuzz.py) and size limits -------------

BOMB = "".join(
    [f"a0: &a0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)]
    + ["kpis: *a9\n"])


@pytest.mark.parametrize(("text", "expected"), [
    # a billion laughs: 10 lines expanding to 9**10 values are refused at the alias that blows up
    (BOMB, ["r.yaml:5:5: file expands to more than 100000 values (YAML aliases?); rule files "
            "need far fewer: copy the values you reuse, or split the file"]),
    ("kpis: [" + "1, " * 100_000 + "]\n",
     ["r.yaml:1:1: file expands to more than 100000 values (YAML aliases?); rule files need far "
      "fewer: copy the values you reuse, or split the file"]),
    ("kpis: [" + "x, " * 1_500_000 + "]\n", ["r.yaml:1:1: file is larger than 4 MiB; split it"]),
    ("kpis: " + "[" * 60 + "]" * 60 + "\n",
     ["r.yaml:1:1: nested too deeply; rule files need at most 50 levels of maps and lists"]),
    ("kpis: " + "[" * 1000 + "]" * 1000 + "\n",
     ["r.yaml:1:1: invalid YAML: nested too deeply; rule files need at most 50 levels of maps "
      "and lists"]),
    # used to crash: TypeError on a lone surrogate while hashing the text
    ("kpis: ['a\ud800']\n",
     ["r.yaml:1:10: invalid YAML: character U+D800 is not allowed in YAML text; remove it"]),
    ("a: 1\nkpis: [\x07]\n",
     ["r.yaml:2:8: invalid YAML: character U+0007 is not allowed in YAML text; remove it"]),
    # used to crash: keys merged in with << have no position in the map that merges them
    ("kpis:\n  - <<: {name: A, windw: 1}\n",
     ['r.yaml:2:5: kpi "A": missing required key "window"',
      'r.yaml:2:16: kpi "A": invalid name "A"; expected lowercase letters, digits and _ '
      "starting with a letter (e.g. gmv_total)",
      'r.yaml:2:19: kpi "A": unknown key "windw"; expected one of name, title, description, '
      "source, where, agg, expr, by, window, hop, lateness, series_ttl, max_series, unit, "
      'owner, definition, version, parent, targets, anomaly (did you mean "window"?)']),
    (SOURCE + "kpis:\n  - {name: a, window: 1m, source: orders, <<: [{agg: 1}]}\n",
     ['r.yaml:3:54: kpi "a": agg: input should be a valid string, got 1']),
])
def test_bad_input_is_refused_with_exact_positioned_problems(text, expected):
    assert problems(text) == expected


def test_load_rules_refuses_a_large_file_before_reading_it(tmp_path):
    (tmp_path / "big.yaml").write_text("# padding\n" * 500_000)
    with pytest.raises(RuleError) as e:
        load_rules(tmp_path)
    assert [p.message for p in e.value.problems] == ["file is larger than 4 MiB; split it"]


@pytest.mark.parametrize("name", [".pre-commit-hooks.yaml", ".pre-commit-config.yaml"])
def test_pre_commit_files_define_check_and_test_hooks(name):
    from ruamel.yaml import YAML

    doc = YAML(typ="safe").load((DATA.parents[1] / name).read_text(encoding="utf-8"))
    hooks = doc if name == ".pre-commit-hooks.yaml" else doc["repos"][0]["hooks"]
    assert [(h["id"], h["entry"], h["pass_filenames"], h["args"]) for h in hooks] == [
        ("kpistream-check", "kpistream check", False, ["rules/"]),
        ("kpistream-test", "kpistream test", False, ["rules/"]),
    ]


def test_hidden_folders_are_skipped_as_in_a_configmap_volume(tmp_path):
    """Kubernetes mounts a ConfigMap as symlinks into a hidden ``..data`` copy."""
    data = tmp_path / "..2026_11_23_10_00_00.1"
    data.mkdir()
    (data / "r.yaml").write_text(SOURCE)
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "r.yaml").symlink_to("..data/r.yaml")
    assert load_rules(tmp_path).sources.keys() == {"orders"}
