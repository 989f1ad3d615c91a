"""VulkanBackend: the KernelBackend contract on one Vulkan device, buffers kept on the device.

Ops only record dispatches; the batch is submitted when a result is downloaded (or on
synchronize), so a decode step is one submission: ids in, logits out.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import vulkan as vk

from bitnet.formats.device_layout import float_rows, split_q6_k_ints, ternary_as_i2s
from bitnet.hal import (
    ALL_OPS,
    FLOAT_FORMATS,
    TERNARY_FORMATS,
    Capabilities,
    KernelBackend,
    WeightFormat,
    WeightTensor,
)
from bitnet.hal import op_checks
from bitnet.hal.rope_tables import RopeTables
from bitnet_vulkan.devices import VulkanDevice
from bitnet_vulkan.runtime import Block, VulkanRuntime

TILE_N = 8  # tokens per work-group in the matmul shaders (matmul.glsl)
_MATMUL_WORK_GROUP = 128  # rows x lanes of one matmul work-group
FLOAT_FORMAT_IDS = {  # float_decode.glsl's FMT
    WeightFormat.F32: 0,
    WeightFormat.F16: 1,
    WeightFormat.BF16: 2,
    WeightFormat.Q8_0: 3,
}  # Q6_K has its own integer path (VkQ6KWeight)
ELEMENTWISE_OPS = {"add": 0, "relu2_mul": 1, "silu_mul": 2}  # elementwise.comp's OP
MAX_HEAD_DIM = 512  # attention.comp's MAX_HEAD_DIM


@dataclass
class VkArray:
    """A device buffer: f32 [n, K] activations, int32 [n] ids, or int8 scratch."""

    block: Block
    shape: tuple[int, ...]
    dtype: np.dtype
    _finalizer: Any = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


@dataclass
class VkTernaryWeight:
    format: WeightFormat
    rows: int
    cols: int
    codes: Block  # uint8 [M, K/4], I2_S interleave
    block_scales: Block | None  # TQ: f32 [M, K/256]
    tensor_scale: float  # I2_S
    out_scale: float


@dataclass
class VkFloatWeight:
    format: WeightFormat
    rows: int
    cols: int
    data: Block  # on-disk bytes [rows, row_bytes]
    row_bytes: int
    out_scale: float


@dataclass
class VkQ6KWeight:
    """A Q6_K weight split for the integer Q6_K x Q8_K dot (hal linear_float) and embed."""

    format: WeightFormat
    rows: int
    cols: int
    codes: Block  # int8 [M, K] in -32..31
    sub: Block  # int8 [M, K/16]: sub-block scales
    d: Block  # f32 [M, K/256]: block scales
    out_scale: float


VkWeight = VkTernaryWeight | VkFloatWeight | VkQ6KWeight


@dataclass
class VkKVCache:
    n_layers: int
    n_ctx: int
    width: int  # n_kv_heads * head_dim (even)
    k: Block  # f16 [n_layers, n_ctx, width]
    v: Block


class VulkanBackend(KernelBackend):
    name = "vulkan"

    def __init__(self, instance: Any, device: VulkanDevice) -> None:
        self.instance = instance
        self.vk_device = device
        self.device = device.info
        self.runtime = VulkanRuntime(instance, device.physical, device.work_group, device.fp64,
                                     device.max_buffer_range, device.int_dot)
        self._suffix = "_idot" if device.int_dot else ""
        self.capabilities = Capabilities(
            ops=ALL_OPS,
            ternary_formats=TERNARY_FORMATS,
            float_formats=FLOAT_FORMATS,
            notes=(f"work-group {device.work_group} (subgroup {device.subgroup_size})",
                   "int8 dot: " + ("OpSDot (VK_KHR_shader_integer_dot_product)" if device.int_dot
                                   else "portable packed-byte multiply-add")),
        )
        # f64 tables where the device has shaderFloat64: then rope matches the reference
        self._rope_tables = RopeTables(self._to_device,
                                       np.float64 if self.runtime.use_fp64 else np.float32)
        self._closed = False

    # -- buffers -----------------------------------------------------------------------------

    def _alloc(self, shape: tuple[int, ...], dtype: Any) -> VkArray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes == 0:
            raise ValueError(f"vulkan: cannot allocate an empty buffer of shape {shape}")
        block = self.runtime.allocate(nbytes)
        array = VkArray(block, tuple(int(s) for s in shape), dtype)
        array._finalizer = weakref.finalize(array, self._release, block)
        return array

    def _release(self, block: Block) -> None:
        if not self._closed:
            self.runtime.release(block)

    def _to_device(self, array: np.ndarray) -> Block:
        array = np.ascontiguousarray(array)
        block = self.runtime.dedicated(array.nbytes)
        self.runtime.write(block, array)
        return block

    def upload(self, array: np.ndarray) -> VkArray:
        array = np.asarray(array)
        if not ((array.dtype == np.int32 and array.ndim == 1)
                or (array.dtype == np.float32 and array.ndim == 2)):
            raise ValueError(
                f"vulkan upload takes float32 2-D or int32 1-D arrays, got {array.dtype} "
                f"{array.ndim}-D"
            )
        buf = self._alloc(array.shape, array.dtype)
        self.runtime.write(buf.block, array)
        return buf

    def download(self, buf: VkArray) -> np.ndarray:
        raw = self.runtime.read(buf.block, buf.nbytes)
        return raw.view(buf.dtype).reshape(buf.shape).copy()

    def load_weight(self, tensor: WeightTensor) -> VkWeight:
        if tensor.format in TERNARY_FORMATS:
            host = ternary_as_i2s(tensor)
            scales = None
            if host.block_scales is not None:
                scales = self._to_device(host.block_scales.astype(np.float32))
            return VkTernaryWeight(tensor.format, tensor.rows, tensor.cols,
                                   self._to_device(host.codes), scales, host.tensor_scale,
                                   float(tensor.out_scale))
        if tensor.format is WeightFormat.Q6_K:
            codes, sub, d = split_q6_k_ints(tensor)
            return VkQ6KWeight(tensor.format, tensor.rows, tensor.cols, self._to_device(codes),
                               self._to_device(sub), self._to_device(d),
                               float(tensor.out_scale))
        if tensor.format in FLOAT_FORMATS:
            rows = float_rows(tensor)
            return VkFloatWeight(tensor.format, tensor.rows, tensor.cols, self._to_device(rows),
                                 rows.shape[1], float(tensor.out_scale))
        raise ValueError(f"{tensor.name}: vulkan cannot hold {tensor.format.value}")

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int,
                       head_dim: int) -> VkKVCache:
        width = n_kv_heads * head_dim
        if width % 2:
            raise ValueError(f"vulkan KV cache rows must hold an even count, got {width}")
        nbytes = n_layers * n_ctx * width * 2
        return VkKVCache(n_layers, n_ctx, width, self.runtime.dedicated(nbytes),
                         self.runtime.dedicated(nbytes))

    # -- ops ---------------------------------------------------------------------------------

    def _matmul(self, name: str, shared_words_per_row: int, constant: int = 0,
                blocks: int = 1) -> tuple[Any, int]:
        """A matmul pipeline and its rows per work-group: lanes = the subgroup size clamped to
        [TILE_N, 32]; rows fill 128 invocations within the device's shared memory."""
        dev = self.vk_device
        lanes = 1 << (min(32, max(TILE_N, dev.subgroup_size)).bit_length() - 1)
        rows = max(1, min(_MATMUL_WORK_GROUP, dev.max_invocations) // lanes)
        rows = min(rows, dev.max_rows, dev.shared_memory // (4 * shared_words_per_row))
        if rows < 1:
            raise ValueError(f"vulkan {name}: one row needs {4 * shared_words_per_row} bytes of "
                             f"shared memory, the device has {dev.shared_memory}")
        return self.runtime.pipeline(name, constant, lanes, rows, blocks), rows

    def _groups(self, count: int) -> int:
        return -(-count // self.runtime.work_group)

    def embed(self, table: VkFloatWeight | VkQ6KWeight, token_ids: VkArray) -> VkArray:
        if not isinstance(table, (VkFloatWeight, VkQ6KWeight)):
            raise TypeError(f"vulkan embed needs a float-format table, got {table.format.value}")
        n = token_ids.shape[0]
        out = self._alloc((n, table.cols), np.float32)
        if isinstance(table, VkQ6KWeight):
            self.runtime.dispatch(self.runtime.pipeline("embed_q6k"),
                                  [table.codes, table.sub, table.d, token_ids.block, out.block],
                                  (table.cols,), (self._groups(table.cols), n))
            return out
        pipe = self.runtime.pipeline("embed", FLOAT_FORMAT_IDS[table.format])
        self.runtime.dispatch(pipe, [table.data, token_ids.block, out.block],
                              (table.row_bytes, table.cols), (self._groups(table.cols), n))
        return out

    def rmsnorm(self, x: VkArray, weight: VkArray, eps: float) -> VkArray:
        n, k = op_checks.norm_input("vulkan", x, weight)
        out = self._alloc((n, k), np.float32)
        pipe = self.runtime.pipeline("rmsnorm_f64" if self.runtime.use_fp64 else "rmsnorm")
        self.runtime.dispatch(pipe, [x.block, weight.block, out.block], (k, eps), (n, 1))
        return out

    def linear_ternary(self, w: VkTernaryWeight, x: VkArray) -> VkArray:
        if not isinstance(w, VkTernaryWeight):
            raise TypeError(f"vulkan linear_ternary got a {w.format.value} weight")
        n, k = op_checks.matmul_input("vulkan", "linear_ternary", x, w.cols)
        q = self._alloc((n, k), np.int8)
        out = self._alloc((n, w.rows), np.float32)
        tiles = -(-n // TILE_N)
        if w.format is WeightFormat.I2_S:
            scales = self._alloc((n,), np.float32)
            self.runtime.dispatch(self.runtime.pipeline("quantize_i8"),
                                  [x.block, q.block, scales.block], (k,), (n, 1))
            pipe, rows = self._matmul("linear_i2s" + self._suffix, TILE_N * 32)
            self.runtime.dispatch(pipe, [w.codes, q.block, scales.block, out.block],
                                  (k, n, w.rows, w.tensor_scale, w.out_scale),
                                  (-(-w.rows // rows), tiles))
            return out
        nb = k // 256
        act_d = self._quantize_q8k(x, q)
        pipe, rows = self._matmul("linear_tq" + self._suffix, TILE_N * nb, blocks=nb)
        self.runtime.dispatch(pipe, [w.codes, w.block_scales, q.block, act_d.block, out.block],
                              (k, n, w.rows, w.out_scale), (-(-w.rows // rows), tiles))
        return out

    def _quantize_q8k(self, x: VkArray, q: VkArray) -> VkArray:
        """x f32 [n, K] -> q int8 [n, K] (written in place) and the returned d f32 [n, K/256]."""
        n, k = x.shape
        nb = k // 256
        act_d = self._alloc((n, nb), np.float32)
        self.runtime.dispatch(self.runtime.pipeline("quantize_q8k"),
                              [x.block, q.block, act_d.block], (k,), (nb, n))
        return act_d

    def _linear_q6k(self, w: VkQ6KWeight, x: VkArray) -> VkArray:
        """Q6_K x Q8_K as llama.cpp (hal KernelBackend.linear_float)."""
        n, k = op_checks.matmul_input("vulkan", "linear_float", x, w.cols)
        q = self._alloc((n, k), np.int8)
        act_d = self._quantize_q8k(x, q)
        out = self._alloc((n, w.rows), np.float32)
        nb = k // 256
        pipe, rows = self._matmul("linear_q6k" + self._suffix, TILE_N * nb, blocks=nb)
        self.runtime.dispatch(pipe, [w.codes, w.sub, w.d, q.block, act_d.block, out.block],
                              (k, n, w.rows, w.out_scale), (-(-w.rows // rows), -(-n // TILE_N)))
        return out

    def linear_float(self, w: VkFloatWeight | VkQ6KWeight, x: VkArray) -> VkArray:
        if isinstance(w, VkQ6KWeight):
            return self._linear_q6k(w, x)
        if not isinstance(w, VkFloatWeight):
            raise TypeError(f"vulkan linear_float got a {w.format.value} weight")
        n, k = op_checks.matmul_input("vulkan", "linear_float", x, w.cols)
        out = self._alloc((n, w.rows), np.float32)
        pipe, rows = self._matmul("linear_float", TILE_N * 32, FLOAT_FORMAT_IDS[w.format])
        self.runtime.dispatch(pipe, [w.data, x.block, out.block],
                              (w.row_bytes, k, n, w.rows, w.out_scale),
                              (-(-w.rows // rows), -(-n // TILE_N)))
        return out

    def rope(self, x: VkArray, pos: int, n_heads: int, head_dim: int, theta: float) -> VkArray:
        n, width = op_checks.rope_input("vulkan", x, n_heads, head_dim)
        cos_t, sin_t = self._rope_tables.get(theta, head_dim, pos + n)
        out = self._alloc((n, width), np.float32)
        pipe = self.runtime.pipeline("rope_f64" if self.runtime.use_fp64 else "rope")
        self.runtime.dispatch(pipe, [x.block, cos_t, sin_t, out.block],
                              (n_heads, head_dim, pos), (self._groups(width // 2), n))
        return out

    def attention(self, q: VkArray, k: VkArray, v: VkArray, cache: VkKVCache, layer: int,
                  pos: int, n_heads: int, n_kv_heads: int, head_dim: int) -> VkArray:
        n = op_checks.attention_fits("vulkan", q, k, v, cache, layer, pos, n_heads, n_kv_heads,
                                     head_dim)
        if head_dim > MAX_HEAD_DIM:
            raise ValueError(f"vulkan attention: head_dim {head_dim} > {MAX_HEAD_DIM}")
        width = n_kv_heads * head_dim
        q_width = n_heads * head_dim
        self.runtime.dispatch(self.runtime.pipeline("kv_store"),
                              [k.block, v.block, cache.k, cache.v],
                              (layer, pos, cache.n_ctx, width), (self._groups(width // 2), n))
        scores = self._alloc((n, n_heads, pos + n), np.float32)
        out = self._alloc((n, q_width), np.float32)
        self.runtime.dispatch(self.runtime.pipeline("attention"),
                              [q.block, cache.k, cache.v, scores.block, out.block],
                              (layer, pos, cache.n_ctx, n_heads, n_kv_heads, head_dim,
                               float(np.float32(1 / np.sqrt(head_dim)))),
                              (n_heads, n))
        return out

    def _elementwise(self, name: str, a: VkArray, b: VkArray) -> VkArray:
        op_checks.same_shapes("vulkan", name, a, b)
        out = self._alloc(a.shape, np.float32)
        count = a.shape[0] * a.shape[1]
        self.runtime.dispatch(self.runtime.pipeline("elementwise", ELEMENTWISE_OPS[name]),
                              [a.block, b.block, out.block], (count,), (self._groups(count), 1))
        return out

    def relu2_mul(self, gate: VkArray, up: VkArray) -> VkArray:
        return self._elementwise("relu2_mul", gate, up)

    def silu_mul(self, gate: VkArray, up: VkArray) -> VkArray:
        return self._elementwise("silu_mul", gate, up)

    def add(self, a: VkArray, b: VkArray) -> VkArray:
        return self._elementwise("add", a, b)

    def slice_rows(self, x: VkArray, start: int, stop: int) -> VkArray:
        _, k = op_checks.row_slice("vulkan", x, start, stop)
        out = self._alloc((stop - start, k), np.float32)
        self.runtime.copy(x.block, start * k * 4, out.block, (stop - start) * k * 4)
        return out

    def concat_rows(self, parts: list[VkArray]) -> VkArray:
        k = op_checks.concat_width("vulkan", parts)
        out = self._alloc((sum(p.shape[0] for p in parts), k), np.float32)
        row = 0
        for part in parts:
            self.runtime.copy(part.block, 0, out.block, part.shape[0] * k * 4,
                              dst_offset=row * k * 4)
            row += part.shape[0]
        return out

    def synchronize(self) -> None:
        self.runtime.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.runtime.close()
        vk.vkDestroyInstance(self.instance, None)

    def info(self) -> dict[str, Any]:
        return {
            "device": self.device.name,
            "work_group": self.vk_device.work_group,
            "subgroup": self.vk_device.subgroup_size,
            "fp64_rmsnorm_rope": self.runtime.use_fp64,
            "int_dot": self.vk_device.int_dot,
            "int_dot_accelerated": self.vk_device.int_dot_accelerated,
            "tile_tokens": TILE_N,
        }
