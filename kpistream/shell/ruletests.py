"""``kpistream test DIR``: find the ``*.test.yaml`` files under DIR and run them against DIR's
rules (see :mod:`kpistream.core.ruletests` for the format)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from kpistream.core.loader import is_test_file, load_rules
from kpistream.core.ruletests import EventsFile, RuleTest, RuleTestFile, run_test
from kpistream.errors import EventError

__all__ = ["run_test_files"]


def run_test_files(directory: Path) -> int:
    """Run every test; print PASS/FAIL lines with the differences; 0 when all pass."""
    files = sorted(p for p in directory.rglob("*") if is_test_file(p)) if directory.is_dir() \
        else []
    if not files:
        raise EventError(f"{directory}: no rule tests (*.test.yaml) found")
    rules = load_rules(directory)
    passed = failed = 0
    for path in files:
        for test in _load(path).tests:
            result = run_test(rules, _with_files_read(test, path.parent))
            print(f"{'PASS' if result.passed else 'FAIL'} {path}: {result.name}")
            for failure in result.failures:
                print(f"    {failure}")
            passed, failed = passed + result.passed, failed + (not result.passed)
    print(f"{passed} passed, {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 1


def _load(path: Path) -> RuleTestFile:
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        return RuleTestFile.model_validate(data)
    except (OSError, YAMLError) as e:
        raise EventError(f"{path}: cannot read rule tests: {e}") from e
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                             for err in e.errors())
        raise EventError(f"{path}: invalid rule tests: {problems}") from e


def _with_files_read(test: RuleTest, base: Path) -> RuleTest:
    """Replace ``{file: x.jsonl}`` event lists by the events they hold."""
    events = {}
    for source, batch in test.events.items():
        if isinstance(batch, EventsFile):
            path = base / batch.file
            try:
                lines = path.read_bytes().splitlines()
                batch = [orjson.loads(line) for line in lines if line.strip()]
            except (OSError, orjson.JSONDecodeError) as e:
                raise EventError(f"{path}: cannot read the events of test "
                                 f'"{test.name}": {e}') from e
        events[source] = batch
    return test.model_copy(update={"events": events})
