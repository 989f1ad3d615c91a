"""CLI tests see only the reference backend (deterministic output, no plugin validation)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def reference_only(monkeypatch, tmp_path):
    monkeypatch.setenv("BITNET_PLUGINS_AUTOLOAD", "0")
    monkeypatch.setenv("BITNET_PLUGINS", "")
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BITNET_DEVICE", raising=False)
