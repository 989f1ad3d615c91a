"""Build the kernel files of ``kernels/`` for one device and size their work-groups."""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

import pyopencl as cl

from bitnet_opencl.devices import CL_DEVICE_INTEGER_DOT_PRODUCT_CAPABILITIES_KHR, raw_device_info

TILE_N = 8  # tokens per work-group in the matmuls (kernels' TILE_N)
_MAX_WORK_GROUP = 256
_MIN_WORK_GROUP = 16
_MATMUL_WORK_GROUP = 128  # rows x lanes of one matmul work-group


def kernel_source(file: str) -> str:
    return (resources.files("bitnet_opencl") / "kernels" / file).read_text()


def has_int_dot(cl_device: Any) -> bool:
    """True when the device offers cl_khr_integer_dot_product for 4 x int8 vectors.

    BITNET_OPENCL_INT_DOT=0 forces the portable fallback (to test it on devices that have both).
    """
    if os.environ.get("BITNET_OPENCL_INT_DOT", "1") == "0":
        return False
    if "cl_khr_integer_dot_product" not in cl_device.extensions.split():
        return False
    raw = raw_device_info(cl_device, CL_DEVICE_INTEGER_DOT_PRODUCT_CAPABILITIES_KHR, 8)
    if raw is None:
        # capabilities unreadable: let the kernels decide by the OpenCL C feature macro
        return True
    return bool(int.from_bytes(raw, "little") & 0x2)  # ..._INPUT_4x8BIT_KHR


class Programs:
    """Builds programs on first use (common.cl prepended) and caches kernels and sizes."""

    def __init__(self, context: Any, cl_device: Any) -> None:
        self.context = context
        self.device = cl_device
        self.int_dot = has_int_dot(cl_device)
        self.fp64 = "cl_khr_fp64" in cl_device.extensions.split()
        self._common = kernel_source("common.cl")
        self._programs: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._kernels: dict[tuple[str, tuple[str, ...], str], Any] = {}
        self._work_groups: dict[int, int] = {}

    def kernel(self, file: str, name: str, defines: tuple[str, ...] = ()) -> Any:
        key = (file, defines, name)
        if key not in self._kernels:
            self._kernels[key] = cl.Kernel(self._program(file, defines), name)
        return self._kernels[key]

    def _program(self, file: str, defines: tuple[str, ...]) -> Any:
        key = (file, defines)
        if key not in self._programs:
            options = [f"-DTILE_N={TILE_N}"] + [f"-D{d}" for d in defines]
            if self.int_dot:
                options.append("-DUSE_INT_DOT")
            if self.fp64:
                options.append("-DUSE_FP64")
            source = self._common + "\n" + kernel_source(file)
            try:
                self._programs[key] = cl.Program(self.context, source).build(options=options)
            except cl.RuntimeError as exc:
                raise RuntimeError(f"OpenCL build of {file} {defines} failed: {exc}") from exc
        return self._programs[key]

    def work_group(self, kernel: Any) -> int:
        """A power-of-two work-group size for a reducing kernel, from the device's answers:
        four times the preferred multiple (the SIMD/warp width), capped by the kernel's limit."""
        key = id(kernel)
        if key not in self._work_groups:
            info = cl.kernel_work_group_info
            limit = kernel.get_work_group_info(info.WORK_GROUP_SIZE, self.device)
            multiple = kernel.get_work_group_info(
                info.PREFERRED_WORK_GROUP_SIZE_MULTIPLE, self.device
            )
            target = min(_MAX_WORK_GROUP, limit, max(_MIN_WORK_GROUP, 4 * multiple))
            size = 1 << (target.bit_length() - 1)
            if size < _MIN_WORK_GROUP:
                raise RuntimeError(
                    f"{self.device.name}: work-groups of {_MIN_WORK_GROUP} work-items needed, "
                    f"the device allows {limit}"
                )
            self._work_groups[key] = size
        return self._work_groups[key]

    def matmul_shape(self, kernel: Any, local_bytes_per_row: int) -> tuple[int, int]:
        """(lanes, rows) of a matmul work-group: lanes = the device's SIMD width (preferred
        multiple) clamped to [TILE_N, 32], as many rows as fit in 128 work-items, the kernel's
        limit and the device's local memory."""
        info = cl.kernel_work_group_info
        limit = kernel.get_work_group_info(info.WORK_GROUP_SIZE, self.device)
        multiple = kernel.get_work_group_info(info.PREFERRED_WORK_GROUP_SIZE_MULTIPLE, self.device)
        lanes = 1 << (min(32, max(TILE_N, multiple)).bit_length() - 1)
        if lanes > limit:
            raise RuntimeError(f"{self.device.name}: matmuls need {lanes} work-items per group")
        rows = max(1, min(_MATMUL_WORK_GROUP, limit) // lanes)
        rows = max(1, min(rows, self.device.local_mem_size // max(1, local_bytes_per_row)))
        return lanes, rows
