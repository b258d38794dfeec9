"""The rule-file JSON Schema: current, and it accepts the repository's rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).parents[2]
SCHEMA = ROOT / "rules" / "kpistream.schema.json"


def test_the_committed_schema_is_current():
    done = subprocess.run([sys.executable, "-m", "kpistream", "schema"], capture_output=True,
                          check=True, timeout=60)
    assert orjson.loads(done.stdout) == orjson.loads(SCHEMA.read_bytes()), \
        "run: kpistream schema --out rules/kpistream.schema.json"


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "rules").rglob("*.yaml")
                                         if not p.name.endswith(".test.yaml")), ids=str)
def test_repository_rules_validate(path):
    jsonschema.validate(YAML(typ="safe").load(path.read_text()), orjson.loads(SCHEMA.read_bytes()))


def test_the_schema_rejects_what_check_rejects():
    schema = orjson.loads(SCHEMA.read_bytes())
    with pytest.raises(jsonschema.ValidationError, match="'windw' was unexpected"):
        jsonschema.validate({"kpis": [{"name": "a", "window": "1m", "windw": "1m"}]}, schema)
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.validate({"kpis": [{"name": "a", "window": "5 minutes"}]}, schema)
