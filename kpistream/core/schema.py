"""The JSON Schema of a rule file, for editors that complete and validate YAML.

Generated from the pydantic models in :mod:`kpistream.core.spec`, so it cannot drift from what
``kpistream check`` accepts (``check`` knows more: references, windows, expressions).

>>> schema = rule_file_schema()
>>> schema["$defs"]["KpiSpec"]["properties"]["lateness"]["default"]
'5s'
"""

from __future__ import annotations

from typing import Any

from kpistream.core.durations import format_duration
from kpistream.core.spec import RuleFileSpec

__all__ = ["rule_file_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def rule_file_schema() -> dict[str, Any]:
    """The schema, with durations written the way rule files write them."""
    schema = RuleFileSpec.model_json_schema(by_alias=True)
    _durations_as_text(schema)
    return {"$schema": DIALECT, "title": "kpistream rule file", **schema}


def _durations_as_text(node: Any) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _durations_as_text(value)
        duration = node.pop("x-duration", None) or any(
            isinstance(o, dict) and o.pop("x-duration", None) for o in node.get("anyOf", ()))
        if duration and isinstance(node.get("default"), int):
            node["default"] = format_duration(node["default"])
    elif isinstance(node, list):
        for value in node:
            _durations_as_text(value)
