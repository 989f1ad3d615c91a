"""Prints the llama.cpp cross-check's per-model figures at the end of the session."""

from __future__ import annotations

import os

from tests.crosscheck import summary


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
