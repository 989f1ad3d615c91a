"""Where the parity fixtures are: ``$BITNET_FIXTURES``, else ``shared/fixtures`` beside the
repository (CI clones the repository with ``shared/`` next to it), else beside any parent of the
working directory. ``FIXTURES`` may not exist: tests that need it skip with that reason."""

from __future__ import annotations

import os
from pathlib import Path


def find_fixtures() -> Path:
    env = os.environ.get("BITNET_FIXTURES")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]  # bitnet/testing/fixtures.py -> the checkout
    candidates = [repo.parent / "shared" / "fixtures"]
    cwd = Path.cwd().resolve()
    candidates += [p / "shared" / "fixtures" for p in (cwd, *cwd.parents)]
    for path in candidates:
        if (path / "manifest.json").is_file():
            return path
    return candidates[0]


FIXTURES = find_fixtures()
MODELS = FIXTURES / "models"
