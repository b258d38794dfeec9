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
    source, where, agg, expr, by, window, hop, lateness, series_ttl, max_series, unit, owner,
    definition, version, parent, targets, anomaly (did you mean "window"?)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from kpistream.core.compile import compile_rules
from kpistream.core.documents import SECTIONS, Loc, RuleDocument
from kpistream.core.hints import did_you_mean
from kpistream.core.ruleset import RuleSet
from kpistream.core.spec import RuleFileSpec
from kpistream.errors import Problem, RuleError

__all__ = ["is_test_file", "load_rules", "load_rules_text", "rule_files"]

MAX_FILE_BYTES = 4 * 1024 * 1024
#: Keys and values a file may hold once YAML aliases are expanded (a billion-laughs guard).
MAX_VALUES = 100_000
#: Nesting of maps and lists; rule files need a handful of levels.
MAX_DEPTH = 50


def rule_files(root: str | Path) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` file under ``root`` (or ``root`` itself), sorted; rule unit
    tests (``*.test.yaml``, see :mod:`kpistream.core.ruletests`) are not rule files, and
    hidden files and folders are skipped (a Kubernetes ConfigMap volume keeps a second copy
    of every file under ``..data`` and ``..2026_11_23_...``)."""
    path = Path(root)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                  and not is_test_file(p)
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


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
        digest.update(f"{path}\0{text}\0".encode("utf-8", "surrogatepass"))
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
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        problems.append(Problem(path, 1, 1, f"file is larger than "
                                f"{MAX_FILE_BYTES // 1024 // 1024} MiB; split it"))
        return None
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except RecursionError:
        problems.append(Problem(path, 1, 1, "invalid YAML: nested too deeply; rule files need "
                                f"at most {MAX_DEPTH} levels of maps and lists"))
        return None
    except ReaderError as e:
        at = text.count("\n", 0, e.position) + 1, e.position - text.rfind("\n", 0, e.position)
        char = e.character if isinstance(e.character, str) else chr(e.character)
        problems.append(Problem(path, *at, f"invalid YAML: character U+{ord(char):04X} is not "
                                "allowed in YAML text; remove it"))
        return None
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
    too_big = _over_budget(path, tree)
    if too_big is not None:
        problems.append(too_big)
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


class _OverBudget(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _over_budget(path: str, tree: CommentedMap) -> Problem | None:
    """A problem when ``tree`` nests too deeply, refers to itself, or expands (aliases
    copied out, as :func:`_plain` does) to more than ``MAX_VALUES`` keys and values; it is
    placed at the outermost alias being expanded, else at 1:1.

    Aliases are shared references in ruamel's tree, so a few lines can stand for billions of
    values; the walk stops at the budget instead of expanding them.
    """
    count = 0
    seen: set[int] = set()
    alias_at: list[tuple[int, int]] = []  # positions of the aliases on the current path

    def walk(node: Any, depth: int, ancestors: tuple[int, ...]) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise _OverBudget(f"file expands to more than {MAX_VALUES} values (YAML aliases?); "
                              "rule files need far fewer: copy the values you reuse, or split "
                              "the file")
        if not isinstance(node, dict | list):
            return
        if id(node) in ancestors:
            raise _OverBudget("a YAML alias refers to a map or list that contains it; rule "
                              "files cannot be recursive")
        if depth > MAX_DEPTH:
            raise _OverBudget(f"nested too deeply; rule files need at most {MAX_DEPTH} levels "
                              "of maps and lists")
        seen.add(id(node))
        inside = (*ancestors, id(node))
        steps = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for i, (step, child) in enumerate(steps):
            alias = isinstance(child, dict | list) and id(child) in seen
            if alias:
                alias_at.append(_child_position(node, step, i))
            if isinstance(node, dict):
                walk(step, depth + 1, inside)
            walk(child, depth + 1, inside)
            if alias:
                alias_at.pop()

    try:
        walk(tree, 0, ())
    except _OverBudget as e:
        line, col = alias_at[0] if alias_at else (1, 1)
        return Problem(path, line, col, e.message)
    return None


def _child_position(node: Any, step: Any, index: int) -> tuple[int, int]:
    """1-based position of ``node[step]`` in the file, else (1, 1)."""
    try:
        if isinstance(node, CommentedMap):
            line, col = node.lc.value(step)
        else:
            line, col = node.lc.item(index)
        return line + 1, col + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return 1, 1


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
