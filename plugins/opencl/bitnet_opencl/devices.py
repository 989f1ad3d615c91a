"""Enumerate OpenCL devices as DeviceInfo (imported only inside probe/create: needs pyopencl)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path
from typing import Any

from bitnet.hal import DeviceInfo, DeviceKind

# cl_device_info ids pyopencl has no name for; read through the C API (raw_device_info).
CL_DEVICE_UUID_KHR = 0x106A  # cl_khr_device_uuid: 16 bytes
CL_DEVICE_PCI_BUS_INFO_KHR = 0x410F  # cl_khr_pci_bus_info: 4 x cl_uint domain, bus, dev, fn
CL_DEVICE_INTEGER_DOT_PRODUCT_CAPABILITIES_KHR = 0x1073  # cl_bitfield (8 bytes)


def opencl_devices(cl: Any) -> list[tuple[DeviceInfo, Any]]:
    """Every device of every platform, indexed in platform order: [(DeviceInfo, cl.Device)]."""
    found = []
    for platform in cl.get_platforms():
        try:
            devices = platform.get_devices()
        except cl.Error:  # a platform with no devices raises DEVICE_NOT_FOUND
            continue
        for device in devices:
            info = DeviceInfo(
                backend="opencl",
                index=len(found),
                name=device.name.strip(),
                kind=_kind(cl, device),
                memory_total=int(device.global_mem_size),
                stable_id=_stable_id(cl, device),
                driver_version=device.driver_version,
                runtime_version=f"{platform.name.strip()} {platform.version.strip()}",
                isa=device.version.strip(),
                emulated=bool(device.type & cl.device_type.CPU),
            )
            found.append((info, device))
    return found


def _kind(cl: Any, device: Any) -> DeviceKind:
    if device.type & cl.device_type.GPU:
        # An integrated GPU shares host memory (deprecated query, still answered everywhere).
        return DeviceKind.IGPU if device.host_unified_memory else DeviceKind.DGPU
    if device.type & cl.device_type.ACCELERATOR:
        return DeviceKind.ACCEL
    return DeviceKind.CPU


@functools.cache
def _opencl_library() -> ctypes.CDLL | None:
    """The ICD loader pyopencl uses (its wheel bundles one), else the system's, else None."""
    import pyopencl

    package = Path(pyopencl.__file__).parent
    bundled = [*package.glob(".libs/libOpenCL*"), *package.parent.glob("pyopencl.libs/libOpenCL*")]
    system = ctypes.util.find_library("OpenCL")
    names = [str(path) for path in sorted(bundled)] + ([system] if system else [])
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def raw_device_info(device: Any, param: int, size: int) -> bytes | None:
    """clGetDeviceInfo(param) as raw bytes for queries pyopencl cannot name; None on failure."""
    lib = _opencl_library()
    if lib is None:
        return None
    buf = ctypes.create_string_buffer(size)
    status = lib.clGetDeviceInfo(ctypes.c_void_p(device.int_ptr), ctypes.c_uint32(param),
                                 ctypes.c_size_t(size), buf, None)
    return buf.raw if status == 0 else None


def _stable_id(cl: Any, device: Any) -> str | None:
    """PCI bus id where the driver tells it, else the device UUID, else None."""
    extensions = device.extensions.split()
    if "cl_khr_pci_bus_info" in extensions:
        raw = raw_device_info(device, CL_DEVICE_PCI_BUS_INFO_KHR, 16)
        if raw is not None:
            domain, bus, dev, function = (int.from_bytes(raw[i:i + 4], "little")
                                          for i in range(0, 16, 4))
            return f"pci:{domain:04x}:{bus:02x}:{dev:02x}.{function:x}"
    if "cl_amd_device_attribute_query" in extensions:
        try:
            topology = device.get_info(cl.device_info.TOPOLOGY_AMD)
            return f"pci:0000:{topology.bus:02x}:{topology.device:02x}.{topology.function:x}"
        except (cl.Error, AttributeError, TypeError, ValueError):
            pass
    if "cl_nv_device_attribute_query" in extensions:
        try:
            bus = int(device.get_info(cl.device_info.PCI_BUS_ID_NV))
            slot = int(device.get_info(cl.device_info.PCI_SLOT_ID_NV))
            domain = int(device.get_info(cl.device_info.PCI_DOMAIN_ID_NV))
            return f"pci:{domain:04x}:{bus:02x}:{slot >> 3:02x}.{slot & 7:x}"
        except (cl.Error, AttributeError, TypeError, ValueError):
            pass
    if "cl_khr_device_uuid" in extensions:
        raw = raw_device_info(device, CL_DEVICE_UUID_KHR, 16)
        if raw is not None and any(raw):
            return f"uuid:{_uuid_text(raw)}"
    return None


def _uuid_text(raw: bytes) -> str:
    """16 bytes -> the 8-4-4-4-12 form nvidia-smi and Vulkan tools print."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
