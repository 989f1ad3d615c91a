"""MetalRuntime: an UNFINISHED skeleton of bitnet.hal's DeviceRuntime over pyobjc's Metal API.

Status (no Mac was available; nothing here has run): every verb is written against pyobjc:
shared-storage buffers (CPU and GPU see the same memory on Apple silicon, so copy in and out
are memcpy after the queue drains), a blit encoder for device copies, one compute pipeline per
kernel, and a dispatch that binds the KERNELS table's buffers at indices 0.. and its scalars
with setBytes after them. The backend is bitnet.hal.gpu_backend.GpuBackend, as for OpenCL and
Vulkan. What is missing is kernels in the table's order (``IN_TABLE_ORDER`` lists the ones
written so); ``kernel()`` refuses the others naming themselves. Replay would be an
MTLIndirectCommandBuffer (tinygrad's Metal graph); ``record()`` returns None until then.
How to finish it: plugins/metal/README.md.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bitnet.hal.device_runtime import GROUPS, ITEMS, KernelSpec, Limits

from bitnet_metal.kernels_source import library_source

# KERNELS entries whose .metal entry point takes the table's buffers, then its scalars
IN_TABLE_ORDER = ("add", "relu2_mul", "silu_mul", "rmsnorm", "rope", "kv_store",
                  "attention", "attention_combine")
# GpuBackend.decode_layer's fused kernels (bitnet.hal.device_runtime.FUSED_KERNELS): none is
# written in Metal yet. fused_max_width 0 keeps GpuBackend.prepare_layer at None (op by op);
# a finisher writes these (the OpenCL decode_layer.cl is the closest model), adds them to
# IN_TABLE_ORDER and sets fused_max_width to the widest row their prologue holds.
FUSED_TO_WRITE = ("norm_qkv_i2s", "norm_qkv_tq", "rope_attention", "rmsnorm_quantize_i8",
                  "rmsnorm_quantize_q8_k", "linear_add_i2s", "linear_add_tq",
                  "norm_gate_up_i2s", "norm_gate_up_tq")
THREADS = 256  # threads per threadgroup (items and groups grids)
_SCALAR_TYPES = {"i": np.int32, "f": np.float32}


class MetalRuntime:
    """One MTLDevice with one command queue; each dispatch its own command buffer."""

    name = "metal"
    fused_max_width = 0  # no FUSED_KERNELS in Metal yet (FUSED_TO_WRITE): decode_layer not offered

    def __init__(self, mtl_device: Any, metal: Any) -> None:
        self.metal = metal
        self.device = mtl_device
        self.queue = mtl_device.newCommandQueue()
        self.submissions = 0
        self.fingerprint = f"{mtl_device.name()}|{mtl_device.registryID()}"
        self._last = None  # the last committed command buffer
        options = metal.MTLCompileOptions.new()
        options.setFastMathEnabled_(False)  # keep IEEE rounding: the contract's exact epilogues
        library, error = mtl_device.newLibraryWithSource_options_error_(library_source(), options,
                                                                        None)
        if library is None:
            raise RuntimeError(f"bitnet-metal: the Metal kernels failed to compile: {error}")
        self.library = library
        self._pipelines: dict[KernelSpec, Any] = {}
        self.limits = Limits(simd_width=32, max_work_group=1024, max_rows=1024,
                             shared_memory=int(mtl_device.maxThreadgroupMemoryLength()),
                             max_buffer=int(mtl_device.maxBufferLength()), fp64=False,
                             max_head_dim=256)

    # -- memory ------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> Any:
        if nbytes > self.limits.max_buffer:
            raise MemoryError(f"a {nbytes}-byte buffer exceeds this Metal device's "
                              f"maxBufferLength ({self.limits.max_buffer})")
        return self.device.newBufferWithLength_options_(max(4, nbytes),
                                                        self.metal.MTLResourceStorageModeShared)

    def free(self, mem: Any) -> None:
        self.synchronize()  # pyobjc releases the MTLBuffer with its last reference

    def copy_in(self, mem: Any, host: np.ndarray, offset: int = 0) -> None:
        self.synchronize()  # shared memory: wait until queued readers are done
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        view = mem.contents().as_buffer(mem.length())
        view[offset:offset + raw.size] = raw.tobytes()

    def copy_out(self, mem: Any, nbytes: int, offset: int = 0) -> np.ndarray:
        self.synchronize()
        view = mem.contents().as_buffer(mem.length())
        return np.frombuffer(bytes(view[offset:offset + nbytes]), np.uint8).copy()

    def copy(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        command = self.queue.commandBuffer()
        blit = command.blitCommandEncoder()
        blit.copyFromBuffer_sourceOffset_toBuffer_destinationOffset_size_(src, src_offset, dst,
                                                                           dst_offset, nbytes)
        blit.endEncoding()
        command.commit()
        self._last = command
        self.submissions += 1

    # -- kernels -----------------------------------------------------------------------------

    def kernel(self, spec: KernelSpec) -> Any:
        if spec.name not in IN_TABLE_ORDER:
            raise NotImplementedError(f"bitnet-metal.kernel: {spec.name} has no Metal kernel in "
                                      "the KERNELS table's order yet (plugins/metal/README.md)")
        if spec not in self._pipelines:
            function = self.library.newFunctionWithName_(spec.name)
            pipeline, error = self.device.newComputePipelineStateWithFunction_error_(function,
                                                                                    None)
            if pipeline is None:
                raise RuntimeError(f"bitnet-metal: pipeline {spec.name} failed: {error}")
            self._pipelines[spec] = (spec, pipeline)
        return self._pipelines[spec]

    def dispatch(self, kernel: Any, grid: tuple[int, ...], buffers: Sequence[Any],
                 scalars: Sequence[float]) -> None:
        spec, pipeline = kernel
        command = self.queue.commandBuffer()
        encoder = command.computeCommandEncoder()
        encoder.setComputePipelineState_(pipeline)
        for index, buf in enumerate(buffers):
            encoder.setBuffer_offset_atIndex_(buf, 0, index)
        for index, (kind, value) in enumerate(zip(spec.sig.scalars, scalars)):
            raw = np.asarray(_SCALAR_TYPES[kind](value)).tobytes()
            encoder.setBytes_length_atIndex_(raw, len(raw), len(buffers) + index)
        x, y = grid[0], grid[1]
        if spec.sig.grid == ITEMS:
            groups = (-(-x // THREADS), y, 1)
        elif spec.sig.grid == GROUPS:
            groups = (x, y, 1)
        else:
            raise NotImplementedError("bitnet-metal.dispatch: matmul grids (lanes x rows)")
        encoder.dispatchThreadgroups_threadsPerThreadgroup_(self.metal.MTLSizeMake(*groups),
                                                            self.metal.MTLSizeMake(THREADS, 1, 1))
        encoder.endEncoding()
        command.commit()
        self._last = command
        self.submissions += 1

    # -- the rest ----------------------------------------------------------------------------

    def synchronize(self) -> None:
        if self._last is not None:
            self._last.waitUntilCompleted()
            self._last = None

    def close(self) -> None:
        self.synchronize()
        self._pipelines.clear()

    def record(self) -> None:
        return None  # an MTLIndirectCommandBuffer would go here

    def info(self) -> dict[str, Any]:
        return {"device": str(self.device.name()), "status": "unfinished skeleton"}
