"""The on-disk cache: fingerprint keys, corrupt files, crash markers, an unwritable directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bitnet.hal.device import DeviceInfo, DeviceKind
from bitnet.registry import list_devices, select
from bitnet.registry.cache import ResultCache, fingerprint, key_of
from bitnet.registry.records import Plugin


def _fp(**device_kwargs):
    from bitnet.backends.reference.descriptor import descriptor

    plugin = Plugin("reference", "0.1.0", "bitnet", descriptor=descriptor)
    device = DeviceInfo("reference", 0, "cpu", DeviceKind.CPU, **device_kwargs)
    return fingerprint(plugin, device, suite_version=1)


def test_fingerprint_covers_device_driver_and_versions():
    base = key_of(_fp())
    assert base == key_of(_fp())
    assert base != key_of(_fp(driver_version="550.1"))
    assert base != key_of(_fp(runtime_version="12.4"))
    assert base != key_of(_fp(isa="avx2"))
    assert base != key_of(_fp(stable_id="pci:0000:01:00.0"))
    fields = _fp()
    for name in ("core", "api", "plugin", "plugin_version", "kernels", "device_name", "suite"):
        assert name in fields


def test_corrupt_cache_files_are_ignored_and_rewritten(fake_plugins):
    cache = fake_plugins("fakegood")
    assert _validated(list_devices())
    files = list((cache / "validation").glob("*.json"))
    assert files
    for path in files:
        path.write_text("{ not json")
    (cache / "crash").mkdir(exist_ok=True)
    (cache / "crash" / "garbage.json").write_bytes(b"\x00\xff")
    assert _validated(list_devices())
    for path in files:
        assert json.loads(path.read_text())["passed"] is True  # rewritten


def _validated(rows):
    verdicts = {r.backend: r.validated for r in rows if r.status != "disabled"}
    return verdicts == {"fakegood": True, "reference": True}


def test_unwritable_cache_only_costs_the_caching(fake_plugins, monkeypatch, tmp_path):
    fake_plugins("fakegood")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("BITNET_CACHE_DIR", str(blocker / "cache"))
    selection = select("auto")
    assert selection.device.spec == "fakegood:0"
    assert any("cannot write the cache" in n for n in selection.report.notes)


def test_a_marker_of_a_live_validation_elsewhere_is_not_a_crash(tmp_path):
    cache = ResultCache(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        cache.write("crash", "k", {"pid": sleeper.pid, "time": time.time(), "what": "x:0"})
        assert cache.crashed("k") is None  # another process is validating right now
        cache.write("crash", "k", {"pid": sleeper.pid, "time": time.time() - 7200, "what": "x"})
        assert cache.crashed("k") is not None  # too old: a reused pid, so it did crash
    finally:
        sleeper.kill()
        sleeper.wait()
    cache.write("crash", "k", {"pid": sleeper.pid, "time": time.time(), "what": "x:0"})
    assert cache.crashed("k") is not None  # the process is gone: it crashed
    cache.write("crash", "k", {"pid": os.getpid(), "time": time.time(), "what": "x:0"})
    assert cache.crashed("k") is not None  # our own pid cannot be validating it elsewhere
    cache.crash_clear("k")
    assert cache.crashed("k") is None
