"""The llama.cpp cross-checks' shared model folder, and their per-model figures at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.crosscheck import summary


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Where the cross-checks write their random GGUF files (once per session)."""
    return tmp_path_factory.mktemp("crosscheck-models")


def pytest_terminal_summary(terminalreporter) -> None:
    rows = summary.lines()
    if not rows:
        return
    terminalreporter.section("llama.cpp cross-check (per model, backend, flash attention)")
    for line in rows:
        terminalreporter.write_line(line)
    path = os.environ.get("BITNET_CROSSCHECK_REPORT")
    if path:
        summary.write_json(path)
        terminalreporter.write_line(f"figures written to {path}")
