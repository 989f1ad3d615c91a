"""Fixtures that register fake backend plugins through real entry points.

``fake_plugins("fakegood", "fakewrong")`` writes a dist-info directory whose entry_points.txt
names those fakes, puts it and the fakes' package on sys.path (importlib.metadata reads sys.path at
call time), allows only those plugins (plus the reference) and gives the test a fresh cache.
``fake_env(...)`` returns the same setup as environment variables for a subprocess.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

FAKES_DIR = Path(__file__).parent / "fake_plugins"
ENTRY_POINTS = {
    "fakegood": "bitnet_fakes.descriptors:fakegood",
    "fakeabsent": "bitnet_fakes.descriptors:fakeabsent",
    "fakeprobe": "bitnet_fakes.descriptors:fakeprobe",
    "fakefuture": "bitnet_fakes.descriptors:fakefuture",
    "fakewrong": "bitnet_fakes.descriptors:fakewrong",
    "fakecrash": "bitnet_fakes.descriptors:fakecrash",
    "fakebroken": "bitnet_fakes.broken:descriptor",
    "fakenotdesc": "bitnet_fakes.descriptors:NotADescriptor",
    "fakenarrow": "bitnet_fakes.descriptors:fakenarrow",
    "fakeemu": "bitnet_fakes.descriptors:fakeemu",
    "faketwina": "bitnet_fakes.descriptors:faketwina",
    "faketwinb": "bitnet_fakes.descriptors:faketwinb",
    "fakeclass": "bitnet_fakes.descriptors:ClassEntryDescriptor",  # a class, not an instance
}


def write_dist(site: Path, names: tuple[str, ...]) -> None:
    dist = site / "bitnet_fakes-0.0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bitnet-fakes\nVersion: 0.0.1\n")
    lines = ["[bitnet.backends]"] + [f"{n} = {ENTRY_POINTS[n]}" for n in names]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    def install(*names: str) -> Path:
        site = tmp_path / "site"
        write_dist(site, names)
        monkeypatch.syspath_prepend(str(FAKES_DIR))
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        monkeypatch.setenv("BITNET_PLUGINS_AUTOLOAD", "0")
        monkeypatch.setenv("BITNET_PLUGINS", ",".join(names))
        monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path / "cache"))
        for mod in [m for m in sys.modules if m.startswith("bitnet_fakes")]:
            monkeypatch.delitem(sys.modules, mod)
        return tmp_path / "cache"

    return install


@pytest.fixture
def fake_env(tmp_path):
    """Environment for a subprocess that sees the fakes named (same layout as fake_plugins)."""

    def env(*names: str, **extra: str) -> dict[str, str]:
        site = tmp_path / "site"
        write_dist(site, names)
        out = dict(os.environ)
        paths = [str(site), str(FAKES_DIR), out.get("PYTHONPATH", "")]
        out["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        out["BITNET_PLUGINS_AUTOLOAD"] = "0"
        out["BITNET_PLUGINS"] = ",".join(names)
        out["BITNET_CACHE_DIR"] = str(tmp_path / "cache")
        for key in ("BITNET_STRICT", "BITNET_DEVICE", "BITNET_DISABLE_BACKENDS"):
            out.pop(key, None)
        out.update(extra)
        return out

    return env
