"""The descriptor: cheap import, device listing, and a clean 'unavailable' without Vulkan."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from bitnet_vulkan.descriptor import NO_LOADER_REMEDY, VulkanDescriptor, descriptor

from bitnet.hal import DeviceInfo, DeviceKind, Unavailable


def _probe_in_subprocess(env_extra: dict[str, str]) -> str:
    code = "from bitnet_vulkan.descriptor import descriptor; print(repr(descriptor.probe()))"
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_entry_point_resolves_to_the_descriptor():
    (entry,) = [e for e in entry_points(group="bitnet.backends") if e.name == "vulkan"]
    assert entry.value == "bitnet_vulkan.descriptor:descriptor"
    assert entry.load() is descriptor


def test_descriptor_import_does_not_load_vulkan():
    code = "import sys, bitnet_vulkan.descriptor; print('vulkan' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_probe_without_the_binding_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vulkan", None)  # makes `import vulkan` fail
    result = VulkanDescriptor().probe()
    assert isinstance(result, Unavailable)
    assert result.remedy == "pip install vulkan"


def test_probe_without_the_loader_says_what_to_install(monkeypatch):
    class NoLoader:
        """A finder that fails like the binding does when libvulkan.so.1 is missing."""

        def find_spec(self, name, path=None, target=None):
            if name == "vulkan":
                raise OSError("Cannot find Vulkan SDK version")

    monkeypatch.delitem(sys.modules, "vulkan", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoLoader(), *sys.meta_path])
    result = VulkanDescriptor().probe()
    assert isinstance(result, Unavailable)
    assert "no Vulkan loader" in result.reason
    assert result.remedy == NO_LOADER_REMEDY
    assert "libvulkan1 mesa-vulkan-drivers" in result.remedy


def test_probe_without_any_driver_is_unavailable():
    # a real loader that finds no ICD: vkCreateInstance fails with INCOMPATIBLE_DRIVER
    text = _probe_in_subprocess({"VK_ICD_FILENAMES": "/nonexistent.json",
                                 "VK_DRIVER_FILES": "/nonexistent.json"})
    assert text.startswith("Unavailable(")
    assert "no Vulkan driver" in text and "mesa-vulkan-drivers" in text


def test_devices_are_listed_with_kind_memory_driver_and_id():
    devices = descriptor.probe()
    if isinstance(devices, Unavailable):
        pytest.skip(str(devices))
    for index, info in enumerate(devices):
        assert isinstance(info, DeviceInfo)
        assert info.backend == "vulkan" and info.index == index
        assert info.kind in DeviceKind
        assert info.memory_total and info.memory_total > 0
        assert info.driver_version and info.runtime_version
        assert info.isa.startswith("subgroup ")
        # CPU-type devices (lavapipe) are emulation: ranked below the native CPU plugin.
        assert info.emulated == (info.kind is DeviceKind.CPU)
        assert info.stable_id is None or info.stable_id.startswith(("pci:", "uuid:"))


def test_work_group_follows_the_queried_subgroup_size(vulkan_backend):
    device = vulkan_backend.runtime.vk_device
    assert device.work_group & (device.work_group - 1) == 0  # a power of two
    assert 16 <= device.work_group <= 256
    assert device.work_group >= min(256, 4 * device.subgroup_size) or device.work_group == 256


def test_fingerprint_hashes_the_spirv():
    first = descriptor.fingerprint()
    assert first.startswith("0.1.0+")
    assert first == VulkanDescriptor().fingerprint()
