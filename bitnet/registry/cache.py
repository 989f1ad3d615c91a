"""On-disk cache of validation and benchmark results, and crash markers.

Layout under the cache root (``BITNET_CACHE_DIR`` or the platformdirs user cache dir)::

    validation/<key>.json   one validation result per fingerprint
    bench/<key>.json        benchmark scores per fingerprint, keyed by the shapes measured
    crash/<key>.json        written before validating, removed after: if it is still there on the
                            next run, the validation killed the process

A file that does not parse is ignored (and rewritten on the next store): a cache must never be the
reason a run fails. An unwritable cache directory only costs the caching.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import bitnet
from bitnet.hal.api import API_VERSION
from bitnet.hal.device import DeviceInfo
from bitnet.registry.records import Plugin

log = logging.getLogger("bitnet.registry")
# A validation takes seconds; a marker older than this whose pid is alive is a reused pid.
_LIVE_VALIDATION_S = 1800.0


def fingerprint(plugin: Plugin, device: DeviceInfo, suite_version: int) -> dict[str, Any]:
    """Everything a cached result depends on (docs/design.md section 5)."""
    try:
        kernels = str(plugin.descriptor.fingerprint())
    except Exception as exc:  # a broken fingerprint just means "never reuse"
        kernels = f"unhashable:{type(exc).__name__}:{time.time()}"
    return {
        "core": bitnet.__version__,
        "api": API_VERSION,
        "plugin": plugin.name,
        "plugin_version": plugin.version,
        "kernels": kernels,
        "device_index": device.index,
        "device_id": device.stable_id,
        "device_name": device.name,
        "isa": device.isa,
        "driver": device.driver_version,
        "runtime": device.runtime_version,
        "suite": suite_version,
    }


def key_of(fields: dict[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class ResultCache:
    """JSON files under ``root``; every method tolerates a missing, corrupt or read-only cache."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.problems: list[str] = []  # notes for the selection report

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def read(self, kind: str, key: str) -> dict[str, Any] | None:
        path = self._path(kind, key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.append(f"cannot read {path}: {exc}")
            return None
        try:
            data = json.loads(text)
        except ValueError:
            log.debug("ignoring corrupt cache file %s", path)
            return None
        return data if isinstance(data, dict) else None

    def write(self, kind: str, key: str, data: dict[str, Any]) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        path = self._path(kind, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True, default=str)
            os.replace(tmp, path)
        except OSError as exc:
            self.problems.append(f"cannot write the cache {path.parent}: {exc} "
                                 f"(set BITNET_CACHE_DIR to a writable directory)")

    def remove(self, kind: str, key: str) -> None:
        try:
            self._path(kind, key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.problems.append(f"cannot remove {self._path(kind, key)}: {exc}")

    # -- crash markers -------------------------------------------------------------------------

    def crash_mark(self, key: str, what: str) -> None:
        self.write("crash", key, {"pid": os.getpid(), "what": what, "time": time.time()})

    def crash_clear(self, key: str) -> None:
        self.remove("crash", key)

    def crashed(self, key: str) -> dict[str, Any] | None:
        """The marker of a validation that died, or None. A marker whose process is still alive
        belongs to a validation running right now in another process, not to a crash."""
        marker = self.read("crash", key)
        if marker is None:
            return None
        pid = marker.get("pid")
        started = marker.get("time")
        recent = isinstance(started, (int, float)) and time.time() - started < _LIVE_VALIDATION_S
        if isinstance(pid, int) and pid != os.getpid() and recent and _pid_alive(pid):
            return None
        return marker
