"""The ``cuda`` entry point: finds NVIDIA GPUs through PyCUDA and opens bitnet.hal's GpuBackend
on one, over a ``CudaRuntime``.

Imports only bitnet.hal at module level; PyCUDA (and with it libcuda.so.1) is imported inside
``probe()`` and ``create()``, so a machine without the driver can list this plugin and learn why
it is unavailable.
"""

from __future__ import annotations

import ctypes
import importlib
from typing import Any

from bitnet.hal.backend import KernelBackend
from bitnet.hal.descriptor import BackendDescriptor, CreateOptions
from bitnet.hal.device import DeviceInfo, DeviceKind, Unavailable

from bitnet_cuda import __version__

NO_DRIVER_REASON = "no NVIDIA driver (libcuda.so.1 not found)"
NO_DRIVER_REMEDY = ("install the NVIDIA driver (it provides libcuda.so.1), then "
                    "pip install bitnet[cuda]")
NO_PYCUDA_REASON = "PyCUDA is not installed"
NO_PYCUDA_REMEDY = ("pip install bitnet[cuda] pycuda (PyCUDA builds against the CUDA toolkit's "
                    "headers), or conda install -c conda-forge pycuda")


def _libcuda_present() -> bool:
    """Whether the driver library can be loaded (used only when PyCUDA itself is missing)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def import_driver() -> Any | Unavailable:
    """``pycuda.driver``, or why it cannot be had. Never raises."""
    try:
        return importlib.import_module("pycuda.driver")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "pycuda":
            if _libcuda_present():
                return Unavailable(NO_PYCUDA_REASON, NO_PYCUDA_REMEDY)
            return Unavailable(NO_DRIVER_REASON, NO_DRIVER_REMEDY)
        return Unavailable(f"PyCUDA failed to import: {exc}",
                           "pip install --force-reinstall pycuda")
    except ImportError as exc:
        # PyCUDA's extension links libcuda.so.1; without the driver its import fails here
        if "libcuda" in str(exc):
            return Unavailable(NO_DRIVER_REASON, NO_DRIVER_REMEDY)
        return Unavailable(f"PyCUDA failed to import: {exc}",
                           "pip install --force-reinstall pycuda (rebuild it against this CUDA)")


def pci_stable_id(bus_id: str) -> str:
    """cuDeviceGetPCIBusId's "0000:65:00.0" (or "00000000:65:00.0") -> "pci:0000:65:00.0", in
    the exact form the OpenCL and Vulkan plugins write, so the registry merges the same GPU."""
    domain, bus, rest = bus_id.strip().split(":")
    device, function = rest.split(".")
    return (f"pci:{int(domain, 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}."
            f"{int(function, 16):x}")


def driver_version_text(version: int) -> str:
    """cuDriverGetVersion's 13000 -> "13.0"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def list_devices(cuda: Any) -> list[DeviceInfo] | Unavailable:
    """Every CUDA device PyCUDA sees, as DeviceInfo (no context is created)."""
    from bitnet_cuda.ptx import MIN_DRIVER_VERSION

    try:
        cuda.init()
    except cuda.Error as exc:
        return Unavailable(f"the CUDA driver failed to start (cuInit: {exc})",
                           "check `nvidia-smi`; reinstall or reload the NVIDIA driver")
    version = cuda.get_driver_version()
    if version < MIN_DRIVER_VERSION:
        return Unavailable(
            f"NVIDIA driver too old: it speaks CUDA {driver_version_text(version)}, the shipped "
            f"kernels need CUDA {driver_version_text(MIN_DRIVER_VERSION)} (PTX ISA 9.0)",
            "upgrade the NVIDIA driver to 580 or newer")
    count = cuda.Device.count()
    if count == 0:
        return Unavailable("the NVIDIA driver reports no CUDA device",
                           "check `nvidia-smi` and CUDA_VISIBLE_DEVICES")
    devices = []
    for index in range(count):
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        if major * 10 + minor < 75:
            continue  # no PTX target below sm_75 (CUDA 13 dropped it)
        devices.append(DeviceInfo(
            backend=CudaDescriptor.name,
            index=index,  # the CUDA ordinal: create() opens cuda.Device(index)
            name=dev.name(),
            kind=DeviceKind.DGPU,
            memory_total=int(dev.total_memory()),
            stable_id=pci_stable_id(dev.pci_bus_id()),
            driver_version=driver_version_text(version),
            runtime_version="pycuda " + ".".join(str(v) for v in cuda.get_version()),
            isa=f"sm_{major}{minor}",
        ))
    if not devices:
        return Unavailable("every CUDA device here is older than sm_75",
                           "use a Turing (sm_75) or newer NVIDIA GPU")
    return devices


class CudaDescriptor(BackendDescriptor):
    name = "cuda"
    version = __version__
    api_version = (3, 3)
    kind = DeviceKind.DGPU
    priority = 100  # above every CPU backend when nothing was measured
    distribution = "bitnet-cuda"

    def probe(self) -> list[DeviceInfo] | Unavailable:
        cuda = import_driver()
        if isinstance(cuda, Unavailable):
            return cuda
        return list_devices(cuda)

    def create(self, device: DeviceInfo, options: CreateOptions) -> KernelBackend:
        found = self.probe()
        if isinstance(found, Unavailable):
            raise RuntimeError(f"bitnet-cuda cannot open {device.spec}: {found}")
        match = [d for d in found if d.index == device.index]
        if not match:
            raise RuntimeError(f"bitnet-cuda: no device {device.spec} (found {len(found)})")
        from bitnet.hal.gpu_backend import GpuBackend
        from bitnet_cuda.runtime import CudaRuntime

        runtime = CudaRuntime(import_driver(), match[0].index)
        return GpuBackend(self.name, match[0], runtime, notes=runtime.notes())

    def fingerprint(self) -> str:
        from bitnet_cuda.ptx import fingerprint

        return f"{self.version}+ptx.{fingerprint()}"


descriptor = CudaDescriptor()
