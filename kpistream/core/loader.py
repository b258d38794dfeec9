"""Load rule files into a :class:`~kpistream.core.ruleset.RuleSet`, reporting every problem.

Each problem carries ``path:line:col``: files are read with ruamel.yaml, which keeps every
node's position, and pydantic's error locations are walked back to those nodes.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.yaml").write_text("kpis:\\n  - name: gmv\\n    windw: 1m\\n")
>>> try:
...     load_rules(d)
... except RuleError as e:
...     print(str(e).replace(str(d), "DIR"))
DIR/a.yaml:2:5: kpi "gmv": missing required key "window"
DIR/a.yaml:3:5: kpi "gmv": unknown key "windw"; expected one of name, title, description,
    source, where, agg, expr, by, window, hop, lateness, series_ttl, unit, owner
    (did you mean "window"?)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError

from kpistream.core.compile import compile_rules
from kpistream.core.documents import SECTIONS, Loc, RuleDocument
from kpistream.core.hints import did_you_mean
from kpistream.core.ruleset import RuleSet
from kpistream.core.spec import RuleFileSpec
from kpistream.errors import Problem, RuleError

__all__ = ["is_test_file", "load_rules", "load_rules_text", "rule_files"]

MAX_FILE_BYTES = 4 * 1024 * 1024


def rule_files(root: str | Path) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` file under ``root`` (or ``root`` itself), sorted; rule unit
    tests (``*.test.yaml``, see :mod:`kpistream.core.ruletests`) are not rule files."""
    path = Path(root)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                  and not is_test_file(p))


def is_test_file(path: Path) -> bool:
    """``*.test.yaml`` / ``*.test.yml``: rule unit tests for ``kpistream test``."""
    return path.name.endswith((".test.yaml", ".test.yml"))


def load_rules(root: str | Path) -> RuleSet:
    """Load, validate and compile every rule file under ``root``; raise ``RuleError``."""
    if not Path(root).exists():
        raise RuleError([Problem(str(root), 1, 1, "no such file or directory")])
    files = rule_files(root)
    if not files:
        raise RuleError([Problem(str(root), 1, 1, "no rule files (*.yaml, *.yml) found here")])
    problems: list[Problem] = []
    texts = {str(path): _read(path, problems) for path in files}
    return _load({p: t for p, t in texts.items() if t is not None}, problems)


def load_rules_text(text: str, path: str = "rules.yaml") -> RuleSet:
    """Load one rule file given as text (tests, ``kpistream test``, doctests)."""
    return _load({path: text}, [])


def _load(texts: dict[str, str], problems: list[Problem]) -> RuleSet:
    digest = hashlib.sha256()
    docs: list[RuleDocument] = []
    for path, text in texts.items():
        digest.update(f"{path}\0{text}\0".encode())
        doc = _parse(path, text, problems)
        if doc is not None:
            docs.append(doc)
    ruleset = compile_rules(docs, problems, digest.hexdigest(), tuple(texts))
    if problems:
        raise RuleError(problems)
    return ruleset


def _read(path: Path, problems: list[Problem]) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(Problem(str(path), 1, 1, f"file is larger than "
                                    f"{MAX_FILE_BYTES // 1024 // 1024} MiB; split it"))
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), 1, 1, f"cannot read file: {e}"))
        return None


def _parse(path: str, text: str, problems: list[Problem]) -> RuleDocument | None:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(path, line, col, f"invalid YAML: {e.problem or e.context}"))
        return None
    except Exception as e:  # ruamel raises a few unmarked errors (e.g. duplicate keys)
        problems.append(Problem(path, 1, 1, f"invalid YAML: {e}"))
        return None
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, CommentedMap):
        problems.append(Problem(path, 1, 1, "expected a mapping with keys timezone, sources, "
                                "kpis, alerts, owners"))
        return None
    try:
        spec = RuleFileSpec.model_validate(_plain(tree))
    except ValidationError as e:
        doc = RuleDocument(path, tree, RuleFileSpec())
        problems.extend(_pydantic_problem(doc, err) for err in e.errors())
        spec = _salvage(tree, problems)
    return RuleDocument(path, tree, spec)


def _salvage(tree: CommentedMap, problems: list[Problem]) -> RuleFileSpec:
    """Keep the valid items of a file with invalid ones, so cross-file checks still run."""
    kept: dict[str, Any] = {}
    for section, (_, model) in SECTIONS.items():
        items = tree.get(section)
        if isinstance(items, list):
            kept[section] = [_valid_or_none(model, i) for i in items]
            kept[section] = [i for i in kept[section] if i is not None]
    tz = tree.get("timezone")
    return RuleFileSpec(timezone=tz if isinstance(tz, str) else None, **kept)


def _valid_or_none(model: type[BaseModel], item: Any) -> BaseModel | None:
    try:
        return model.model_validate(_plain(item))
    except ValidationError:
        return None


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def _pydantic_problem(doc: RuleDocument, err: Any) -> Problem:
    loc: Loc = tuple(err["loc"])
    kind, field = err["type"], str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return doc.at(loc, f'unknown key "{field}"; expected one of {", ".join(allowed)}'
                      f"{did_you_mean(field, allowed)}", key=True)
    if kind == "missing":
        return doc.at(loc[:-1], f'missing required key "{field}"')
    if kind == "string_pattern_mismatch":
        return doc.at(loc, f'invalid {field} "{err["input"]}"; expected lowercase letters, '
                      "digits and _ starting with a letter (e.g. gmv_total)")
    if kind == "value_error":
        return doc.at(loc, f"{field}: {err['msg'].removeprefix('Value error, ')}")
    if kind == "literal_error":
        expected = err["ctx"]["expected"].replace("'", "")
        return doc.at(loc, f'{field}: expected one of {expected}, got "{err["input"]}"')
    return doc.at(loc, f"{field}: {err['msg'].lower()}, got {err['input']!r}")


def _allowed_keys(loc: Loc) -> list[str]:
    model: type[BaseModel] = SECTIONS[str(loc[0])][1] if loc else RuleFileSpec
    return [f.alias or name for name, f in model.model_fields.items()]
