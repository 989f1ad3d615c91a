"""Suite-wide test settings: hermetic registry state.

- Validation/benchmark results go to a per-session temporary cache, never the user's cache.
- Installed backend plugins are not loaded unless asked for (docs/design.md section 7, rule 16): the
  default is BITNET_PLUGINS_AUTOLOAD=0 with the allow list BITNET_PLUGINS=cpu (the reference always
  loads), so core tests run on reference and, when it is installed, the native CPU plugin. The GPU
  plugins (slow to validate under PoCL/lavapipe) run in their own suites; a core test that needs one
  sets BITNET_PLUGINS (monkeypatch.setenv). Values already set in the environment win, so
  ``BITNET_PLUGINS_AUTOLOAD=1 BITNET_DEVICE=cpu pytest tests`` runs the core tests on the cpu
  plugin.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_SESSION_CACHE = tempfile.mkdtemp(prefix="bitnet-test-cache-")
os.environ.setdefault("BITNET_CACHE_DIR", _SESSION_CACHE)
os.environ.setdefault("BITNET_PLUGINS_AUTOLOAD", "0")
os.environ.setdefault("BITNET_PLUGINS", "cpu")
for _name in ("BITNET_STRICT", "BITNET_DISABLE_BACKENDS"):
    os.environ.pop(_name, None)  # a developer's shell settings must not change test outcomes


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
