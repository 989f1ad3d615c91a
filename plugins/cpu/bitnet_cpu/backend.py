"""CpuBackend: every KernelBackend op on host memory, run by the C kernels in ``_kernels``.

Buffers are small wrappers around C-contiguous numpy arrays (numpy only allocates them: no
numpy arithmetic runs in a forward pass, so there is no BLAS thread pool to oversubscribe).
Ternary weights are held in the "t2" layout (kernels/bitnet_cpu.h): I2_S is the file's layout
(copied), TQ2_0 / TQ1_0 are repacked once here at load; tables that interleave rows (AVX-512:
"r16", 16 rows per SIMD register) get one more cheap repack at load. Either way the result lives
in huge pages (WeightArena) and the file's pages are let go; so do float weights (the head).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitnet.hal import cpu_features
from bitnet.hal.backend import KernelBackend, LayerSpec, WeightTensor
from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.weight_formats import FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat, row_bytes
from bitnet.hal.arg_checks import attention_fits, attention_rows_fit, cache_reach
from bitnet.hal.kv_blocks import KV_BLOCK
from bitnet.hal.ops import ALL_OPS
from bitnet_cpu import _kernels
from bitnet_cpu.dispatch import check_executable, variant_for


HUGE_PAGE = 2 << 20
# Activations below 32 MiB (a 512-token chunk of the 2B shape's [n, 6912] f32 is 14 MB) come
# from the heap and freed ones stay there up to 128 MiB, so an op's output reuses the pages of
# an earlier one instead of faulting in fresh ones (kernels/repack.c keep_freed_heap: 10% of a
# prompt's time before). Process-wide, set once; a C library without the setting keeps its own.
HEAP_MMAP_BELOW = 32 << 20
HEAP_TRIM_ABOVE = 128 << 20


def aligned_bytes(nbytes: int, align: int) -> np.ndarray:
    """An uninitialized uint8 [nbytes] array whose data starts at a multiple of ``align``."""
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes]


def empty_f32(rows: int, cols: int) -> np.ndarray:
    """An op's f32 [rows, cols] output, starting on a cache line. numpy's data starts 16 bytes
    into one (usually), so every 64-byte store of a row group's outputs (the ternary GEMM's
    epilogue) split over two lines: aligned, a 128-token 6912x2560 prompt matmul went 11.1 ->
    10.7 ms on one Zen 4 thread (2026-12-05)."""
    return aligned_bytes(rows * cols * 4, 64).view(np.float32).reshape(rows, cols)

if _kernels.KV_BLOCK != KV_BLOCK:  # the kernels resolve block tables with their own constant
    raise ImportError(f"bitnet_cpu was built for KV blocks of {_kernels.KV_BLOCK} positions, "
                      f"bitnet.hal.kv_blocks uses {KV_BLOCK}: rebuild the plugin")


class WeightArena:
    """Memory for the weights repacked at load, back to back in blocks aligned to 2 MiB and
    advised to be backed by transparent huge pages before their first write.

    A decode token streams every weight once, so the page size is the TLB's whole story: numpy
    puts each matrix at a 4 KiB-aligned address, where at most the 2 MiB-aligned middle of the
    range can get huge pages (about half of a 4.4 MB matrix); in one arena all of it can. Only
    the block's touched pages are resident (RSS grows by at most one huge page per block).
    """

    BLOCK = 64 << 20

    def __init__(self) -> None:
        self.block: np.ndarray | None = None
        self.used = 0

    def take(self, nbytes: int) -> np.ndarray:
        """A fresh uint8 [nbytes] array, 64-byte aligned, inside a huge-page block."""
        need = (nbytes + 63) & ~63
        if self.block is None or self.used + need > self.block.size:
            size = max(self.BLOCK, (need + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE)
            self.block = aligned_bytes(size, HUGE_PAGE)  # untouched: not resident yet
            _kernels.advise_huge(self.block)
            self.used = 0
        out = self.block[self.used:self.used + nbytes]
        self.used += need
        return out


class CpuBuffer:
    """A host array owned by the backend: f32 [n, K] activations or int32 [n] token ids."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape


@dataclass(frozen=True)
class CpuWeight:
    """A weight in this backend's layout.

    Ternary: ``codes`` uint8 t2 codes [M*K/4 (+32 for I2_S in place)], or r16 codes
    [ceil(M/16)*16*K/4] for row-interleaving kernel tables; ``scales`` f32 [1]
    (I2_S tensor scale) or [M*K/256] (TQ block scales). Float: ``raw`` uint8 [M, row_bytes];
    for Q6_K on a table with ``q6_k_grouped`` the bytes are in its grouped layout
    (kernels/bitnet_cpu.h): ``groups`` is the whole padded buffer and ``raw`` its first M rows'
    worth of bytes, the shape the kernels are called with.
    """

    format: WeightFormat
    rows: int
    cols: int
    out_scale: float
    codes: np.ndarray | None = None
    scales: np.ndarray | None = None
    raw: np.ndarray | None = None
    groups: np.ndarray | None = None


@dataclass
class CpuKVCache:
    """f16 K and V for every layer, stored as uint16 bit patterns: [n_layers, n_ctx, Hkv*D].
    Its rows are positions, or blocks of a pool addressed through block tables
    (bitnet.hal.kv_blocks)."""

    k: np.ndarray
    v: np.ndarray
    # plain attributes (read by every op's checks): the planes' shape
    n_layers: int = field(init=False)
    n_ctx: int = field(init=False)
    width: int = field(init=False)  # Hkv * D: the values of one row

    def __post_init__(self) -> None:
        self.n_layers, self.n_ctx, self.width = self.k.shape


def _f32(buf: CpuBuffer, who: str) -> np.ndarray:
    a = buf.array
    if a.dtype != np.float32 or a.ndim != 2:
        raise ValueError(f"cpu.{who}: expects a float32 [n, K] buffer, got {a.dtype} {a.shape}")
    return a


def _c(a: np.ndarray | None) -> np.ndarray | None:
    """A checked int32 table or position array as the kernels read it (C order; None stays
    None: no block table)."""
    return None if a is None else np.ascontiguousarray(a)


def _same_shape(a: np.ndarray, b: np.ndarray, who: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"cpu.{who}: shapes differ: {a.shape} vs {b.shape}")


class CpuBackend(KernelBackend):
    """The C/SIMD CPU backend. ``threads`` OpenMP threads run every kernel of several tokens,
    ``decode_threads`` (default: the same) those of one token (bitnet_cpu/threads.py)."""

    name = "cpu"

    def __init__(self, device: DeviceInfo, threads: int, variant: str | None = None,
                 decode_threads: int | None = None) -> None:
        features = cpu_features.probe()
        chosen = variant or variant_for(features)
        check_executable(chosen, features)
        self.kernels = _kernels.Kernels(chosen)
        _kernels.keep_heap(HEAP_MMAP_BELOW, HEAP_TRIM_ABOVE)
        self.threads = max(1, int(threads))
        self.decode_threads = max(1, int(decode_threads or threads))
        self.arena = WeightArena()
        self.device = device
        self.capabilities = Capabilities(
            ops=ALL_OPS,
            ternary_formats=TERNARY_FORMATS,
            float_formats=FLOAT_FORMATS,
            notes=(f"{chosen} kernels, {self.threads} threads ({self.decode_threads} for one "
                   "token)",),
        )

    # -- buffers -----------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> CpuBuffer:
        array = np.asarray(array)
        if not ((array.dtype == np.int32 and array.ndim == 1)
                or (array.dtype == np.float32 and array.ndim == 2)):
            raise ValueError(f"cpu upload takes float32 2-D or int32 1-D arrays (the contract's "
                             f"buffers), got {array.dtype} {array.ndim}-D")
        return CpuBuffer(np.array(array, order="C", copy=True))

    def download(self, buf: CpuBuffer) -> np.ndarray:
        return buf.array.copy()

    def load_weight(self, tensor: WeightTensor) -> CpuWeight:
        fmt = tensor.format
        rows, cols = tensor.rows, tensor.cols
        if fmt is WeightFormat.I2_S:
            return self._load_i2_s(tensor)
        if fmt in (WeightFormat.TQ2_0, WeightFormat.TQ1_0):
            return self._load_tq(tensor)
        if fmt in FLOAT_FORMATS:
            # copied into huge pages too: the 2B shape's Q6_K head (269 MB, read whole every
            # token) went 14.1 -> 12.6 ms from the arena instead of the file map
            src = np.ascontiguousarray(tensor.data).reshape(rows, row_bytes(fmt, cols))
            if fmt is WeightFormat.Q6_K and self.kernels.q6_k_grouped:
                return self._load_q6_k_groups(tensor, src)
            raw = self.arena.take(src.nbytes).reshape(src.shape)
            step = max(1, (32 << 20) // max(1, src.shape[1]))  # 32 MB at a time, each let go
            for r in range(0, rows, step):  # once copied: the peak stays near the file size
                raw[r:r + step] = src[r:r + step]
                _kernels.drop_resident(src[r:r + step].reshape(-1))
            return CpuWeight(fmt, rows, cols, float(tensor.out_scale), raw=raw)
        raise ValueError(f"cpu.load_weight: {tensor.name} has unsupported format {fmt}")

    def _load_q6_k_groups(self, tensor: WeightTensor, src: np.ndarray) -> CpuWeight:
        """Q6_K rows -> the table's 16-row grouped layout (one stream a row group, codes a few
        bitwise ops away: the 2B head's one-token GEMV 11.4 -> 10.2 ms on one Zen 4 thread,
        10.5 -> 7.8 on two), converted 32 MB at a time, each part of the file let go once
        read. Embedding lookups turn rows back into the file's blocks (q6_k_group_rows)."""
        rows, rb = src.shape
        padded = (rows + 15) // 16 * 16
        groups = self.arena.take(padded * rb)
        step = max(16, (32 << 20) // rb // 16 * 16)
        for r in range(0, rows, step):
            part = src[r:r + step]
            end = r + (part.shape[0] + 15) // 16 * 16
            _kernels.q6_k_groups(part, groups[r * rb:end * rb], self.threads)
            _kernels.drop_resident(part.reshape(-1))
        return CpuWeight(tensor.format, rows, tensor.cols, float(tensor.out_scale),
                         raw=groups[:rows * rb].reshape(rows, rb), groups=groups)

    def _load_i2_s(self, tensor: WeightTensor) -> CpuWeight:
        rows, cols = tensor.rows, tensor.cols
        if cols % 128:
            raise ValueError(f"cpu.load_weight: {tensor.name}: I2_S needs K % 128 == 0, got {cols}")
        nbytes = rows * cols // 4
        data = np.ascontiguousarray(tensor.data).reshape(-1)
        if data.size < nbytes + 4:
            raise ValueError(f"cpu.load_weight: {tensor.name}: {data.size} bytes, expected "
                             f"{nbytes + 32}")
        if _kernels.has_code3(data[:nbytes]):
            raise ValueError(f"cpu.load_weight: {tensor.name} holds the invalid I2_S code 3")
        scale = data[nbytes:nbytes + 4].view(np.float32).copy()
        if self.kernels.row_group:
            codes = self._to_rows16(data[:nbytes], rows, cols)
        else:
            # the t2 layout is the file's layout, but a copy in huge pages (see WeightArena)
            # decodes faster than the file's 4 KiB pages (docs/benchmarks.md); the file's
            # pages are then let go
            codes = self.arena.take(nbytes)
            codes[:] = data[:nbytes]
            _kernels.drop_resident(data[:nbytes])
        return CpuWeight(WeightFormat.I2_S, rows, cols, float(tensor.out_scale),
                         codes=codes, scales=scale)

    def _to_rows16(self, t2: np.ndarray, rows: int, cols: int) -> np.ndarray:
        """Repack t2 codes into the row-interleaved r16 layout of the AVX-512 kernels (one
        32-bit word transpose, ~0.1 s per 500 MB), then let the source pages go."""
        padded = (rows + 15) // 16 * 16
        codes = self.arena.take(padded * cols // 4)
        _kernels.to_rows16(t2, rows, cols, codes, self.threads)
        # the source bytes are not read again: let them leave the resident set (memory target:
        # file size + 300 MB); a hint that never changes the data
        _kernels.drop_resident(t2)
        return codes

    def _load_tq(self, tensor: WeightTensor) -> CpuWeight:
        rows, cols = tensor.rows, tensor.cols
        fmt = tensor.format
        data = np.ascontiguousarray(tensor.data).reshape(rows, row_bytes(fmt, cols))
        # the t2 codes are the weight itself on per-row tables, a step towards r16 on the others
        codes = np.empty(rows * cols // 4, np.uint8) if self.kernels.row_group else \
            self.arena.take(rows * cols // 4)
        scales = np.empty(rows * (cols // 256), np.float32)
        _kernels.repack_tq(fmt.ggml_type, data, rows, cols, codes, scales, self.threads)
        _kernels.drop_resident(data.reshape(-1))  # not read again (see _to_rows16)
        if fmt is WeightFormat.TQ2_0 and _kernels.has_code3(codes):
            raise ValueError(f"cpu.load_weight: {tensor.name} holds the invalid TQ2_0 code 3")
        if self.kernels.row_group:
            codes = self._to_rows16(codes, rows, cols)
            # block scales side by side for the 16 rows of a group: [groups, blocks, 16]
            groups = (rows + 15) // 16
            padded = np.zeros((groups * 16, cols // 256), np.float32)
            padded[:rows] = scales.reshape(rows, cols // 256)
            scales = np.ascontiguousarray(
                padded.reshape(groups, 16, cols // 256).transpose(0, 2, 1)).reshape(-1)
        return CpuWeight(fmt, rows, cols, float(tensor.out_scale), codes=codes, scales=scales)

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int,
                       head_dim: int) -> CpuKVCache:
        shape = (n_layers, n_ctx, n_kv_heads * head_dim)
        return CpuKVCache(np.zeros(shape, np.uint16), np.zeros(shape, np.uint16))

    # -- ops ---------------------------------------------------------------------------------

    def embed(self, table: CpuWeight, token_ids: CpuBuffer) -> CpuBuffer:
        if table.raw is None:
            raise ValueError("cpu.embed: the table must be a float-format weight")
        ids = np.ascontiguousarray(token_ids.array, dtype=np.int32).reshape(-1)
        out = empty_f32(ids.size, table.cols)
        if ids.size and table.groups is not None:
            # a grouped Q6_K table: the rows back in the file's layout, then the same decode
            rows = np.empty((ids.size, table.raw.shape[1]), np.uint8)
            _kernels.q6_k_group_rows(table.groups, table.rows, table.cols, ids, rows)
            _kernels.embed_rows(table.format.ggml_type, rows,
                                np.arange(ids.size, dtype=np.int32), table.cols, out)
        elif ids.size:
            _kernels.embed_rows(table.format.ggml_type, table.raw, ids, table.cols, out)
        return CpuBuffer(out)

    def rmsnorm(self, x: CpuBuffer, weight: CpuBuffer, eps: float) -> CpuBuffer:
        xa = _f32(x, "rmsnorm")
        w = np.ascontiguousarray(weight.array, dtype=np.float32).reshape(-1)
        if w.size != xa.shape[1]:
            raise ValueError(f"cpu.rmsnorm: weight has {w.size} values, rows have {xa.shape[1]}")
        out = empty_f32(*xa.shape)
        _kernels.rmsnorm(xa, w, eps, out, self.threads)
        return CpuBuffer(out)

    def linear_ternary(self, w: CpuWeight, x: CpuBuffer) -> CpuBuffer:
        xa = _f32(x, "linear_ternary")
        if w.codes is None:
            raise ValueError("cpu.linear_ternary: weight is not ternary")
        if xa.shape[1] != w.cols:
            raise ValueError(f"cpu.linear_ternary: weight has K={w.cols}, input {xa.shape[1]}")
        y = empty_f32(xa.shape[0], w.rows)
        if xa.shape[0]:
            self.kernels.linear_ternary(w.format.ggml_type, w.codes, w.scales, w.rows, w.cols,
                                        xa, y, w.out_scale, self._threads(xa))
        return CpuBuffer(y)

    def linear_float(self, w: CpuWeight, x: CpuBuffer) -> CpuBuffer:
        xa = _f32(x, "linear_float")
        if w.raw is None:
            raise ValueError("cpu.linear_float: weight is not a float format")
        if xa.shape[1] != w.cols:
            raise ValueError(f"cpu.linear_float: weight has K={w.cols}, input {xa.shape[1]}")
        y = empty_f32(xa.shape[0], w.rows)
        if xa.shape[0]:
            self.kernels.linear_float(w.format.ggml_type, w.raw, w.cols, xa, y, w.out_scale,
                                      self._threads(xa))
        return CpuBuffer(y)

    def rope(self, x: CpuBuffer, pos: int, n_heads: int, head_dim: int,
             theta: float) -> CpuBuffer:
        xa = _f32(x, "rope")
        if xa.shape[1] != n_heads * head_dim or head_dim % 2 or head_dim > 1024:
            raise ValueError(f"cpu.rope: width {xa.shape[1]} != {n_heads} heads x {head_dim}")
        out = empty_f32(*xa.shape)
        out[...] = xa
        _kernels.rope(out, pos, n_heads, head_dim, float(theta))
        return CpuBuffer(out)

    def attention(self, q: CpuBuffer, k: CpuBuffer, v: CpuBuffer, cache: CpuKVCache,
                  layer: int, pos: int, n_heads: int, n_kv_heads: int, head_dim: int,
                  table: np.ndarray | None = None) -> CpuBuffer:
        qa = _f32(q, "attention")
        ka = _f32(k, "attention")
        va = _f32(v, "attention")
        n = attention_fits("cpu", qa, ka, va, cache, layer, pos, n_heads, n_kv_heads, head_dim,
                           table)
        if head_dim > 1024:
            raise ValueError(f"cpu attention: head_dim {head_dim} over the kernel's 1024")
        out = np.empty_like(qa)
        if n:
            self.kernels.attention(qa, ka, va, cache.k[layer], cache.v[layer], _c(table), pos,
                                   n_heads, n_kv_heads, head_dim, out, self._threads(qa))
        return CpuBuffer(out)

    def attention_rows(self, q: CpuBuffer, k: CpuBuffer, v: CpuBuffer, cache: CpuKVCache,
                       layer: int, positions: np.ndarray, n_heads: int, n_kv_heads: int,
                       head_dim: int, theta: float, tables: np.ndarray) -> CpuBuffer:
        # one C call for all B rows of the pool (see attention_rows_f16kv)
        qa = _f32(q, "attention_rows").copy()  # rotated in place below
        ka = _f32(k, "attention_rows").copy()
        va = _f32(v, "attention_rows")
        tables, positions = attention_rows_fit("cpu", qa, ka, va, cache, positions, tables,
                                               n_heads, n_kv_heads, head_dim)
        if not 0 <= layer < cache.n_layers:
            raise ValueError(f"cpu attention_rows: layer {layer} outside the cache "
                             f"({cache.n_layers} layers)")
        if head_dim > 1024 or head_dim % 2:
            raise ValueError(f"cpu attention_rows: head_dim {head_dim} is outside the kernel's "
                             "limits (even, at most 1024)")
        out = np.empty_like(qa)
        if qa.shape[0]:
            self.kernels.attention_rows(qa, ka, va, cache.k[layer], cache.v[layer],
                                        _c(positions), _c(tables), n_heads, n_kv_heads,
                                        head_dim, float(theta), out, self.threads)
        return CpuBuffer(out)

    def relu2_mul(self, gate: CpuBuffer, up: CpuBuffer) -> CpuBuffer:
        return _elementwise("relu2_mul", _kernels.relu2_mul, gate, up, self.threads)

    def silu_mul(self, gate: CpuBuffer, up: CpuBuffer) -> CpuBuffer:
        return _elementwise("silu_mul", _kernels.silu_mul, gate, up, self.threads)

    def add(self, a: CpuBuffer, b: CpuBuffer) -> CpuBuffer:
        return _elementwise("add", _kernels.add, a, b, self.threads)

    def slice_rows(self, x: CpuBuffer, start: int, stop: int) -> CpuBuffer:
        xa = x.array
        if not 0 <= start <= stop <= xa.shape[0]:
            raise ValueError(f"cpu.slice_rows: rows {start}..{stop} of {xa.shape[0]}")
        return CpuBuffer(xa[start:stop].copy())

    def concat_rows(self, parts: list[CpuBuffer]) -> CpuBuffer:
        return CpuBuffer(np.concatenate([_f32(p, "concat_rows") for p in parts], axis=0))

    def prepare_layer(self, spec: LayerSpec) -> _kernels.DecodeLayer | None:
        """A block whose seven matmuls share one ternary format runs a decode token in one C
        call (kernels/layer.c: one parallel region, no Python between ops; same bits).
        BITNET_CPU_LAYERS=ops keeps every block op by op (for profiles and A/B timings)."""
        if os.environ.get("BITNET_CPU_LAYERS", "fused") == "ops":
            return None
        mats = (spec.attn_q, spec.attn_k, spec.attn_v, spec.attn_output, spec.ffn_gate,
                spec.ffn_up, spec.ffn_down)
        fmt = mats[0].format
        if (fmt not in TERNARY_FORMATS or spec.activation not in ("relu2", "silu")
                or any(m.format is not fmt or m.codes is None for m in mats)):
            return None

        def vector(b: CpuBuffer | None) -> np.ndarray | None:
            return None if b is None else np.ascontiguousarray(b.array, np.float32).reshape(-1)

        return _kernels.DecodeLayer(
            fmt.ggml_type, spec.activation == "silu", spec.n_heads, spec.n_kv_heads,
            spec.head_dim, spec.eps, spec.rope_theta, vector(spec.attn_norm),
            vector(spec.attn_sub_norm), vector(spec.ffn_norm), vector(spec.ffn_sub_norm),
            tuple((m.codes, m.scales, m.rows, m.cols, m.out_scale) for m in mats))

    def decode_layer(self, layer: _kernels.DecodeLayer, h: CpuBuffer, cache: CpuKVCache,
                     index: int, pos: int, table: np.ndarray | None = None) -> CpuBuffer:
        out = _f32(h, "decode_layer").copy()  # the block adds to h in place
        cache_reach("cpu", "decode_layer", cache, index, pos, 1, table)
        self.kernels.decode_layer(layer, out, cache.k[index], cache.v[index], _c(table), pos,
                                  self.decode_threads)
        return CpuBuffer(out)

    def _threads(self, x: np.ndarray) -> int:
        """decode_threads for one token's row, threads for several (prompts, batches)."""
        return self.decode_threads if x.shape[0] == 1 else self.threads

    def info(self) -> dict[str, Any]:
        return {"kernel": self.kernels.name, "threads": self.threads,
                "decode_threads": self.decode_threads,
                "isa": cpu_features.probe().isa}


def _elementwise(op: str, kernel, a: CpuBuffer, b: CpuBuffer, threads: int) -> CpuBuffer:
    """Two same-shape f32 buffers through one elementwise kernel into a new buffer."""
    aa = _f32(a, op)
    ba = _f32(b, op)
    _same_shape(aa, ba, op)
    out = empty_f32(*aa.shape)
    if aa.size:
        kernel(aa, ba, out, threads)
    return CpuBuffer(out)
