"""Session-wide tiny checkpoints (tests/convert/checkpoints.py), each built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """family name -> Built, built on first use."""
    from tests.convert.checkpoints import BUILDERS

    root: Path = tmp_path_factory.mktemp("checkpoints")
    built: dict = {}

    def get(name: str):
        if name not in built:
            built[name] = BUILDERS[name](root)
        return built[name]
    return get
