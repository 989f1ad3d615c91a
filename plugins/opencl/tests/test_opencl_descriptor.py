"""The descriptor: cheap import, device listing, and a clean 'unavailable' without OpenCL."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib.metadata import entry_points

import pytest
from bitnet_opencl.descriptor import NO_PLATFORM_REMEDY, OpenCLDescriptor, descriptor

from bitnet.hal import DeviceInfo, DeviceKind, Unavailable


def test_entry_point_resolves_to_the_descriptor():
    (entry,) = [e for e in entry_points(group="bitnet.backends") if e.name == "opencl"]
    assert entry.value == "bitnet_opencl.descriptor:descriptor"
    assert entry.load() is descriptor


def test_descriptor_import_does_not_import_pyopencl():
    code = "import sys, bitnet_opencl.descriptor; print('pyopencl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_probe_without_pyopencl_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyopencl", None)  # makes `import pyopencl` fail
    result = OpenCLDescriptor().probe()
    assert isinstance(result, Unavailable)
    assert "pyopencl" in result.reason
    assert result.remedy == "pip install pyopencl"


def test_probe_without_platform_says_what_to_install(monkeypatch):
    class FakeError(Exception):
        pass

    def no_platforms():
        # what pyopencl's LogicError (a cl.Error) says when no ICD is installed
        raise FakeError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")

    fake = types.SimpleNamespace(Error=FakeError, get_platforms=no_platforms)
    monkeypatch.setitem(sys.modules, "pyopencl", fake)
    result = OpenCLDescriptor().probe()
    assert isinstance(result, Unavailable)
    assert "PLATFORM_NOT_FOUND_KHR" in result.reason
    assert "pocl-binary-distribution" in result.remedy
    assert result.remedy == NO_PLATFORM_REMEDY


def test_devices_are_listed_with_kind_memory_and_driver():
    devices = descriptor.probe()
    if isinstance(devices, Unavailable):
        pytest.skip(str(devices))
    for index, info in enumerate(devices):
        assert isinstance(info, DeviceInfo)
        assert info.backend == "opencl"
        assert info.index == index
        assert info.kind in DeviceKind
        assert info.memory_total and info.memory_total > 0
        assert info.driver_version
        # CPU-type devices (PoCL) are emulation: the registry ranks them below the native CPU.
        assert info.emulated == (info.kind is DeviceKind.CPU)
        if info.stable_id is not None:
            assert info.stable_id.startswith(("pci:", "uuid:"))


def test_fingerprint_hashes_the_kernels():
    first = descriptor.fingerprint()
    assert first.startswith("0.1.0+")
    assert first == OpenCLDescriptor().fingerprint()
