"""Fuzzing the rule loader: any text, and mutated real rule files, give a RuleSet or a
RuleError of positioned problems, never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpistream.core.loader import load_rules_text
from kpistream.core.ruleset import RuleSet
from kpistream.errors import RuleError

# YAML allows an anchor to be reused (the later one wins); ruamel warns, loading still works
pytestmark = pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")

ROOT = Path(__file__).parents[2]
SEEDS = sorted(
    [p for p in (ROOT / "rules" / "demo").glob("*.yaml") if not p.name.endswith(".test.yaml")]
    + list((ROOT / "tests" / "data").glob("*/rules.yaml")),
)
TEXTS = [p.read_text(encoding="utf-8") for p in SEEDS]


def fuzz(examples: int) -> settings:
    """Tuned so the whole file runs in a few seconds (raise locally to hunt for crashes)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Replacements for a scalar: other types, garbage, YAML syntax fragments.
ODD_VALUES = ["", "~", "null", "1", "-1", "0", "1e309", "3.5", "true", "[]", "{}", "[a, b]",
              "{a: 1}", "'", '"', "*nope", "&a x", "*a", "{<<: *a}", "!!binary aGk=",
              "!!set {a}", "!tag x",
              "2024-01-01", "2024-06-15T12:00:00Z", "1m", "0s", "-1m", "99999999999999d",
              "value >", "(", "a /", "count(", "sum(amount", "quantile(x, 2)", "é", "\t",
              "|\n  block", ">-", "? k", "- item", "x: y: z", "%", "@", "`", "1_000",
              "0x1F", ".inf", ".nan", "NaN", "${X}", "a" * 300]
UNKNOWN_KEYS = ["extra", "windw", "name", "kpis", "alerts", "<<", "1", "null", "? q", "'k'"]


def check(text: str) -> None:
    try:
        result = load_rules_text(text, "r.yaml")
    except RuleError as e:
        assert e.problems, "a RuleError without problems"
        for p in e.problems:
            assert p.line >= 1 and p.col >= 1, str(p)
            assert isinstance(p.message, str) and p.message.strip(), repr(p)
        return
    assert isinstance(result, RuleSet)


@st.composite
def mutated(draw) -> str:
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent",
                                     "scalar", "key", "truncate", "garbage"]))
        line = lines[i]
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + line
        elif kind == "dedent":
            lines[i] = line[draw(st.integers(1, 4)):]
        elif kind == "scalar" and ":" in line:
            head = line.split(":", 1)[0]
            lines[i] = f"{head}: {draw(st.sampled_from(ODD_VALUES) | st.text(max_size=12))}"
        elif kind == "key":
            indent = len(line) - len(line.lstrip(" -"))
            key = draw(st.sampled_from(UNKNOWN_KEYS))
            lines.insert(i + 1, " " * indent + f"{key}: {draw(st.sampled_from(ODD_VALUES))}")
        elif kind == "truncate":
            text = "\n".join(lines)
            return text[: draw(st.integers(0, len(text)))]
        elif kind == "garbage":
            lines[i] = line[: draw(st.integers(0, len(line)))] + draw(st.text(max_size=8))
    return "\n".join(lines) + "\n"


@fuzz(300)
@given(st.text(max_size=300))
def test_any_text_gives_ruleset_or_positioned_problems(text):
    check(text)


YAMLISH = st.text(alphabet=st.sampled_from(list(":-[]{},&*!?|>'\"#%@ \n\tkpis alerts name")),
                  max_size=120)


@fuzz(300)
@given(YAMLISH)
def test_yaml_punctuation_gives_ruleset_or_positioned_problems(text):
    check(text)


@fuzz(600)
@given(mutated())
def test_mutated_rule_files_give_ruleset_or_positioned_problems(text):
    check(text)


def test_unmutated_seeds_load_or_fail_cleanly():
    assert len(SEEDS) >= 5
    for text in TEXTS:
        check(text)
