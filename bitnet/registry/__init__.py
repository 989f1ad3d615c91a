"""bitnet.registry: which backend runs.

Discovery of the ``bitnet.backends`` entry points (each plugin isolated), validation against the
reference backend (cached on disk, crash-guarded), ranking, and an explained selection.

    from bitnet.registry import select, list_devices
    selection = select("auto", requirements, CreateOptions())
    selection.backend, selection.device, print(selection.report.text())
"""

from __future__ import annotations

from typing import Any

from bitnet.registry.records import (
    BackendSelectionError,
    CandidateReport,
    DeviceRecord,
    PluginFailure,
    SelectionReport,
)
from bitnet.registry.requirements import LinearShape, ModelRequirements

__all__ = [
    "BackendSelectionError",
    "CandidateReport",
    "DeviceRecord",
    "LinearShape",
    "ModelRequirements",
    "PluginFailure",
    "Selection",
    "SelectionReport",
    "list_devices",
    "select",
]


def __getattr__(name: str) -> Any:
    # Lazy: the selection machinery (pluggy, numpy codecs) loads on first use only.
    if name in ("select", "Selection", "RankedCandidate"):
        from bitnet.registry import selection

        return getattr(selection, name)
    if name == "list_devices":
        from bitnet.registry.devices import list_devices

        return list_devices
    raise AttributeError(f"module 'bitnet.registry' has no attribute {name!r}")
