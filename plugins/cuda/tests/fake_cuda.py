"""A fake ``pycuda`` for hosts without a GPU: host-memory allocations and numpy kernel models.

It lets the real GpuBackend over CudaRuntime run end to end (argument order, pointer arithmetic,
shapes, layouts, launch geometry) with each kernel replaced by its numpy model in
kernel_model.py, read with the .cu parameter order. Kernels must exist in the shipped PTX that
the backend loads (the fake module lists the PTX's `.entry` names), and every launch is checked
to cover its whole output. This tests the host side only; the CUDA code itself needs a GPU.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import itertools
import re
import struct
import sys
import threading
import types
from typing import Any, Callable

import numpy as np

import kernel_model as km
from bitnet.hal.device_runtime import ATTENTION_SPLIT

TILE_N = 8  # tokens a matmul tile carries (the kernels' GEMM_TOKENS)
# the tensor-core GEMMs' block (kernels/linear_mma.cu's MMA_THREADS, MMA_ROWS, MMA_TOKENS)
MMA_BLOCK = (128, 1, 1)
MMA_ROWS = 64
MMA_TOKENS = 64


class FakeError(Exception):
    pass


class FakeLogicError(FakeError):
    pass


class FakeAlloc:
    def __init__(self, memory: "FakeMemory", address: int, size: int) -> None:
        self.memory = memory
        self.address = address
        self.size = size

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        _active("cuMemFree")


class FakeMemory:
    """"Device" allocations in host memory at 256-byte aligned real addresses (so the CPU
    emulator can dereference them); a pointer may point inside an allocation."""

    def __init__(self) -> None:
        self.bases: list[int] = []
        self.blocks: dict[int, np.ndarray] = {}

    def alloc(self, size: int) -> FakeAlloc:
        raw = np.zeros(size + 256, dtype=np.uint8)
        offset = (-raw.ctypes.data) % 256
        block = raw[offset:offset + size]
        address = raw.ctypes.data + offset
        self.blocks[address] = block
        bisect.insort(self.bases, address)
        return FakeAlloc(self, address, size)

    def view(self, ptr: int, dtype: Any, count: int) -> np.ndarray:
        """A writable typed view of `count` elements at `ptr`; fails on out-of-bounds access."""
        i = bisect.bisect_right(self.bases, int(ptr)) - 1
        if i < 0:
            raise AssertionError(f"pointer {ptr:#x} is in no allocation")
        base = self.bases[i]
        offset = int(ptr) - base
        nbytes = np.dtype(dtype).itemsize * count
        block = self.blocks[base]
        if offset + nbytes > block.size:
            raise AssertionError(f"access of {nbytes} bytes at +{offset} overruns an allocation "
                                 f"of {block.size}")
        if offset % np.dtype(dtype).itemsize:
            raise AssertionError(f"misaligned {np.dtype(dtype)} access at +{offset}")
        return block[offset:offset + nbytes].view(dtype)


MEMORY = FakeMemory()
LAUNCHES: list[tuple[str, tuple, tuple]] = []
EMULATOR: list[Any] = []  # [ctypes.CDLL] when kernels run in the CPU emulator, else numpy models
_CTYPE = {"P": ctypes.c_void_p, "i": ctypes.c_int, "f": ctypes.c_float, "d": ctypes.c_double}


def _run_emulated(name: str, fmt: str, grid: tuple, block: tuple, values: tuple) -> None:
    """Launch the real kernel source, compiled for the host by tests/emulator/build_emulator.py."""
    boxes = [_CTYPE[code](value) for code, value in zip(fmt, values)]
    argv = (ctypes.c_void_p * len(boxes))(*[ctypes.cast(ctypes.pointer(b), ctypes.c_void_p)
                                             for b in boxes])
    dims = [(ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block)]
    getattr(EMULATOR[0], f"emu_{name}")(dims[0], dims[1], argv)


def _covers(grid: tuple, block: tuple, rows: int, n: int, mma: bool = False) -> None:
    """A matmul grid: one warp per row, block[0] / 32 rows a block, TILE_N tokens a tile; or
    (mma) MMA_ROWS x MMA_TOKENS a block of MMA_BLOCK threads."""
    per_block, tokens = block[0] // 32, TILE_N
    if mma:
        assert block == MMA_BLOCK, block
        per_block, tokens = MMA_ROWS, MMA_TOKENS
    assert block[0] % 32 == 0 and block[1:] == (1, 1), block
    assert grid[0] * per_block >= rows > (grid[0] - 1) * per_block, (grid, block, rows)
    assert grid[1] * tokens >= n > (grid[1] - 1) * tokens, (grid, n)


def _items(grid: tuple, block: tuple, count: int) -> None:
    assert grid[0] * block[0] >= count > (grid[0] - 1) * block[0], (grid, block, count)


def k_quantize_per_token_i8(grid, block, x, q, scale, k):
    n = grid[0]
    xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
    qq, ss = km.quantize_per_token_i8(xs)
    MEMORY.view(q, np.int8, n * k)[:] = qq.reshape(-1)
    MEMORY.view(scale, np.float32, n)[:] = ss


def k_quantize_q8_k(grid, block, x, q, d, k):
    assert block == (256, 1, 1) and grid[0] * 256 == k
    n = grid[1]
    xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
    qq, dd = km.quantize_q8_k(xs)
    MEMORY.view(q, np.int8, n * k)[:] = qq.reshape(-1)
    MEMORY.view(d, np.float32, dd.size)[:] = dd.reshape(-1)


def k_linear_i2s(grid, block, w, q, act_scale, y, k, n, m, w_scale, out_scale, mma=False):
    _covers(grid, block, m, n, mma)
    codes = MEMORY.view(w, np.uint8, m * k // 4)
    qq = MEMORY.view(q, np.int8, n * k).reshape(n, k)
    out = km.linear_i2s(codes, qq, MEMORY.view(act_scale, np.float32, n), np.float32(w_scale),
                        np.float32(out_scale), m, k)
    MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)


def k_linear_tq(grid, block, w, w_d, q, act_d, y, k, n, m, out_scale, mma=False):
    _covers(grid, block, m, n, mma)
    nb = k // 256
    out = km.linear_tq(MEMORY.view(w, np.uint8, m * nb * 64),
                       MEMORY.view(w_d, np.float32, m * nb).reshape(m, nb),
                       MEMORY.view(q, np.int8, n * k).reshape(n, k),
                       MEMORY.view(act_d, np.float32, n * nb).reshape(n, nb),
                       np.float32(out_scale), m, k)
    MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)


def k_linear_q6_k(grid, block, w, w_sub, w_d, q, act_d, y, k, n, m, out_scale, mma=False):
    _covers(grid, block, m, n, mma)
    nb = k // 256
    out = km.linear_q6k(MEMORY.view(w, np.int8, m * k).reshape(m, k),
                        MEMORY.view(w_sub, np.int8, m * k // 16).reshape(m, k // 16),
                        MEMORY.view(w_d, np.float32, m * nb).reshape(m, nb),
                        MEMORY.view(q, np.int8, n * k).reshape(n, k),
                        MEMORY.view(act_d, np.float32, n * nb).reshape(n, nb),
                        np.float32(out_scale))
    MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)


def k_embed_q6_k(grid, block, w, w_sub, w_d, ids, out, k):
    _items(grid, block, k)
    n = grid[1]
    dst = MEMORY.view(out, np.float32, n * k).reshape(n, k)
    for i, tok in enumerate(MEMORY.view(ids, np.int32, n)):
        row = int(tok)
        codes = MEMORY.view(w + row * k, np.int8, k).astype(np.float32)
        sub = MEMORY.view(w_sub + row * (k // 16), np.int8, k // 16).astype(np.float32)
        d = MEMORY.view(w_d + row * (k // 256) * 4, np.float32, k // 256)
        d_sub = (np.repeat(d, 16) * sub).astype(np.float32)  # exact: an f16 times an int8
        dst[i] = (np.repeat(d_sub, 16) * codes).astype(np.float32)


def _decode_rows(fmt: str, w: int, rows: int, row_bytes: int, k: int,
                 first: int = 0) -> np.ndarray:
    """On-disk rows first .. first + rows - 1 of a float format -> f32 [rows, K]."""
    raw = MEMORY.view(w + first * row_bytes, np.uint8, rows * row_bytes).reshape(rows, row_bytes)
    if fmt == "f32":
        return raw.view(np.float32).copy()
    if fmt == "f16":
        return raw.view(np.float16).astype(np.float32)
    if fmt == "bf16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    assert fmt == "q8_0" and row_bytes == k // 32 * 34, (fmt, row_bytes, k)
    blocks = raw.reshape(rows, k // 32, 34)
    d = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).astype(np.float32)
    codes = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).astype(np.float32)
    return (codes * d).astype(np.float32).reshape(rows, k)


def k_linear_float(fmt):
    def run(grid, block, w, x, y, row_bytes, k, n, m, out_scale):
        _covers(grid, block, m, n)
        wm = _decode_rows(fmt, w, m, row_bytes, k)
        xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
        out = (xs @ wm.T).astype(np.float32)
        if out_scale != 1:
            out = out * np.float32(out_scale)
        MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)
    return run


def k_embed(fmt):
    def run(grid, block, w, ids, out, row_bytes, k):
        _items(grid, block, k)
        n = grid[1]
        dst = MEMORY.view(out, np.float32, n * k).reshape(n, k)
        for i, tok in enumerate(MEMORY.view(ids, np.int32, n)):
            dst[i] = _decode_rows(fmt, w, 1, row_bytes, k, int(tok))[0]
    return run


def k_rmsnorm(grid, block, x, weight, y, k, eps):
    n = grid[0]
    xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
    out = km.rmsnorm(xs, MEMORY.view(weight, np.float32, k), np.float32(eps))
    MEMORY.view(y, np.float32, n * k)[:] = out.reshape(-1)


def k_rope(grid, block, x, cos_t, sin_t, step, y, n_heads, head_dim):
    width = n_heads * head_dim
    _items(grid, block, width // 2)
    n = grid[1]
    positions = MEMORY.view(step, np.int32, n).astype(np.int64)
    half = head_dim // 2
    tables = [MEMORY.view(t, np.float64, (int(positions.max()) + 1) * half)
              for t in (cos_t, sin_t)]
    xs = MEMORY.view(x, np.float32, n * width).reshape(n, width)
    MEMORY.view(y, np.float32, n * width)[:] = km.rope(xs, *tables, n_heads, head_dim,
                                                       positions).reshape(-1)


def _row_tables(table: int, block: int, stride: int, positions: np.ndarray) -> list[np.ndarray]:
    """Each row's cache rows of its positions 0 .. positions[t], through its block table
    (table + t * stride, as the kernels index it)."""
    rows = []
    for t, last in enumerate(positions.tolist()):
        span = np.arange(last + 1)
        own = None
        if block:
            own = MEMORY.view(table + 4 * t * stride, np.int32, last // block + 1)
        rows.append(km.cache_rows(own, block, span))
    return rows


def k_kv_store(grid, block, k, v, k_cache, v_cache, step, table, layer, n_ctx, width,
               kv_block, stride):
    _items(grid, block, width // 2)
    n = grid[1]
    positions = MEMORY.view(step, np.int32, n).astype(np.int64)
    src_k = MEMORY.view(k, np.float32, n * width).reshape(n, width)
    src_v = MEMORY.view(v, np.float32, n * width).reshape(n, width)
    for t, rows in enumerate(_row_tables(table, kv_block, stride, positions)):
        row = int(rows[-1])
        assert row < n_ctx
        dst = ((layer * n_ctx) + row) * width * 2
        MEMORY.view(k_cache + dst, np.float16, width)[:] = src_k[t].astype(np.float16)
        MEMORY.view(v_cache + dst, np.float16, width)[:] = src_v[t].astype(np.float16)


def _splits(span: int) -> int:
    return -(-span // ATTENTION_SPLIT)


def k_attention(grid, block, q, k_cache, v_cache, step, table, scores, parts, layer, n_ctx,
                n_heads, n_kv_heads, head_dim, score_scale, kv_block, stride, span):
    splits = _splits(span)
    assert grid[0] == n_heads * splits
    n = grid[1]
    positions = MEMORY.view(step, np.int32, n).astype(np.int64)
    assert positions.max() < span
    width = n_kv_heads * head_dim
    layer_off = layer * n_ctx * width * 2
    kc = MEMORY.view(k_cache + layer_off, np.float16, n_ctx * width).reshape(n_ctx, width)
    vc = MEMORY.view(v_cache + layer_off, np.float16, n_ctx * width).reshape(n_ctx, width)
    qs = MEMORY.view(q, np.float32, n * n_heads * head_dim).reshape(n, -1)
    res = km.attention_parts(qs, kc.astype(np.float32), vc.astype(np.float32),
                             _row_tables(table, kv_block, stride, positions), n_heads,
                             n_kv_heads, head_dim, np.float32(score_scale), block[0] // 32,
                             ATTENTION_SPLIT, splits)
    MEMORY.view(parts, np.float32, res.size)[:] = res.reshape(-1)


def k_attention_combine(grid, block, step, parts, out, n_heads, head_dim, span):
    assert grid[0] == n_heads
    n = grid[1]
    positions = MEMORY.view(step, np.int32, n).astype(np.int64)
    shape = (n, n_heads, _splits(span), head_dim + 2)
    res = km.attention_combine(MEMORY.view(parts, np.float32, int(np.prod(shape))).reshape(shape),
                               positions, ATTENTION_SPLIT)
    MEMORY.view(out, np.float32, res.size)[:] = res.reshape(-1)


def k_elementwise(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def run(grid, block, a, b, y, count):
        _items(grid, block, count)
        av = MEMORY.view(a, np.float32, count)
        bv = MEMORY.view(b, np.float32, count)
        MEMORY.view(y, np.float32, count)[:] = fn(av, bv).astype(np.float32)
    return run


def _relu2(g, u):
    r = np.maximum(g, np.float32(0))
    return r * r * u


def _silu(g, u):
    with np.errstate(over="ignore"):
        return g / (np.float32(1) + np.exp(-g)) * u


# decode_layer.cu's fused kernels, composed from the models of the kernels they fuse (so the
# fake driver's fused path gives its op path's bits, as the .cu sources do in the emulator)

def _quantized(family: str, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return km.quantize_per_token_i8(xs) if family == "i2s" else km.quantize_q8_k(xs)


def _matmul(family: str, w: int, w_d: int | None, scale: float, out_scale: float,
            q: np.ndarray, act: np.ndarray, rows: int, k: int) -> np.ndarray:
    """One weight's rows for the quantized activations (q, act): linear_i2s / linear_tq."""
    if family == "i2s":
        return km.linear_i2s(MEMORY.view(w, np.uint8, rows * k // 4), q, act, np.float32(scale),
                             np.float32(out_scale), rows, k)
    nb = k // 256
    return km.linear_tq(MEMORY.view(w, np.uint8, rows * nb * 64),
                        MEMORY.view(w_d, np.float32, rows * nb).reshape(rows, nb), q,
                        act.reshape(1, nb), np.float32(out_scale), rows, k)


def _prologue(x: int, norm: int, k: int, eps: float, family: str):
    xs = MEMORY.view(x, np.float32, k).reshape(1, k)
    return _quantized(family, km.rmsnorm(xs, MEMORY.view(norm, np.float32, k), np.float32(eps)))


def k_norm_qkv(family: str):
    def run(grid, block, x, norm, *args):
        if family == "i2s":
            (*codes, y, k, mq, mk, mv, eps), rest = args[:9], args[9:]
            scales, outs, ds = rest[:3], rest[3:], [None] * 3
        else:
            (*codes, y, k, mq, mk, mv, eps), rest = args[:3] + args[6:12], args[12:]
            ds, scales, outs = args[3:6], [1.0] * 3, rest
        _covers(grid, block, mq + mk + mv, 1)
        q, act = _prologue(x, norm, k, eps, family)
        parts = [_matmul(family, w, wd, sc, os_, q, act, m, k)
                 for w, wd, sc, os_, m in zip(codes, ds, scales, outs, (mq, mk, mv))]
        MEMORY.view(y, np.float32, mq + mk + mv)[:] = np.concatenate(parts, axis=1)[0]
    return run


def k_norm_gate_up(family: str):
    def run(grid, block, x, norm, *args):
        if family == "i2s":
            wg, wu, y, k, f, act_code, eps, sg, su, og, ou = args
            dg = du = None
        else:
            wg, wu, dg, du, y, k, f, act_code, eps, og, ou = args
            sg = su = 1.0
        _covers(grid, block, f, 1)
        q, act = _prologue(x, norm, k, eps, family)
        gate = _matmul(family, wg, dg, sg, og, q, act, f, k)
        up = _matmul(family, wu, du, su, ou, q, act, f, k)
        MEMORY.view(y, np.float32, f)[:] = (_relu2 if act_code == 0 else _silu)(gate, up)[0]
    return run


def k_rmsnorm_quantize(family: str):
    def run(grid, block, x, w, q, scales, k, eps):
        n = grid[0]
        xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
        qq, ss = _quantized(family, km.rmsnorm(xs, MEMORY.view(w, np.float32, k),
                                               np.float32(eps)))
        MEMORY.view(q, np.int8, n * k)[:] = qq.reshape(-1)
        MEMORY.view(scales, np.float32, ss.size)[:] = ss.reshape(-1)
    return run


def k_linear_add(family: str):
    def run(grid, block, w, *args):
        if family == "i2s":
            q, act, h, y, k, m, scale, out_scale = args
            w_d = None
        else:
            w_d, q, act, h, y, k, m, out_scale = args
            scale = 1.0
        _covers(grid, block, m, 1)
        nb = 1 if family == "i2s" else k // 256
        out = _matmul(family, w, w_d, scale, out_scale, MEMORY.view(q, np.int8, k).reshape(1, k),
                      MEMORY.view(act, np.float32, nb), m, k)
        MEMORY.view(y, np.float32, m)[:] = MEMORY.view(h, np.float32, m) + out[0]
    return run


def k_rope_attention(grid, block, qkv, cos_t, sin_t, k_cache, v_cache, step, table, scores,
                     parts, layer, n_ctx, n_heads, n_kv_heads, head_dim, score_scale, kv_block,
                     span):
    splits = _splits(span)
    assert grid[0] == n_heads * splits and grid[1] == 1
    pos = MEMORY.view(step, np.int32, 1).astype(np.int64)
    assert pos[0] < span
    half = head_dim // 2
    tables = [MEMORY.view(t, np.float64, (int(pos[0]) + 1) * half) for t in (cos_t, sin_t)]
    width = n_kv_heads * head_dim
    xs = MEMORY.view(qkv, np.float32, n_heads * head_dim + 2 * width).reshape(1, -1)
    q = km.rope(xs[:, :n_heads * head_dim], *tables, n_heads, head_dim, pos)
    k = km.rope(xs[:, n_heads * head_dim:-width], *tables, n_kv_heads, head_dim, pos)
    rows = _row_tables(table, kv_block, 0, pos)
    layer_off = layer * n_ctx * width * 2
    kc = MEMORY.view(k_cache + layer_off, np.float16, n_ctx * width).reshape(n_ctx, width)
    vc = MEMORY.view(v_cache + layer_off, np.float16, n_ctx * width).reshape(n_ctx, width)
    kc[rows[0][-1]] = k[0].astype(np.float16)
    vc[rows[0][-1]] = xs[0, -width:].astype(np.float16)
    res = km.attention_parts(q, kc.astype(np.float32), vc.astype(np.float32), rows, n_heads,
                             n_kv_heads, head_dim, np.float32(score_scale), block[0] // 32,
                             ATTENTION_SPLIT, splits)
    MEMORY.view(parts, np.float32, res.size)[:] = res.reshape(-1)


def k_inbox(grid, block, box, capacity):
    """The inbox's staged writes to their buffers (runtime.py's layout)."""
    assert grid == (1, 1, 1) and block[0] >= capacity
    count = int(MEMORY.view(box, np.int32, 1)[0])
    for e in range(min(count, capacity)):
        entry = box + 4 * (4 + 8 * e)
        dst = int(MEMORY.view(entry, np.uint64, 1)[0])
        nbytes = int(MEMORY.view(entry + 8, np.int32, 1)[0])
        MEMORY.view(dst, np.uint8, nbytes)[:] = MEMORY.view(entry + 16, np.uint8, nbytes)


MODELS: dict[str, Callable[..., None]] = {
    "inbox": k_inbox,
    "quantize_per_token_i8": k_quantize_per_token_i8,
    "quantize_q8_k": k_quantize_q8_k,
    "linear_i2s": k_linear_i2s,
    "linear_tq": k_linear_tq,
    # the tensor-core variants compute the same numbers (bit for bit) over another grid
    "linear_i2s_mma": functools.partial(k_linear_i2s, mma=True),
    "linear_tq_mma": functools.partial(k_linear_tq, mma=True),
    "linear_q6_k_mma": functools.partial(k_linear_q6_k, mma=True),
    "linear_q6_k": k_linear_q6_k,
    "embed_q6_k": k_embed_q6_k,
    "rmsnorm": k_rmsnorm,
    "rope": k_rope,
    "kv_store": k_kv_store,
    "attention": k_attention,
    "attention_combine": k_attention_combine,
    "relu2_mul": k_elementwise(_relu2),
    "silu_mul": k_elementwise(_silu),
    "add": k_elementwise(lambda a, b: a + b),
}
for _family, _quant in (("i2s", "i8"), ("tq", "q8_k")):
    MODELS[f"norm_qkv_{_family}"] = k_norm_qkv(_family)
    MODELS[f"norm_gate_up_{_family}"] = k_norm_gate_up(_family)
    MODELS[f"linear_add_{_family}"] = k_linear_add(_family)
    MODELS[f"rmsnorm_quantize_{_quant}"] = k_rmsnorm_quantize(_family)
MODELS["rope_attention"] = k_rope_attention
for _fmt in ("f32", "f16", "bf16", "q8_0"):
    MODELS[f"linear_float_{_fmt}"] = k_linear_float(_fmt)
    MODELS[f"embed_{_fmt}"] = k_embed(_fmt)


class FakeFunction:
    def __init__(self, name: str, max_threads: int) -> None:
        self.name = name
        self.max_threads = max_threads  # the kernel's __launch_bounds__ (PTX .maxntid)
        self.arg_format = ""

    def prepare(self, arg_types: str) -> "FakeFunction":
        self.arg_format = arg_types
        return self

    def prepared_async_call(self, grid: tuple, block: tuple, stream: "FakeStream",
                            *args: Any) -> None:
        # pack and unpack as PyCUDA would: catches a wrong count or a float passed as int
        _active("cuLaunchKernel")
        packed = struct.pack("=" + self.arg_format.replace("P", "Q"), *args)
        values = struct.unpack("=" + self.arg_format.replace("P", "Q"), packed)
        threads = block[0] * block[1] * block[2]
        # a real launch with more threads than __launch_bounds__ fails with "too many resources"
        assert threads <= self.max_threads, f"{self.name}: {threads} threads > {self.max_threads}"
        assert len(grid) == 3 and all(0 < g < 2**31 for g in grid), grid
        assert grid[1] <= 65535 and grid[2] <= 65535, grid
        stream.enqueue(lambda: self._run(tuple(grid), tuple(block), values))

    def _run(self, grid: tuple, block: tuple, values: tuple) -> None:
        LAUNCHES.append((self.name, grid, block))
        if EMULATOR:
            _run_emulated(self.name, self.arg_format, grid, block, values)
        else:
            MODELS[self.name](grid, block, *values)


class FakeModule:
    def __init__(self, ptx: bytes) -> None:
        assert ptx.endswith(b"\0"), "PTX handed to the driver must be NUL-terminated"
        found = re.findall(rb"\.entry\s+(\w+)\([^)]*\)\s*\.maxntid\s+(\d+), (\d+), (\d+)", ptx)
        self.entries = {n.decode(): int(x) * int(y) * int(z) for n, x, y, z in found}

    def get_function(self, name: str) -> FakeFunction:
        if name not in self.entries:
            raise FakeLogicError(f"cuModuleGetFunction failed: named symbol not found ({name})")
        return FakeFunction(name, self.entries[name])


STACKS: dict[int, list] = {}  # PyCUDA's context stack, one per thread (by thread ident)


def _active(what: str) -> None:
    """As PyCUDA: work in a thread whose context stack is empty fails."""
    if not STACKS.get(threading.get_ident()):
        raise FakeLogicError(f"{what} failed: no currently active context")


class FakeContext:
    """A real PyCUDA aborts the process when a thread ends, or the interpreter exits, with a
    context on its stack: tests check STACKS is empty for every thread that has finished."""

    def push(self) -> None:
        STACKS.setdefault(threading.get_ident(), []).append(self)

    @staticmethod
    def pop() -> None:
        stack = STACKS.get(threading.get_ident())
        if not stack:
            raise FakeLogicError("m_stack::pop: cannot pop context from empty stack")
        stack.pop()

    @staticmethod
    def synchronize() -> None:
        _active("cuCtxSynchronize")


class FakeDevice:
    capability = (9, 0)

    def __init__(self, index: int) -> None:
        self.index = index

    @staticmethod
    def count() -> int:
        return 1

    def compute_capability(self) -> tuple[int, int]:
        return self.capability

    def name(self) -> str:
        return "Fake NVIDIA H100"

    def total_memory(self) -> int:
        return 80 * 2**30

    def pci_bus_id(self) -> str:
        return "0000:AB:00.0"

    def retain_primary_context(self) -> FakeContext:
        return FakeContext()


STREAMS: dict[int, "FakeStream"] = {}  # by handle
GRAPHS: dict[int, list] = {}  # captured graphs (CUgraph): their work, in order
EXECS: dict[int, list] = {}  # instantiated graphs (CUgraphExec)
GRAPH_LAUNCHES: list[int] = []  # the executable graph of each cuGraphLaunch
_HANDLES = itertools.count(1)
CAPTURE_UNSUPPORTED = 900  # CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
CAPTURE_INVALIDATED = 901  # CUDA_ERROR_STREAM_CAPTURE_INVALIDATED


class FakeStream:
    """A stream: work runs at once (in order, as the real stream would run it), unless the
    stream is capturing: then it is recorded for a graph, and runs when the graph is launched."""

    def __init__(self, flags: int = 0) -> None:
        _active("cuStreamCreate")
        self.flags = flags
        self.handle = next(_HANDLES)
        self.captured: list | None = None  # the work recorded since cuStreamBeginCapture
        self.capture_mode = -1
        STREAMS[self.handle] = self

    def enqueue(self, work: Callable[[], None]) -> None:
        if self.captured is not None:
            self.captured.append(work)
        else:
            work()

    def synchronize(self) -> None:
        _active("cuStreamSynchronize")
        if self.captured is not None:
            raise FakeError("cuStreamSynchronize failed: operation not permitted when stream "
                            "is capturing")


def _capturing() -> list[FakeStream]:
    return [stream for stream in STREAMS.values() if stream.captured is not None]


def _no_capture(what: str) -> None:
    """Calls a real capture refuses: pageable copies and reads on a capturing stream."""
    if _capturing():
        raise FakeError(f"{what} failed: operation not permitted when stream is capturing")


class FakeLibcuda:
    """libcuda.so.1's graph functions as ctypes calls them (c_void_p handles, byref outputs)."""

    @staticmethod
    def cuStreamBeginCapture_v2(stream: ctypes.c_void_p, mode: ctypes.c_int) -> int:
        _active("cuStreamBeginCapture")
        found = STREAMS.get(stream.value)
        if found is None or found.captured is not None:
            return CAPTURE_UNSUPPORTED
        if found.flags != 1:  # a blocking stream's capture makes the legacy stream unusable
            return CAPTURE_UNSUPPORTED
        found.captured, found.capture_mode = [], mode.value
        return 0

    @staticmethod
    def cuStreamEndCapture(stream: ctypes.c_void_p, graph: Any) -> int:
        found = STREAMS.get(stream.value)
        if found is None or found.captured is None:
            return CAPTURE_INVALIDATED
        handle = next(_HANDLES)
        GRAPHS[handle] = found.captured
        found.captured = None
        graph._obj.value = handle
        return 0

    @staticmethod
    def cuGraphInstantiateWithFlags(exe: Any, graph: ctypes.c_void_p,
                                    flags: ctypes.c_ulonglong) -> int:
        handle = next(_HANDLES)
        EXECS[handle] = list(GRAPHS[graph.value])
        exe._obj.value = handle
        return 0

    @staticmethod
    def cuGraphLaunch(exe: ctypes.c_void_p, stream: ctypes.c_void_p) -> int:
        _active("cuGraphLaunch")
        work = EXECS[exe.value]
        GRAPH_LAUNCHES.append(exe.value)
        STREAMS[stream.value].enqueue(lambda: [run() for run in work])
        return 0

    @staticmethod
    def cuGraphExecDestroy(exe: ctypes.c_void_p) -> int:
        del EXECS[exe.value]
        return 0

    @staticmethod
    def cuGraphDestroy(graph: ctypes.c_void_p) -> int:
        del GRAPHS[graph.value]
        return 0


class FakeHostAllocation:
    """Page-locked, device-mapped host memory: the fake's device sees the host's addresses
    (an array over it has this object as its ``base``, as PyCUDA's HostAllocation)."""

    def __init__(self, size: int, dtype: Any) -> None:
        self.block = MEMORY.alloc(size)
        self.__array_interface__ = {"shape": (size // np.dtype(dtype).itemsize,),
                                    "typestr": np.dtype(dtype).str,
                                    "data": (self.block.address, False), "version": 3}

    def get_device_pointer(self) -> int:
        return self.block.address


def _pagelocked_zeros(count: int, dtype: Any, mem_flags: int = 0) -> np.ndarray:
    """A 1-D array whose ``base`` is the allocation, as PyCUDA's."""
    _active("cuMemHostAlloc")
    assert mem_flags & HOST_ALLOC_DEVICEMAP, "the inbox must be mapped into the device"
    return np.asarray(FakeHostAllocation(count * np.dtype(dtype).itemsize, dtype))


HOST_ALLOC_DEVICEMAP = 2


def _mem_alloc(size: int) -> FakeAlloc:
    _active("cuMemAlloc")
    return MEMORY.alloc(size)


def _memcpy_htod(dst: Any, array: np.ndarray) -> None:
    _active("cuMemcpyHtoD")
    if any(stream.capture_mode != 2 for stream in _capturing()):
        raise FakeError("cuMemcpyHtoD failed: not permitted while a stream captures in global "
                        "or thread-local mode")
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    MEMORY.view(int(dst), np.uint8, raw.size)[:] = raw


def _memcpy_htod_async(dst: Any, array: np.ndarray, stream: FakeStream) -> None:
    _active("cuMemcpyHtoDAsync")
    if stream.captured is not None:
        _no_capture("cuMemcpyHtoDAsync from pageable memory")
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8).copy()  # pageable: staged now
    stream.enqueue(lambda: MEMORY.view(int(dst), np.uint8, raw.size).__setitem__(
        slice(None), raw))


def _memcpy_dtoh_async(array: np.ndarray, src: Any, stream: FakeStream) -> None:
    _active("cuMemcpyDtoHAsync")
    if stream.captured is not None:
        _no_capture("cuMemcpyDtoHAsync to pageable memory")
    flat = array.reshape(-1).view(np.uint8)
    stream.enqueue(lambda: flat.__setitem__(slice(None),
                                            MEMORY.view(int(src), np.uint8, flat.size)))


def _memcpy_dtod_async(dst: Any, src: Any, size: int, stream: FakeStream) -> None:
    _active("cuMemcpyDtoDAsync")
    stream.enqueue(lambda: MEMORY.view(int(dst), np.uint8, size).__setitem__(
        slice(None), MEMORY.view(int(src), np.uint8, size)))


def build_modules(driver_version: int = 13000) -> dict[str, types.ModuleType]:
    """The fake ``pycuda``, ``pycuda.driver`` and ``pycuda.tools`` modules."""
    pkg = types.ModuleType("pycuda")
    driver = types.ModuleType("pycuda.driver")
    tools = types.ModuleType("pycuda.tools")
    driver.Error = FakeError
    driver.LogicError = FakeLogicError
    driver.Device = FakeDevice
    driver.Context = FakeContext
    driver.init = lambda: None
    driver.get_driver_version = lambda: driver_version
    driver.get_version = lambda: (13, 0, 0)
    driver.module_from_buffer = FakeModule
    driver.Stream = FakeStream
    driver.pagelocked_zeros = _pagelocked_zeros
    driver.host_alloc_flags = types.SimpleNamespace(DEVICEMAP=HOST_ALLOC_DEVICEMAP)
    driver.mem_alloc = _mem_alloc
    driver.memcpy_htod = _memcpy_htod
    driver.memcpy_htod_async = _memcpy_htod_async
    driver.memcpy_dtoh_async = _memcpy_dtoh_async
    driver.memcpy_dtod_async = _memcpy_dtod_async
    pkg.driver = driver
    pkg.tools = tools
    return {"pycuda": pkg, "pycuda.driver": driver, "pycuda.tools": tools}


def install(monkeypatch: Any, driver_version: int = 13000, emulator: Any = None) -> None:
    """Put the fake PyCUDA in sys.modules for one test (and re-import the backend with it).
    With ``emulator`` (a ctypes.CDLL of the CPU emulator) kernels run from their .cu source."""
    for name, module in build_modules(driver_version).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "bitnet_cuda.runtime", raising=False)
    monkeypatch.setattr(sys.modules[__name__], "EMULATOR", [emulator] if emulator else [])
    import bitnet_cuda.graph

    monkeypatch.setattr(bitnet_cuda.graph, "load_libcuda", FakeLibcuda)
    LAUNCHES.clear()
    STACKS.clear()
    STREAMS.clear()
    GRAPHS.clear()
    EXECS.clear()
    GRAPH_LAUNCHES.clear()
