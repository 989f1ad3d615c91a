"""OpenCLRuntime: bitnet.hal's DeviceRuntime over PyOpenCL (one context, one in-order queue).

Kernels are the ``kernels/*.cl`` files, built on first use with common.cl prepended and kept on
disk by device fingerprint (``KernelCache``: program binaries). Arguments are bound in the order
the kernel declares them: its ``__global`` parameters take the dispatch's buffers in order, its
scalars the dispatch's scalars, and its ``__local`` parameters the sizes ``_local_bytes`` gives.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterator, Sequence

import numpy as np
import pyopencl as cl

from bitnet.hal.device_runtime import (ATTENTION_SPLIT, FUSED_KERNELS, GROUPS, ITEMS,
                                       REDUCE_LANES, KernelCache, KernelSpec, Limits)
from bitnet_opencl.devices import CL_DEVICE_INTEGER_DOT_PRODUCT_CAPABILITIES_KHR, raw_device_info

TILE_N = 8  # tokens per work-group in the matmuls (kernels' TILE_N; GpuBackend's)
MAX_WORK_GROUP = 256  # reducing kernels' work-group: at most this
MIN_WORK_GROUP = 16
ITEMS_MULTIPLE = 64  # items grids are rounded up to this; the driver picks the work-group
MAX_HEAD_DIM = 512

# where each kernel lives (file, entry point); embed and linear_float take DECODE per format
SOURCES = {
    "embed": ("linear_float.cl", "embed"),
    "embed_q6_k": ("q6_k.cl", "embed_q6_k"),
    "rmsnorm": ("rmsnorm.cl", "rmsnorm"),
    "quantize_per_token_i8": ("quantize.cl", "quantize_per_token_i8"),
    "quantize_q8_k": ("quantize.cl", "quantize_q8_k"),
    "linear_i2s": ("linear_ternary.cl", "linear_i2s"),
    "linear_tq": ("linear_ternary.cl", "linear_tq"),
    "linear_q6_k": ("q6_k.cl", "linear_q6_k"),
    "linear_float": ("linear_float.cl", "linear_float"),
    "rope": ("rope.cl", "rope"),
    "kv_store": ("attention.cl", "kv_store"),
    "attention": ("attention.cl", "attention"),
    "attention_combine": ("attention.cl", "attention_combine"),
    "add": ("elementwise.cl", "add"),
    "relu2_mul": ("elementwise.cl", "relu2_mul"),
    "silu_mul": ("elementwise.cl", "silu_mul"),
    **{name: ("decode_layer.cl", name) for name in FUSED_KERNELS},
}
# programs built from more than their own file (after common.cl): decode_layer.cl calls
# attention.cl's attend
PROGRAM_FILES = {"decode_layer.cl": ("attention.cl", "decode_layer.cl")}
# every program's defines: the matmul tile, attention's split-K run length
BUILD_DEFINES = (f"TILE_N={TILE_N}", f"ATTENTION_SPLIT={ATTENTION_SPLIT}")
FUSED_MAX_WIDTH = 8192  # the widest row decode_layer.cl's prologues hold in local memory
FUSED_LOCAL_MEMORY = 48 * 1024  # ... on a device with at least this much


_GLOBAL = cl.kernel_arg_address_qualifier.GLOBAL
_LOCAL = cl.kernel_arg_address_qualifier.LOCAL
_SCALAR_TYPES = {"i": np.int32, "f": np.float32}


def kernel_source(file: str) -> str:
    return (resources.files("bitnet_opencl") / "kernels" / file).read_text()


def program_source(file: str) -> str:
    """A program's OpenCL C: common.cl, then its file (or PROGRAM_FILES' files)."""
    return "\n".join([kernel_source("common.cl"),
                      *map(kernel_source, PROGRAM_FILES.get(file, (file,)))])


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


@dataclass
class ClKernel:
    spec: KernelSpec
    program: Any
    entry: str
    kernel: Any
    qualifiers: tuple[int, ...]  # each parameter's address qualifier
    work_group: int  # GROUPS kernels' work-group size


class OpenCLRuntime:
    """One OpenCL device: memory, kernels and an in-order queue."""

    name = "opencl"

    def __init__(self, cl_device: Any) -> None:
        self.device = cl_device
        self.context = cl.Context([cl_device])
        self.queue = cl.CommandQueue(self.context)
        self.int_dot = has_int_dot(cl_device)
        self.fp64 = "cl_khr_fp64" in cl_device.extensions.split()
        self.submissions = 0
        self.fingerprint = "|".join([cl_device.name.strip(), cl_device.version.strip(),
                                     cl_device.driver_version.strip(),
                                     cl_device.platform.version.strip(), cl.VERSION_TEXT])
        self._cache = KernelCache("opencl", self.fingerprint)
        self._programs: dict[tuple[str, str], Any] = {}
        self._kernels: dict[KernelSpec, ClKernel] = {}
        self._capture: OpenCLRecording | None = None
        simd = self.kernel(KernelSpec("add")).kernel.get_work_group_info(
            cl.kernel_work_group_info.PREFERRED_WORK_GROUP_SIZE_MULTIPLE, cl_device)
        self.limits = Limits(simd_width=int(simd),
                             max_work_group=int(cl_device.max_work_group_size),
                             max_rows=int(cl_device.max_work_item_sizes[1]),
                             shared_memory=int(cl_device.local_mem_size),
                             max_buffer=int(cl_device.max_mem_alloc_size), fp64=self.fp64,
                             max_head_dim=MAX_HEAD_DIM)
        # GpuBackend.decode_layer's fused kernels (decode_layer.cl), where local memory holds
        # their prologue
        self.fused_max_width = (FUSED_MAX_WIDTH if cl_device.local_mem_size >= FUSED_LOCAL_MEMORY
                                else 0)

    # -- memory ------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> Any:
        if nbytes > self.device.max_mem_alloc_size:
            raise MemoryError(f"a {nbytes}-byte buffer exceeds this OpenCL device's "
                              f"CL_DEVICE_MAX_MEM_ALLOC_SIZE ({self.device.max_mem_alloc_size})")
        return cl.Buffer(self.context, cl.mem_flags.READ_WRITE, max(4, nbytes))

    def free(self, mem: Any) -> None:
        mem.release()

    def copy_in(self, mem: Any, host: np.ndarray, offset: int = 0) -> None:
        # not blocking: the in-order queue runs it before later work, and PyOpenCL's event
        # keeps the host array alive until it has been read (a blocking copy would wait for
        # every kernel queued before it, e.g. the step's first layers before its position)
        cl.enqueue_copy(self.queue, mem, np.ascontiguousarray(host), dst_offset=offset,
                        is_blocking=False)
        self.submissions += 1

    def copy_out(self, mem: Any, nbytes: int, offset: int = 0) -> np.ndarray:
        if self._capture is not None:
            raise RuntimeError("a read waits for the device: it cannot be recorded")
        out = np.empty(nbytes, dtype=np.uint8)
        cl.enqueue_copy(self.queue, out, mem, src_offset=offset)
        self.submissions += 1
        return out

    def copy(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        if self._capture is not None:
            self._capture.launches.append(("copy", (src, src_offset, dst, dst_offset, nbytes)))
            return
        cl.enqueue_copy(self.queue, dst, src, byte_count=nbytes, src_offset=src_offset,
                        dst_offset=dst_offset)
        self.submissions += 1

    # -- kernels -----------------------------------------------------------------------------

    def kernel(self, spec: KernelSpec) -> ClKernel:
        found = self._kernels.get(spec)
        if found is None:
            file, entry = SOURCES[spec.name]
            define = f"DECODE=decode_{spec.fmt}" if spec.fmt else ""
            kernel = cl.Kernel(self._program(file, define), entry)
            qualifiers = tuple(kernel.get_arg_info(i, cl.kernel_arg_info.ADDRESS_QUALIFIER)
                               for i in range(kernel.num_args))
            found = ClKernel(spec, self._program(file, define), entry, kernel, qualifiers,
                             self._work_group(kernel))
            self._kernels[spec] = found
        return found

    def _program(self, file: str, define: str) -> Any:
        key = (file, define)
        if key not in self._programs:
            options = [*(f"-D{d}" for d in BUILD_DEFINES), "-cl-kernel-arg-info"]
            options += [f"-D{define}"] if define else []
            options += ["-DUSE_INT_DOT"] if self.int_dot else []
            options += ["-DUSE_FP64"] if self.fp64 else []
            source = program_source(file)
            cache_key = hashlib.sha256((source + "\0" + " ".join(options)).encode()).hexdigest()
            binary = self._cache.get(cache_key, lambda: self._build(source, options, file))
            try:
                program = cl.Program(self.context, [self.device], [binary]).build(options=options)
            except cl.Error:  # a stale or foreign binary: build from source, replace it
                binary = self._build(source, options, file)
                self._cache.put(cache_key, binary)
                program = cl.Program(self.context, [self.device], [binary]).build(options=options)
            self._programs[key] = program
        return self._programs[key]

    def _build(self, source: str, options: list[str], file: str) -> bytes:
        try:
            program = cl.Program(self.context, source).build(options=options)
        except cl.RuntimeError as exc:
            raise RuntimeError(f"OpenCL build of {file} {options} failed: {exc}") from exc
        return program.binaries[0]

    def _work_group(self, kernel: Any) -> int:
        """A power-of-two work-group size for a reducing kernel, from the device's answers:
        four times the preferred multiple (the SIMD/warp width), capped by the kernel's limit."""
        info = cl.kernel_work_group_info
        limit = kernel.get_work_group_info(info.WORK_GROUP_SIZE, self.device)
        multiple = kernel.get_work_group_info(info.PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
                                              self.device)
        target = min(MAX_WORK_GROUP, limit, max(MIN_WORK_GROUP, 4 * multiple))
        size = 1 << (target.bit_length() - 1)
        if size < MIN_WORK_GROUP:
            raise RuntimeError(f"{self.device.name}: work-groups of {MIN_WORK_GROUP} "
                               f"work-items needed, the device allows {limit}")
        return size

    def _local_bytes(self, spec: KernelSpec, wg: int, scalars: Sequence[float]) -> list[int]:
        """Bytes of each __local parameter of spec's kernel, in order."""
        wide = (8 if self.fp64 else 4) * REDUCE_LANES  # acc_t: double where the device has it
        narrow = 4 * REDUCE_LANES
        name = spec.name
        if name == "rmsnorm":
            return [wide]
        if name == "quantize_per_token_i8":
            return [4 * wg]
        if name == "quantize_q8_k":
            return [4 * wg, 4 * wg]
        if name == "attention":  # scratch, and q in f16 (head_dim = scalars[4])
            return [narrow, 4 * int(scalars[4])]
        if name == "attention_combine":
            return []
        if name == "rope_attention":  # scratch, q, the fresh key and value (head_dim)
            return [narrow] + [4 * int(scalars[4])] * 3
        if name.startswith("rmsnorm_quantize"):
            return [wide, narrow]
        # matmuls: int32 sums of TILE_N tokens a block (TQ, Q6_K) or a lane (I2_S, float)
        per_row = spec.blocks if name.endswith(("_tq", "q6_k")) else spec.lanes
        sums = spec.rows * 4 * TILE_N * per_row
        if name.startswith("norm_"):  # the prologue: int8 row, its scales, the norm's scratch
            k = int(scalars[0])
            return [-(-k // 16) * 16, 4 * max(1, k // 256), wide, narrow, sums]
        return [sums]

    def dispatch(self, kernel: ClKernel, grid: tuple[int, ...], buffers: Sequence[Any],
                 scalars: Sequence[float]) -> None:
        spec = kernel.spec
        sig = spec.sig
        local_bytes = iter(self._local_bytes(spec, kernel.work_group, scalars))
        buffer_args = iter(buffers)
        scalar_args = iter(_SCALAR_TYPES[t](v) for t, v in zip(sig.scalars, scalars))
        args = []
        for qualifier in kernel.qualifiers:
            if qualifier == _GLOBAL:
                args.append(next(buffer_args))
            elif qualifier == _LOCAL:
                args.append(cl.LocalMemory(next(local_bytes)))
            else:
                args.append(next(scalar_args))
        target = kernel.kernel
        if self._capture is not None:  # a kernel object of its own: arguments set once
            target = cl.Kernel(kernel.program, kernel.entry)
        target.set_args(*args)
        x, y = grid[0], grid[1]
        if sig.grid == ITEMS:
            global_size, local_size = (-(-x // ITEMS_MULTIPLE) * ITEMS_MULTIPLE, y), None
        elif sig.grid == GROUPS:
            wg = kernel.work_group
            global_size, local_size = (wg * x, y), (wg, 1)
        else:  # MATMUL: (row blocks, token tiles) of lanes x rows
            global_size = (spec.lanes, x * spec.rows, y)
            local_size = (spec.lanes, spec.rows, 1)
        if self._capture is not None:
            self._capture.launches.append(("kernel", (target, global_size, local_size)))
            return
        cl.enqueue_nd_range_kernel(self.queue, target, global_size, local_size)
        self.submissions += 1

    # -- the rest ----------------------------------------------------------------------------

    def synchronize(self) -> None:
        self.queue.finish()

    def close(self) -> None:
        self.queue.finish()
        self._kernels.clear()
        self._programs.clear()

    @contextmanager
    def record(self) -> Iterator["OpenCLRecording"]:
        """Capture the dispatches and device copies queued inside as a prepared enqueue list:
        each kernel gets a kernel object of its own with its arguments set once, so a replay
        only enqueues (one host submission a dispatch: PyOpenCL has no command buffers).
        Host writes inside run at once (they are the recording's constant inputs)."""
        recording = OpenCLRecording(self)
        self._capture = recording
        try:
            yield recording
        finally:
            self._capture = None

    def info(self) -> dict[str, Any]:
        return {
            "device": self.device.name.strip(),
            "platform": self.device.platform.name.strip(),
            "int_dot": self.int_dot,
            "fp16": "cl_khr_fp16" in self.device.extensions.split(),
        }

    def notes(self) -> tuple[str, ...]:
        return ("int8 dot: " + ("cl_khr_integer_dot_product" if self.int_dot
                                else "portable char4 fallback"),)



@dataclass
class OpenCLRecording:
    """A prepared enqueue list: (kind, arguments) of each captured kernel or copy."""

    runtime: OpenCLRuntime
    launches: list[tuple[str, tuple]] = field(default_factory=list)

    def replay(self) -> None:
        queue = self.runtime.queue
        for kind, args in self.launches:
            if kind == "kernel":
                cl.enqueue_nd_range_kernel(queue, *args)
            else:
                src, src_offset, dst, dst_offset, nbytes = args
                cl.enqueue_copy(queue, dst, src, byte_count=nbytes, src_offset=src_offset,
                                dst_offset=dst_offset)
        self.runtime.submissions += len(self.launches)
