"""The ``metal`` entry point. Imports only bitnet.hal; pyobjc's ``Metal`` is imported in probe().

It never claims what it does not have: off macOS, or without pyobjc-framework-Metal, it says
so; on a Mac it still reports itself unavailable (the backend is an unfinished skeleton) unless
``BITNET_METAL_DEV=1`` asks for it explicitly, for whoever finishes it.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from bitnet.hal.backend import KernelBackend
from bitnet.hal.descriptor import BackendDescriptor, CreateOptions
from bitnet.hal.device import DeviceInfo, DeviceKind, Unavailable

from bitnet_metal import __version__

NEEDS_MACOS_REASON = "Metal needs macOS (sys.platform == 'darwin') and pyobjc-framework-Metal"
UNFINISHED_REASON = "bitnet-metal is an unfinished skeleton: its kernels have never run"
DEV_ENV = "BITNET_METAL_DEV"


def import_metal() -> Any | Unavailable:
    """pyobjc's ``Metal`` module, or why it cannot be had. Never raises."""
    if sys.platform != "darwin":
        return Unavailable(NEEDS_MACOS_REASON,
                           f"this is {sys.platform}: use another backend (e.g. cpu)")
    try:
        return importlib.import_module("Metal")
    except ImportError:
        return Unavailable(NEEDS_MACOS_REASON, "pip install pyobjc-framework-Metal")


def _device_info(index: int, dev: Any) -> DeviceInfo:
    unified = bool(dev.hasUnifiedMemory())
    return DeviceInfo(
        backend="metal",
        index=index,
        name=str(dev.name()),
        kind=DeviceKind.IGPU if unified else DeviceKind.DGPU,
        memory_total=int(dev.recommendedMaxWorkingSetSize()),
        stable_id=f"registry:{int(dev.registryID()):#x}",
        isa="metal",
    )


class MetalDescriptor(BackendDescriptor):
    name = "metal"
    version = __version__
    api_version = (3, 3)
    kind = DeviceKind.IGPU
    priority = 90
    distribution = "bitnet-metal"

    def _metal_devices(self) -> tuple[Any, list[Any]] | Unavailable:
        metal = import_metal()
        if isinstance(metal, Unavailable):
            return metal
        devices = list(metal.MTLCopyAllDevices() or [])
        if not devices:
            return Unavailable("macOS reports no Metal device", "check System Information")
        return metal, devices

    def probe(self) -> list[DeviceInfo] | Unavailable:
        found = self._metal_devices()
        if isinstance(found, Unavailable):
            return found
        _, devices = found
        if os.environ.get(DEV_ENV) != "1":
            return Unavailable(f"{UNFINISHED_REASON} ({len(devices)} Metal device(s) found)",
                               f"use another backend (e.g. cpu); to develop it set {DEV_ENV}=1 "
                               "and see plugins/metal/README.md")
        return [_device_info(i, d) for i, d in enumerate(devices)]

    def create(self, device: DeviceInfo, options: CreateOptions) -> KernelBackend:
        found = self.probe()
        if isinstance(found, Unavailable):
            raise RuntimeError(f"bitnet-metal cannot open {device.spec}: {found}")
        metal, devices = self._metal_devices()
        if not 0 <= device.index < len(devices):
            raise RuntimeError(f"bitnet-metal: no device {device.spec}")
        from bitnet.hal.gpu_backend import GpuBackend
        from bitnet_metal.runtime import MetalRuntime

        runtime = MetalRuntime(devices[device.index], metal)
        return GpuBackend(self.name, found[device.index], runtime,
                          notes=("unfinished skeleton: never run on a Mac",))

    def fingerprint(self) -> str:
        from bitnet_metal.kernels_source import sources_digest

        return f"{self.version}+msl.{sources_digest()[:16]}"


descriptor = MetalDescriptor()
