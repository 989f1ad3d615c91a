"""The environment variables that steer plugin loading and selection, read in one place.

- ``BITNET_DEVICE``: the default device spec (``device=`` / ``--device`` override it).
- ``BITNET_DISABLE_BACKENDS=vulkan,metal``: never load these plugins.
- ``BITNET_PLUGINS_AUTOLOAD=0`` with ``BITNET_PLUGINS=cpu,cuda``: load only the allow list
  (``reference`` is always loaded: it is the oracle every other backend is checked against).
- ``BITNET_STRICT=1``: any plugin failure is an error instead of a skipped candidate.
- ``BITNET_CACHE_DIR``: where validation and benchmark results are cached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ORACLE = "reference"  # the backend every other backend is validated against
_FALSE = ("0", "false", "no", "off", "")


def _names(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(n.strip().lower() for n in value.split(",") if n.strip())


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() not in _FALSE


@dataclass(frozen=True)
class Settings:
    default_device: str  # "auto" unless BITNET_DEVICE says otherwise
    disabled: frozenset[str]
    autoload: bool
    allowed: frozenset[str]  # only consulted when autoload is off
    strict: bool
    cache_dir: Path

    def plugin_allowed(self, name: str) -> str | None:
        """None when ``name`` may load, else the reason it may not (an env var names it)."""
        name = name.lower()
        if name == ORACLE:
            return None
        if name in self.disabled:
            return "disabled by BITNET_DISABLE_BACKENDS"
        if not self.autoload and name not in self.allowed:
            return "not in BITNET_PLUGINS (BITNET_PLUGINS_AUTOLOAD=0)"
        return None


def default_cache_dir() -> Path:
    import platformdirs  # imported here: only needed once a cache is touched

    return Path(platformdirs.user_cache_dir("bitnet", appauthor=False))


def read_settings() -> Settings:
    """Read the environment now (not at import), so tests and apps can change it."""
    env = os.environ
    cache = env.get("BITNET_CACHE_DIR")
    return Settings(
        default_device=env.get("BITNET_DEVICE", "").strip() or "auto",
        disabled=_names(env.get("BITNET_DISABLE_BACKENDS")),
        autoload=_flag(env.get("BITNET_PLUGINS_AUTOLOAD"), True),
        allowed=_names(env.get("BITNET_PLUGINS")),
        strict=_flag(env.get("BITNET_STRICT"), False),
        cache_dir=Path(cache) if cache else default_cache_dir(),
    )
