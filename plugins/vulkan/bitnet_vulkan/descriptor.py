"""The ``vulkan`` entry point. Imports only bitnet.hal; the Vulkan binding loads in probe/create."""

from __future__ import annotations

from importlib import resources

from bitnet.hal import (
    BackendDescriptor,
    CreateOptions,
    DeviceInfo,
    DeviceKind,
    KernelBackend,
    Unavailable,
)
from bitnet.hal.fingerprint import files_digest, kernel_files

NO_LOADER_REMEDY = "apt-get install libvulkan1 mesa-vulkan-drivers (or your GPU's Vulkan driver)"


class VulkanDescriptor(BackendDescriptor):
    name = "vulkan"
    version = "0.1.0"
    api_version = (3, 3)
    kind = DeviceKind.DGPU
    priority = 25
    distribution = "bitnet-vulkan"

    def probe(self) -> list[DeviceInfo] | Unavailable:
        try:
            import vulkan as vk
        except ImportError as exc:
            return Unavailable(f"the vulkan binding cannot be imported ({exc})",
                               "pip install vulkan")
        except OSError as exc:
            # the binding dlopens libvulkan.so.1 at import time
            return Unavailable(f"no Vulkan loader ({exc})", NO_LOADER_REMEDY)
        from bitnet_vulkan.devices import create_instance, vulkan_devices

        try:
            instance = create_instance()
        except vk.VkError as exc:
            return Unavailable(f"no Vulkan driver ({type(exc).__name__})", NO_LOADER_REMEDY)
        try:
            found = vulkan_devices(instance)
        finally:
            vk.vkDestroyInstance(instance, None)
        if not found:
            return Unavailable("no Vulkan 1.1 device with a compute queue", NO_LOADER_REMEDY)
        return [device.info for device in found]

    def create(self, device: DeviceInfo, options: CreateOptions) -> KernelBackend:
        import vulkan as vk

        from bitnet.hal.gpu_backend import GpuBackend
        from bitnet_vulkan.devices import create_instance, vulkan_devices
        from bitnet_vulkan.runtime import VulkanRuntime

        instance = create_instance()
        for candidate in vulkan_devices(instance):
            if candidate.info.index == device.index and candidate.info.name == device.name:
                runtime = VulkanRuntime(instance, candidate)
                return GpuBackend(self.name, candidate.info, runtime, notes=runtime.notes())
        vk.vkDestroyInstance(instance, None)
        raise ValueError(f"Vulkan device {device.spec} ({device.name}) is no longer present")

    def fingerprint(self) -> str:
        shaders = kernel_files(resources.files("bitnet_vulkan") / "shaders", (".spv",))
        return f"{self.version}+{files_digest(shaders, salt=self.version.encode())[:16]}"


descriptor = VulkanDescriptor()
