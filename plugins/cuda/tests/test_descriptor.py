"""The descriptor: cheap import, the no-driver probe, device listing, and create() refusals."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import fake_cuda
from bitnet.hal import CreateOptions, DeviceInfo, DeviceKind, Unavailable
from bitnet_cuda import descriptor as descriptor_module
from bitnet_cuda.descriptor import NO_DRIVER_REASON, descriptor


def test_entry_point_is_registered():
    found = [e for e in entry_points(group="bitnet.backends") if e.name == "cuda"]
    assert [e.value for e in found] == ["bitnet_cuda.descriptor:descriptor"]
    assert found[0].load() is descriptor


def test_descriptor_import_pulls_in_no_pycuda():
    code = ("import sys, bitnet_cuda.descriptor, bitnet_cuda.runtime, "
            "bitnet_cuda.ptx; print(sorted(m for m in sys.modules if m.startswith('pycuda')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _fail_import(monkeypatch, exc: Exception) -> None:
    real = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name.startswith("pycuda"):
            raise exc
        return real(name, *args, **kwargs)

    monkeypatch.setattr(descriptor_module.importlib, "import_module", fake_import)


def test_probe_without_driver_says_so(monkeypatch):
    _fail_import(monkeypatch, ImportError("libcuda.so.1: cannot open shared object file"))
    result = descriptor.probe()
    assert isinstance(result, Unavailable)
    assert result.reason == NO_DRIVER_REASON == "no NVIDIA driver (libcuda.so.1 not found)"
    assert result.remedy.startswith("install the NVIDIA driver")


def test_probe_without_pycuda_or_driver(monkeypatch):
    missing = ModuleNotFoundError("No module named 'pycuda'", name="pycuda")
    _fail_import(monkeypatch, missing)
    monkeypatch.setattr(descriptor_module, "_libcuda_present", lambda: False)
    result = descriptor.probe()
    assert isinstance(result, Unavailable) and result.reason == NO_DRIVER_REASON
    assert "pip install bitnet[cuda]" in result.remedy


def test_probe_with_driver_but_no_pycuda(monkeypatch):
    missing = ModuleNotFoundError("No module named 'pycuda'", name="pycuda")
    _fail_import(monkeypatch, missing)
    monkeypatch.setattr(descriptor_module, "_libcuda_present", lambda: True)
    result = descriptor.probe()
    assert isinstance(result, Unavailable)
    assert result.reason == "PyCUDA is not installed"
    assert "pip install" in result.remedy and "pycuda" in result.remedy


def test_probe_on_this_machine_is_clean():
    """Here (no driver, no PyCUDA) the real probe returns Unavailable and never raises."""
    result = descriptor.probe()
    if not isinstance(result, Unavailable):
        pytest.skip(f"a CUDA device is present: {result}")
    assert result.reason in (NO_DRIVER_REASON, "PyCUDA is not installed")
    assert result.remedy


def test_probe_lists_a_device_with_pci_stable_id(monkeypatch):
    fake_cuda.install(monkeypatch)
    devices = descriptor.probe()
    assert isinstance(devices, list) and len(devices) == 1
    dev = devices[0]
    assert dev.backend == "cuda" and dev.index == 0 and dev.spec == "cuda:0"
    assert dev.kind is DeviceKind.DGPU
    assert dev.stable_id == "pci:0000:ab:00.0"  # lower-cased for the registry's merge
    assert dev.isa == "sm_90"
    assert dev.driver_version == "13.0"
    assert dev.memory_total == 80 * 2**30


def test_pci_stable_id_matches_the_opencl_and_vulkan_form():
    from bitnet_cuda.descriptor import pci_stable_id

    assert pci_stable_id("0000:65:00.0") == "pci:0000:65:00.0"
    assert pci_stable_id("00000000:AB:1F.0") == "pci:0000:ab:1f.0"


def test_probe_rejects_a_driver_too_old_for_the_ptx(monkeypatch):
    fake_cuda.install(monkeypatch, driver_version=12040)
    result = descriptor.probe()
    assert isinstance(result, Unavailable)
    assert "12.4" in result.reason and "13.0" in result.reason
    assert "580" in result.remedy


def test_create_refuses_without_a_driver(monkeypatch):
    _fail_import(monkeypatch, ImportError("libcuda.so.1: cannot open shared object file"))
    dev = DeviceInfo(backend="cuda", index=0, name="x", kind=DeviceKind.DGPU)
    with pytest.raises(RuntimeError, match="no NVIDIA driver"):
        descriptor.create(dev, CreateOptions())


def test_fingerprint_names_version_and_ptx():
    fp = descriptor.fingerprint()
    assert fp.startswith("0.1.0+ptx.") and len(fp) > len("0.1.0+ptx.")
