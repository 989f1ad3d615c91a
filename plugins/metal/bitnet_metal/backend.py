"""MetalBackend: an UNFINISHED skeleton of the KernelBackend contract on pyobjc's Metal API.

Status (no Mac was available; nothing here has run):
- written against pyobjc: library build from kernels/*.metal, pipelines, shared-storage buffers,
  upload / download, dispatch, and the ops add, relu2_mul, silu_mul, rmsnorm, rope, embed (F16);
- NotImplementedError: linear_ternary, linear_float, attention, kv_cache_alloc, weights other
  than F16. Their kernels exist (linear_ternary.metal, attention.metal); what is missing is the
  host side: weight repacking (the splits are in bitnet.hal.device_layout, used as
  bitnet-cuda's layout.py uses them), scratch buffers
  for the activation quantizers, and the KV cache allocation.

Capabilities list only the wired ops, so the registry never selects this backend for a model.
How to finish it: plugins/metal/README.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bitnet.hal import op_checks
from bitnet.hal.backend import KernelBackend, WeightTensor
from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.formats import WeightFormat
from bitnet.hal.ops import Op

from bitnet_metal.kernels_source import kernel_names, library_source

WIRED_OPS = frozenset({Op.ADD, Op.RELU2_MUL, Op.SILU_MUL, Op.RMSNORM, Op.ROPE, Op.EMBED})


class MetalBuffer:
    """An MTLBuffer in shared storage (CPU and GPU see the same memory on Apple silicon)."""

    __slots__ = ("shape", "dtype", "mtl")

    def __init__(self, shape: tuple[int, ...], dtype: Any, mtl: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.mtl = mtl

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class MetalWeight:
    """A weight on the device; only F16 tables so far."""

    def __init__(self, tensor: WeightTensor, buffer: MetalBuffer) -> None:
        self.format = tensor.format
        self.rows = tensor.rows
        self.cols = tensor.cols
        self.out_scale = float(tensor.out_scale)
        self.buffer = buffer


class MetalBackend(KernelBackend):
    name = "metal"

    def __init__(self, info: DeviceInfo, mtl_device: Any, metal: Any) -> None:
        self.device = info
        self._metal = metal
        self._dev = mtl_device
        self._queue = mtl_device.newCommandQueue()
        self._last = None  # the last committed command buffer
        options = metal.MTLCompileOptions.new()
        options.setFastMathEnabled_(False)  # keep IEEE rounding: the contract's exact epilogues
        library, error = mtl_device.newLibraryWithSource_options_error_(library_source(), options,
                                                                        None)
        if library is None:
            raise RuntimeError(f"bitnet-metal: the Metal kernels failed to compile: {error}")
        self._pipelines = {}
        for name in kernel_names(library_source()):
            function = library.newFunctionWithName_(name)
            pipeline, error = mtl_device.newComputePipelineStateWithFunction_error_(function, None)
            if pipeline is None:
                raise RuntimeError(f"bitnet-metal: pipeline {name} failed: {error}")
            self._pipelines[name] = pipeline
        self.capabilities = Capabilities(
            ops=WIRED_OPS,
            ternary_formats=frozenset(),
            float_formats=frozenset({WeightFormat.F16}),
            notes=("unfinished skeleton: never run on a Mac",),
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _new_buffer(self, shape: tuple[int, ...], dtype: Any) -> MetalBuffer:
        nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        mtl = self._dev.newBufferWithLength_options_(nbytes,
                                                     self._metal.MTLResourceStorageModeShared)
        return MetalBuffer(shape, dtype, mtl)

    def _dispatch(self, kernel: str, buffers: list[Any], scalars: list[np.generic],
                  groups: tuple[int, int, int], threads: tuple[int, int, int]) -> None:
        """Encode one kernel: buffers at indices 0.., then each scalar with setBytes."""
        command = self._queue.commandBuffer()
        encoder = command.computeCommandEncoder()
        encoder.setComputePipelineState_(self._pipelines[kernel])
        for index, buf in enumerate(buffers):
            encoder.setBuffer_offset_atIndex_(buf.mtl, 0, index)
        for offset, value in enumerate(scalars):
            raw = np.asarray(value).tobytes()
            encoder.setBytes_length_atIndex_(raw, len(raw), len(buffers) + offset)
        encoder.dispatchThreadgroups_threadsPerThreadgroup_(self._metal.MTLSizeMake(*groups),
                                                            self._metal.MTLSizeMake(*threads))
        encoder.endEncoding()
        command.commit()
        self._last = command

    # -- buffers -----------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> MetalBuffer:
        array = np.ascontiguousarray(array)
        if not ((array.dtype == np.float32 and array.ndim == 2)
                or (array.dtype == np.int32 and array.ndim == 1)):
            raise ValueError(f"bitnet-metal.upload: expects float32 2-D or int32 1-D, got "
                             f"{array.dtype} {array.shape}")
        mtl = self._dev.newBufferWithBytes_length_options_(
            array.tobytes(), max(1, array.nbytes), self._metal.MTLResourceStorageModeShared)
        return MetalBuffer(array.shape, array.dtype, mtl)

    def download(self, buf: MetalBuffer) -> np.ndarray:
        self.synchronize()
        raw = buf.mtl.contents().as_buffer(buf.nbytes)
        return np.frombuffer(raw, dtype=buf.dtype).reshape(buf.shape).copy()

    def load_weight(self, tensor: WeightTensor) -> MetalWeight:
        if tensor.format is not WeightFormat.F16:
            raise NotImplementedError(
                f"bitnet-metal.load_weight: {tensor.format.value} is not wired yet (split it with "
                "bitnet.hal.device_layout as bitnet-cuda's layout.py does: I2_S codes as on "
                "disk, TQ codes + f32 block scales)")
        words = np.ascontiguousarray(tensor.data).reshape(-1)
        mtl = self._dev.newBufferWithBytes_length_options_(
            words.tobytes(), words.nbytes, self._metal.MTLResourceStorageModeShared)
        return MetalWeight(tensor, MetalBuffer((tensor.rows, tensor.cols), np.float16, mtl))

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int, head_dim: int) -> Any:
        raise NotImplementedError("bitnet-metal.kv_cache_alloc: allocate two f16 buffers "
                                  "[n_layers, n_ctx, n_kv_heads * head_dim] (not done)")

    # -- ops ---------------------------------------------------------------------------------

    def embed(self, table: MetalWeight, token_ids: MetalBuffer) -> MetalBuffer:
        n = token_ids.shape[0]
        out = self._new_buffer((n, table.cols), np.float32)
        self._dispatch("embed_f16", [table.buffer, token_ids, out], [np.int32(table.cols)],
                       (n, 1, 1), (256, 1, 1))
        return out

    def rmsnorm(self, x: MetalBuffer, weight: MetalBuffer, eps: float) -> MetalBuffer:
        n, k = op_checks.norm_input("bitnet-metal", x, weight)
        out = self._new_buffer((n, k), np.float32)
        self._dispatch("rmsnorm", [x, weight, out], [np.int32(k), np.float32(eps)], (n, 1, 1),
                       (256, 1, 1))
        return out

    def rope(self, x: MetalBuffer, pos: int, n_heads: int, head_dim: int,
             theta: float) -> MetalBuffer:
        n, _ = op_checks.rope_input("bitnet-metal", x, n_heads, head_dim)
        out = self._new_buffer(x.shape, np.float32)
        scalars = [np.int32(n_heads), np.int32(head_dim), np.int32(pos), np.float32(theta)]
        self._dispatch("rope_neox", [x, out], scalars, (n_heads, n, 1), (64, 1, 1))
        return out

    def linear_ternary(self, w: Any, x: MetalBuffer) -> MetalBuffer:
        raise NotImplementedError("bitnet-metal.linear_ternary: kernels quantize_per_token_i8, "
                                  "quantize_q8_k, linear_i2s and linear_tq exist; the host side "
                                  "(weights, scratch, dispatch) is not written")

    def linear_float(self, w: Any, x: MetalBuffer) -> MetalBuffer:
        raise NotImplementedError("bitnet-metal.linear_float: no kernel yet (port "
                                  "bitnet-cuda's linear_float.cu)")

    def attention(self, q: MetalBuffer, k: MetalBuffer, v: MetalBuffer, cache: Any, layer: int,
                  pos: int, n_heads: int, n_kv_heads: int, head_dim: int) -> MetalBuffer:
        raise NotImplementedError("bitnet-metal.attention: kernels kv_store and attention exist; "
                                  "the KV cache and the dispatch are not written")

    def relu2_mul(self, gate: MetalBuffer, up: MetalBuffer) -> MetalBuffer:
        return self._elementwise("relu2_mul", gate, up)

    def silu_mul(self, gate: MetalBuffer, up: MetalBuffer) -> MetalBuffer:
        return self._elementwise("silu_mul", gate, up)

    def add(self, a: MetalBuffer, b: MetalBuffer) -> MetalBuffer:
        return self._elementwise("add", a, b)

    def _elementwise(self, kernel: str, a: MetalBuffer, b: MetalBuffer) -> MetalBuffer:
        op_checks.same_shapes("bitnet-metal", kernel, a, b)
        out = self._new_buffer(a.shape, np.float32)
        count = a.shape[0] * a.shape[1]
        self._dispatch(kernel, [a, b, out], [np.int32(count)], (-(-count // 256), 1, 1),
                       (256, 1, 1))
        return out

    def slice_rows(self, x: MetalBuffer, start: int, stop: int) -> MetalBuffer:
        raise NotImplementedError("bitnet-metal.slice_rows: a blit encoder copy (not written)")

    def concat_rows(self, parts: list[MetalBuffer]) -> MetalBuffer:
        raise NotImplementedError("bitnet-metal.concat_rows: blit encoder copies (not written)")

    def attention_rows(self, q: MetalBuffer, k: MetalBuffer, v: MetalBuffer, caches: list[Any],
                       layer: int, positions: list[int], n_heads: int, n_kv_heads: int,
                       head_dim: int, theta: float) -> MetalBuffer:
        # optional (the server's batched decode): the base class composes it from rope,
        # attention, slice_rows and concat_rows once those work; one dispatch over the B rows
        # (a grid of rows x heads, each row's cache and position in a small buffer) is the
        # faster version to write after them
        if Op.ATTENTION not in self.capabilities.ops:
            raise NotImplementedError("bitnet-metal.attention_rows: needs attention, slice_rows "
                                      "and concat_rows (not written)")
        return super().attention_rows(q, k, v, caches, layer, positions, n_heads, n_kv_heads,
                                      head_dim, theta)

    def synchronize(self) -> None:
        if self._last is not None:
            self._last.waitUntilCompleted()
            self._last = None
