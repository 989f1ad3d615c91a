"""Enumerate Vulkan physical devices as DeviceInfo (imported only inside probe/create)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import vulkan as vk

from bitnet.hal import DeviceInfo, DeviceKind

ffi = vk.ffi
_MAX_WORK_GROUP = 256
_MIN_WORK_GROUP = 16
INT_DOT_EXTENSION = "VK_KHR_shader_integer_dot_product"


@dataclass(frozen=True)
class VulkanDevice:
    """What the backend needs to know about a physical device beyond DeviceInfo."""

    info: DeviceInfo
    physical: Any
    subgroup_size: int
    work_group: int  # chosen from the subgroup size and the device limits
    fp64: bool
    max_invocations: int  # maxComputeWorkGroupInvocations
    max_rows: int  # maxComputeWorkGroupSize[1]
    shared_memory: int  # maxComputeSharedMemorySize, bytes
    max_buffer_range: int  # maxStorageBufferRange: the largest buffer a shader can bind
    int_dot: bool  # VK_KHR_shader_integer_dot_product usable (BITNET_VULKAN_INT_DOT=0: never)
    int_dot_accelerated: bool  # the driver says packed signed 4x8-bit dots are hardware


def create_instance() -> Any:
    app = vk.VkApplicationInfo(pApplicationName="bitnet", applicationVersion=1,
                               pEngineName="bitnet-vulkan", engineVersion=1,
                               apiVersion=vk.VK_MAKE_VERSION(1, 1, 0))
    create = vk.VkInstanceCreateInfo(pApplicationInfo=app)
    return vk.vkCreateInstance(create, None)


def vulkan_devices(instance: Any) -> list[VulkanDevice]:
    """Every physical device with Vulkan >= 1.1 and a compute queue, in the loader's order."""
    found = []
    for physical in vk.vkEnumeratePhysicalDevices(instance):
        props = vk.vkGetPhysicalDeviceProperties(physical)
        if vk.VK_VERSION_MAJOR(props.apiVersion) == 1 and vk.VK_VERSION_MINOR(props.apiVersion) < 1:
            continue  # subgroup and ID queries need 1.1
        extensions = {
            e.extensionName for e in vk.vkEnumerateDeviceExtensionProperties(physical, None)
        }
        subgroup = vk.VkPhysicalDeviceSubgroupProperties(
            sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES
        )
        ids = vk.VkPhysicalDeviceIDProperties(
            sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES, pNext=subgroup
        )
        chain = ids
        pci = None
        if "VK_EXT_pci_bus_info" in extensions:
            pci = vk.VkPhysicalDevicePCIBusInfoPropertiesEXT(
                sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PCI_BUS_INFO_PROPERTIES_EXT, pNext=chain
            )
            chain = pci
        dot_props = None
        if INT_DOT_EXTENSION in extensions:
            dot_props = vk.VkPhysicalDeviceShaderIntegerDotProductProperties(
                sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES,
                pNext=chain,
            )
            chain = dot_props
        driver = None
        if "VK_KHR_driver_properties" in extensions:
            driver = vk.VkPhysicalDeviceDriverProperties(
                sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, pNext=chain
            )
            chain = driver
        props2 = vk.VkPhysicalDeviceProperties2(
            sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, pNext=chain
        )
        vk.vkGetPhysicalDeviceProperties2(physical, props2)
        features = vk.vkGetPhysicalDeviceFeatures(physical)
        int_dot = dot_props is not None and _has_int_dot_feature(physical)
        kind = _KINDS.get(props.deviceType, DeviceKind.ACCEL)
        info = DeviceInfo(
            backend="vulkan",
            index=len(found),
            name=_text(props.deviceName),
            kind=kind,
            memory_total=_device_local_bytes(physical),
            stable_id=_stable_id(pci, ids),
            driver_version=_driver_text(driver, props.driverVersion),
            runtime_version=_version_text(props.apiVersion),
            isa=f"subgroup {subgroup.subgroupSize}",
            emulated=kind is DeviceKind.CPU,
        )
        limits = props.limits
        wanted = max(_MIN_WORK_GROUP, 4 * subgroup.subgroupSize)  # a few subgroups
        size = min(_MAX_WORK_GROUP, limits.maxComputeWorkGroupInvocations,
                   limits.maxComputeWorkGroupSize[0], wanted)
        work_group = 1 << (int(size).bit_length() - 1)
        if work_group < _MIN_WORK_GROUP:
            continue
        found.append(VulkanDevice(info, physical, int(subgroup.subgroupSize), work_group,
                                  bool(features.shaderFloat64),
                                  int(limits.maxComputeWorkGroupInvocations),
                                  int(limits.maxComputeWorkGroupSize[1]),
                                  int(limits.maxComputeSharedMemorySize),
                                  int(limits.maxStorageBufferRange),
                                  int_dot and os.environ.get("BITNET_VULKAN_INT_DOT", "1") != "0",
                                  bool(dot_props and
                                       dot_props.integerDotProduct4x8BitPackedSignedAccelerated)))
    return found


def _has_int_dot_feature(physical: Any) -> bool:
    dot = vk.VkPhysicalDeviceShaderIntegerDotProductFeatures(
        sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES
    )
    features2 = vk.VkPhysicalDeviceFeatures2(
        sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, pNext=dot
    )
    vk.vkGetPhysicalDeviceFeatures2(physical, features2)
    return bool(dot.shaderIntegerDotProduct)


_KINDS = {
    vk.VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: DeviceKind.DGPU,
    vk.VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: DeviceKind.IGPU,
    vk.VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: DeviceKind.DGPU,
    vk.VK_PHYSICAL_DEVICE_TYPE_CPU: DeviceKind.CPU,
}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ffi.string(value).decode()


def _device_local_bytes(physical: Any) -> int:
    memory = vk.vkGetPhysicalDeviceMemoryProperties(physical)
    return sum(
        int(memory.memoryHeaps[i].size)
        for i in range(memory.memoryHeapCount)
        if memory.memoryHeaps[i].flags & vk.VK_MEMORY_HEAP_DEVICE_LOCAL_BIT
    )


def _stable_id(pci: Any, ids: Any) -> str | None:
    if pci is not None:
        return (f"pci:{pci.pciDomain:04x}:{pci.pciBus:02x}:{pci.pciDevice:02x}."
                f"{pci.pciFunction:x}")
    raw = bytes(ffi.buffer(ids.deviceUUID))
    if not any(raw):
        return None
    h = raw.hex()
    return f"uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _driver_text(driver: Any, packed: int) -> str:
    if driver is not None:
        info = _text(driver.driverInfo)
        if info:
            return info
    return _version_text(packed)


def _version_text(packed: int) -> str:
    major = vk.VK_VERSION_MAJOR(packed)
    minor = vk.VK_VERSION_MINOR(packed)
    return f"{major}.{minor}.{vk.VK_VERSION_PATCH(packed)}"
