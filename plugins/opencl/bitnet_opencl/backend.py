"""OpenCLBackend: the KernelBackend contract on one OpenCL device, buffers kept on the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.tools as cl_tools

from bitnet.formats.device_layout import float_rows, split_q6_k_ints, ternary_as_i2s
from bitnet.hal import (
    ALL_OPS,
    FLOAT_FORMATS,
    TERNARY_FORMATS,
    Capabilities,
    DeviceInfo,
    KernelBackend,
    WeightFormat,
    WeightTensor,
)
from bitnet.hal import op_checks
from bitnet.hal.rope_tables import RopeTables
from bitnet_opencl.programs import TILE_N, Programs


@dataclass
class ClArray:
    """A device buffer: f32 [n, K] activations or int32 [n] token ids."""

    mem: Any
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class ClTernaryWeight:
    format: WeightFormat
    rows: int
    cols: int
    codes: Any  # uint8 [M, K/4], I2_S interleave (bitnet.formats.device_layout)
    block_scales: Any | None  # TQ: f32 [M, K/256]
    tensor_scale: float  # I2_S
    out_scale: float


@dataclass
class ClFloatWeight:
    format: WeightFormat
    rows: int
    cols: int
    data: Any  # on-disk bytes [rows, row_bytes]
    row_bytes: int
    out_scale: float


@dataclass
class ClQ6KWeight:
    """A Q6_K weight split for the integer Q6_K x Q8_K dot (hal linear_float) and embed."""

    format: WeightFormat
    rows: int
    cols: int
    codes: Any  # int8 [M, K] in -32..31
    sub: Any  # int8 [M, K/16]: sub-block scales
    d: Any  # f32 [M, K/256]: block scales
    out_scale: float


@dataclass
class ClKVCache:
    n_layers: int
    n_ctx: int
    width: int  # n_kv_heads * head_dim
    k: Any  # f16 [n_layers, n_ctx, width]
    v: Any


ClWeight = ClTernaryWeight | ClFloatWeight | ClQ6KWeight


def _i32(value: int) -> np.int32:
    return np.int32(value)


def _f32(value: float) -> np.float32:
    return np.float32(value)


class OpenCLBackend(KernelBackend):
    name = "opencl"

    def __init__(self, device: DeviceInfo, cl_device: Any) -> None:
        self.device = device
        self.cl_device = cl_device
        self.context = cl.Context([cl_device])
        self.queue = cl.CommandQueue(self.context)
        self.pool = cl_tools.MemoryPool(cl_tools.ImmediateAllocator(self.queue))
        self.programs = Programs(self.context, cl_device)
        self.capabilities = Capabilities(
            ops=ALL_OPS,
            ternary_formats=TERNARY_FORMATS,
            float_formats=FLOAT_FORMATS,
            notes=("int8 dot: " + ("cl_khr_integer_dot_product" if self.programs.int_dot
                                   else "portable char4 fallback"),),
        )
        # f64 tables where the device has fp64: then rope matches the reference bit for bit
        self._rope_tables = RopeTables(self._to_device,
                                       np.float64 if self.programs.fp64 else np.float32)

    # -- buffers -----------------------------------------------------------------------------

    def _alloc(self, shape: tuple[int, ...], dtype: Any) -> ClArray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes == 0:
            raise ValueError(f"opencl: cannot allocate an empty buffer of shape {shape}")
        return ClArray(self.pool.allocate(nbytes), tuple(int(s) for s in shape), dtype)

    def _to_device(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array)
        if array.nbytes > self.cl_device.max_mem_alloc_size:
            raise MemoryError(f"a {array.nbytes}-byte weight exceeds this OpenCL device's "
                              f"CL_DEVICE_MAX_MEM_ALLOC_SIZE ({self.cl_device.max_mem_alloc_size})")
        mem = cl.Buffer(self.context, cl.mem_flags.READ_ONLY, max(array.nbytes, 4))
        cl.enqueue_copy(self.queue, mem, array)
        return mem

    def upload(self, array: np.ndarray) -> ClArray:
        array = np.asarray(array)
        ids = array.dtype == np.int32 and array.ndim == 1
        activations = array.dtype == np.float32 and array.ndim == 2
        if not (ids or activations):
            raise ValueError(
                f"opencl upload takes float32 2-D or int32 1-D arrays, got {array.dtype} "
                f"{array.ndim}-D"
            )
        buf = self._alloc(array.shape, array.dtype)
        cl.enqueue_copy(self.queue, buf.mem, np.ascontiguousarray(array))
        return buf

    def download(self, buf: ClArray) -> np.ndarray:
        out = np.empty(buf.shape, dtype=buf.dtype)
        cl.enqueue_copy(self.queue, out, buf.mem)
        return out

    def load_weight(self, tensor: WeightTensor) -> ClWeight:
        if tensor.format in TERNARY_FORMATS:
            host = ternary_as_i2s(tensor)
            scales = None
            if host.block_scales is not None:
                scales = self._to_device(host.block_scales.astype(np.float32))
            return ClTernaryWeight(
                format=tensor.format,
                rows=tensor.rows,
                cols=tensor.cols,
                codes=self._to_device(host.codes),
                block_scales=scales,
                tensor_scale=host.tensor_scale,
                out_scale=float(tensor.out_scale),
            )
        if tensor.format is WeightFormat.Q6_K:
            codes, sub, d = split_q6_k_ints(tensor)
            return ClQ6KWeight(tensor.format, tensor.rows, tensor.cols, self._to_device(codes),
                               self._to_device(sub), self._to_device(d),
                               float(tensor.out_scale))
        if tensor.format in FLOAT_FORMATS:
            rows = float_rows(tensor)
            return ClFloatWeight(
                format=tensor.format,
                rows=tensor.rows,
                cols=tensor.cols,
                data=self._to_device(rows),
                row_bytes=rows.shape[1],
                out_scale=float(tensor.out_scale),
            )
        raise ValueError(f"{tensor.name}: opencl cannot hold {tensor.format.value}")

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int,
                       head_dim: int) -> ClKVCache:
        width = n_kv_heads * head_dim
        nbytes = n_layers * n_ctx * width * 2
        k = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)
        v = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)
        return ClKVCache(n_layers=n_layers, n_ctx=n_ctx, width=width, k=k, v=v)

    # -- ops ---------------------------------------------------------------------------------

    def _run(self, kernel: Any, global_size: tuple[int, ...], local_size: tuple[int, ...] | None,
             *args: Any) -> None:
        kernel.set_args(*args)
        cl.enqueue_nd_range_kernel(self.queue, kernel, global_size, local_size)

    def _float_kernel(self, fmt: WeightFormat, name: str) -> Any:
        return self.programs.kernel("linear_float.cl", name, (f"DECODE=decode_{fmt.value}",))

    def embed(self, table: ClFloatWeight | ClQ6KWeight, token_ids: ClArray) -> ClArray:
        if not isinstance(table, (ClFloatWeight, ClQ6KWeight)):
            raise TypeError(f"opencl embed needs a float-format table, got {table.format.value}")
        n = token_ids.shape[0]
        out = self._alloc((n, table.cols), np.float32)
        if isinstance(table, ClQ6KWeight):
            kernel = self.programs.kernel("q6_k.cl", "embed_q6_k")
            self._run(kernel, (_round_up(table.cols, 64), n), None, table.codes, table.sub,
                      table.d, token_ids.mem, _i32(table.cols), out.mem)
            return out
        kernel = self._float_kernel(table.format, "embed")
        self._run(kernel, (_round_up(table.cols, 64), n), None, table.data,
                  _i32(table.row_bytes), token_ids.mem, _i32(table.cols), out.mem)
        return out

    def rmsnorm(self, x: ClArray, weight: ClArray, eps: float) -> ClArray:
        n, k = op_checks.norm_input("opencl", x, weight)
        out = self._alloc((n, k), np.float32)
        kernel = self.programs.kernel("rmsnorm.cl", "rmsnorm")
        wg = self.programs.work_group(kernel)
        acc_bytes = 8 if self.programs.fp64 else 4
        self._run(kernel, (wg * n,), (wg,), x.mem, weight.mem, _i32(k), _f32(eps), out.mem,
                  cl.LocalMemory(acc_bytes * wg))
        return out

    def linear_ternary(self, w: ClTernaryWeight, x: ClArray) -> ClArray:
        if not isinstance(w, ClTernaryWeight):
            raise TypeError(f"opencl linear_ternary got a {w.format.value} weight")
        n, k = op_checks.matmul_input("opencl", "linear_ternary", x, w.cols)
        q = self._alloc((n, k), np.int8)
        out = self._alloc((n, w.rows), np.float32)
        tiles = -(-n // TILE_N)
        if w.format is WeightFormat.I2_S:
            scales = self._alloc((n,), np.float32)
            quant = self.programs.kernel("quantize.cl", "quantize_per_token_i8")
            qwg = self.programs.work_group(quant)
            self._run(quant, (qwg * n,), (qwg,), x.mem, _i32(k), q.mem, scales.mem,
                      cl.LocalMemory(4 * qwg))
            kernel = self.programs.kernel("linear_ternary.cl", "linear_i2s")
            per_row = 4 * TILE_N * self.programs.matmul_shape(kernel, 0)[0]
            lanes, rows = self.programs.matmul_shape(kernel, per_row)
            self._run(kernel, (lanes, _round_up(w.rows, rows), tiles), (lanes, rows, 1), w.codes,
                      q.mem, scales.mem, _i32(k), _i32(n), _i32(w.rows), _f32(w.tensor_scale),
                      _f32(w.out_scale), out.mem, cl.LocalMemory(rows * per_row))
            return out
        act_d = self._quantize_q8_k(x, q)
        nb = k // 256
        kernel = self.programs.kernel("linear_ternary.cl", "linear_tq")
        per_row = 4 * TILE_N * nb
        lanes, rows = self.programs.matmul_shape(kernel, per_row)
        self._run(kernel, (lanes, _round_up(w.rows, rows), tiles), (lanes, rows, 1), w.codes,
                  w.block_scales, q.mem, act_d.mem, _i32(k), _i32(n), _i32(w.rows),
                  _f32(w.out_scale), out.mem, cl.LocalMemory(rows * per_row))
        return out

    def _quantize_q8_k(self, x: ClArray, q: ClArray) -> ClArray:
        """x f32 [n, K] -> q int8 [n, K] (written in place) and the returned d f32 [n, K/256]."""
        n, k = x.shape
        nb = k // 256
        act_d = self._alloc((n, nb), np.float32)
        quant = self.programs.kernel("quantize.cl", "quantize_q8_k")
        qwg = self.programs.work_group(quant)
        self._run(quant, (qwg * nb, n), (qwg, 1), x.mem, _i32(k), q.mem, act_d.mem,
                  cl.LocalMemory(4 * qwg), cl.LocalMemory(4 * qwg))
        return act_d

    def _linear_q6_k(self, w: ClQ6KWeight, x: ClArray) -> ClArray:
        """Q6_K x Q8_K as llama.cpp (hal KernelBackend.linear_float)."""
        n, k = op_checks.matmul_input("opencl", "linear_float", x, w.cols)
        q = self._alloc((n, k), np.int8)
        act_d = self._quantize_q8_k(x, q)
        out = self._alloc((n, w.rows), np.float32)
        kernel = self.programs.kernel("q6_k.cl", "linear_q6_k")
        per_row = 4 * TILE_N * (k // 256)
        lanes, rows = self.programs.matmul_shape(kernel, per_row)
        self._run(kernel, (lanes, _round_up(w.rows, rows), -(-n // TILE_N)), (lanes, rows, 1),
                  w.codes, w.sub, w.d, q.mem, act_d.mem, _i32(k), _i32(n), _i32(w.rows),
                  _f32(w.out_scale), out.mem, cl.LocalMemory(rows * per_row))
        return out

    def linear_float(self, w: ClFloatWeight | ClQ6KWeight, x: ClArray) -> ClArray:
        if isinstance(w, ClQ6KWeight):
            return self._linear_q6_k(w, x)
        if not isinstance(w, ClFloatWeight):
            raise TypeError(f"opencl linear_float got a {w.format.value} weight")
        n, k = op_checks.matmul_input("opencl", "linear_float", x, w.cols)
        out = self._alloc((n, w.rows), np.float32)
        kernel = self._float_kernel(w.format, "linear_float")
        per_row = 4 * TILE_N * self.programs.matmul_shape(kernel, 0)[0]
        lanes, rows = self.programs.matmul_shape(kernel, per_row)
        self._run(kernel, (lanes, _round_up(w.rows, rows), -(-n // TILE_N)), (lanes, rows, 1),
                  w.data, _i32(w.row_bytes), x.mem, _i32(k), _i32(n), _i32(w.rows),
                  _f32(w.out_scale), out.mem, cl.LocalMemory(rows * per_row))
        return out

    def rope(self, x: ClArray, pos: int, n_heads: int, head_dim: int, theta: float) -> ClArray:
        n, width = op_checks.rope_input("opencl", x, n_heads, head_dim)
        cos_t, sin_t = self._rope_tables.get(theta, head_dim, pos + n)
        out = self._alloc((n, width), np.float32)
        kernel = self.programs.kernel("rope.cl", "rope")
        self._run(kernel, (_round_up(n_heads * head_dim // 2, 64), n), None, x.mem,
                  _i32(n_heads), _i32(head_dim), _i32(pos), cos_t, sin_t, out.mem)
        return out

    def attention(self, q: ClArray, k: ClArray, v: ClArray, cache: ClKVCache, layer: int,
                  pos: int, n_heads: int, n_kv_heads: int, head_dim: int) -> ClArray:
        n = op_checks.attention_fits("opencl", q, k, v, cache, layer, pos, n_heads, n_kv_heads,
                                     head_dim)
        width = n_kv_heads * head_dim
        q_width = n_heads * head_dim
        store = self.programs.kernel("attention.cl", "kv_store")
        self._run(store, (_round_up(width, 64), n), None, k.mem, v.mem, cache.k, cache.v,
                  _i32(layer), _i32(pos), _i32(cache.n_ctx), _i32(width))
        scores = self._alloc((n, n_heads, pos + n), np.float32)
        out = self._alloc((n, q_width), np.float32)
        kernel = self.programs.kernel("attention.cl", "attention")
        wg = self.programs.work_group(kernel)
        self._run(kernel, (wg * n_heads, n), (wg, 1), q.mem, cache.k, cache.v, _i32(layer),
                  _i32(pos), _i32(cache.n_ctx), _i32(n_heads), _i32(n_kv_heads),
                  _i32(head_dim), _f32(1 / np.sqrt(head_dim)), scores.mem, out.mem,
                  cl.LocalMemory(4 * wg), cl.LocalMemory(4 * head_dim))
        return out

    def _elementwise(self, name: str, a: ClArray, b: ClArray) -> ClArray:
        op_checks.same_shapes("opencl", name, a, b)
        out = self._alloc(a.shape, np.float32)
        count = a.shape[0] * a.shape[1]
        kernel = self.programs.kernel("elementwise.cl", name)
        self._run(kernel, (_round_up(count, 64),), None, a.mem, b.mem, _i32(count), out.mem)
        return out

    def relu2_mul(self, gate: ClArray, up: ClArray) -> ClArray:
        return self._elementwise("relu2_mul", gate, up)

    def silu_mul(self, gate: ClArray, up: ClArray) -> ClArray:
        return self._elementwise("silu_mul", gate, up)

    def add(self, a: ClArray, b: ClArray) -> ClArray:
        return self._elementwise("add", a, b)

    def slice_rows(self, x: ClArray, start: int, stop: int) -> ClArray:
        _, k = op_checks.row_slice("opencl", x, start, stop)
        out = self._alloc((stop - start, k), np.float32)
        cl.enqueue_copy(self.queue, out.mem, x.mem, byte_count=(stop - start) * k * 4,
                        src_offset=start * k * 4, dst_offset=0)
        return out

    def concat_rows(self, parts: list[ClArray]) -> ClArray:
        k = op_checks.concat_width("opencl", parts)
        out = self._alloc((sum(p.shape[0] for p in parts), k), np.float32)
        row = 0
        for part in parts:
            cl.enqueue_copy(self.queue, out.mem, part.mem, byte_count=part.shape[0] * k * 4,
                            src_offset=0, dst_offset=row * k * 4)
            row += part.shape[0]
        return out

    def synchronize(self) -> None:
        self.queue.finish()

    def close(self) -> None:
        self.queue.finish()
        self.pool.free_held()
        self._rope_tables.clear()

    def info(self) -> dict[str, Any]:
        return {
            "device": self.cl_device.name.strip(),
            "platform": self.cl_device.platform.name.strip(),
            "int_dot": self.programs.int_dot,
            "fp16": "cl_khr_fp16" in self.cl_device.extensions.split(),
            "tile_tokens": TILE_N,
        }


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
