"""bitnet.hal: what a kernel backend and a device are.

This package is the whole contract between core and the backend plugins. It imports nothing heavy:
a plugin's descriptor module imports only this package, and its heavy imports (PyCUDA, PyOpenCL,
Vulkan bindings, compiled extensions) happen inside ``probe()`` or ``create()``.
"""

from bitnet.hal.api import API_VERSION, check_api_version
from bitnet.hal.backend import (
    ActivationMode,
    Buffer,
    KernelBackend,
    KVCache,
    LayerSpec,
    Weight,
    WeightTensor,
)
from bitnet.hal.descriptor import BackendDescriptor, CreateOptions
from bitnet.hal.device import Capabilities, DeviceInfo, DeviceKind, Unavailable
from bitnet.hal.weight_formats import (
    FLOAT_FORMATS,
    TERNARY_FORMATS,
    WeightFormat,
    activation_mode_of,
    row_bytes,
    tensor_bytes,
)
from bitnet.hal.kv_blocks import KV_BLOCK
from bitnet.hal.ops import ALL_OPS, OPTIONAL_OPS, REQUIRED_OPS, Op

__all__ = [
    "API_VERSION",
    "ALL_OPS",
    "ActivationMode",
    "BackendDescriptor",
    "Buffer",
    "Capabilities",
    "CreateOptions",
    "DeviceInfo",
    "DeviceKind",
    "FLOAT_FORMATS",
    "KVCache",
    "KV_BLOCK",
    "KernelBackend",
    "LayerSpec",
    "OPTIONAL_OPS",
    "Op",
    "REQUIRED_OPS",
    "TERNARY_FORMATS",
    "Unavailable",
    "Weight",
    "WeightFormat",
    "WeightTensor",
    "activation_mode_of",
    "check_api_version",
    "row_bytes",
    "tensor_bytes",
]
