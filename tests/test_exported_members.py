"""Each package's curated surface (``__all__``) names what it exports, and only that."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["kpistream.core", "kpistream.core.notify", "kpistream.core.expr",
            "kpistream.shell.delivery", "kpistream.errors"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_public_names_are_listed(name):
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert exported, name
    assert all(hasattr(module, n) for n in exported), exported - set(dir(module))
    public = {n for n, v in vars(module).items() if not n.startswith("_")
              and getattr(v, "__module__", "").startswith("kpistream")
              and not isinstance(v, type(importlib))}
    assert public <= exported | {"annotations"}, public - exported
