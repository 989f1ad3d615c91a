"""A fake ``pycuda`` for hosts without a GPU: host-memory allocations and numpy kernel models.

It lets the real CudaBackend code run end to end (argument packing order, pointer arithmetic,
shapes, layouts, launch geometry) with each kernel replaced by its numpy model in
kernel_model.py, read with the .cu parameter order. Kernels must exist in the shipped PTX that
the backend loads (the fake module lists the PTX's `.entry` names), and every launch is checked
to cover its whole output. This tests the host side only; the CUDA code itself needs a GPU.
"""

from __future__ import annotations

import bisect
import ctypes
import re
import struct
import sys
import threading
import types
from typing import Any, Callable

import numpy as np

import kernel_model as km

ROWS_PER_BLOCK = 8
GEMM_TOKENS = 8


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


def _covers(grid: tuple, block: tuple, rows: int, n: int, tn: int) -> None:
    assert block == (ROWS_PER_BLOCK * 32, 1, 1), block
    assert grid[0] * ROWS_PER_BLOCK >= rows > (grid[0] - 1) * ROWS_PER_BLOCK, (grid, rows)
    assert grid[1] * tn >= n > (grid[1] - 1) * tn, (grid, n, tn)


def _tn(name: str) -> int:
    return 1 if name.endswith("_gemv") else GEMM_TOKENS


def k_quantize_per_token_i8(grid, block, x, k, q, scale, qsum):
    n = grid[0]
    xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
    qq, ss, sums = km.quantize_per_token_i8(xs)
    MEMORY.view(q, np.int8, n * k)[:] = qq.reshape(-1)
    MEMORY.view(scale, np.float32, n)[:] = ss
    MEMORY.view(qsum, np.int32, n)[:] = sums


def k_quantize_q8_k(grid, block, x, k, q, d, bsum):
    assert block == (256, 1, 1) and grid[0] * 256 == k
    n = grid[1]
    xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
    qq, dd, sums = km.quantize_q8_k(xs)
    MEMORY.view(q, np.int8, n * k)[:] = qq.reshape(-1)
    MEMORY.view(d, np.float32, dd.size)[:] = dd.reshape(-1)
    MEMORY.view(bsum, np.int32, sums.size)[:] = sums.reshape(-1)


def k_linear_i2s(name):
    def run(grid, block, w, q, act_scale, act_sum, w_scale, out_scale, y, m, k, n):
        _covers(grid, block, m, n, _tn(name))
        codes = MEMORY.view(w, np.uint8, m * k // 4)
        qq = MEMORY.view(q, np.int8, n * k).reshape(n, k)
        out = km.linear_i2s(codes, qq, MEMORY.view(act_scale, np.float32, n),
                            MEMORY.view(act_sum, np.int32, n), np.float32(w_scale),
                            np.float32(out_scale), m, k)
        MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)
    return run


def k_linear_tq(name):
    def run(grid, block, w, w_d, q, act_d, act_bsum, out_scale, y, m, k, n):
        _covers(grid, block, m, n, _tn(name))
        nb = k // 256
        codes = MEMORY.view(w, np.uint8, m * nb * 64)
        out = km.linear_tq(codes, MEMORY.view(w_d, np.float32, m * nb).reshape(m, nb),
                           MEMORY.view(q, np.int8, n * k).reshape(n, k),
                           MEMORY.view(act_d, np.float32, n * nb).reshape(n, nb),
                           MEMORY.view(act_bsum, np.int32, n * nb).reshape(n, nb),
                           np.float32(out_scale), m, k)
        MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)
    return run


def k_linear_q6k(name):
    def run(grid, block, w, w_sub, w_d, q, act_d, out_scale, y, m, k, n):
        _covers(grid, block, m, n, _tn(name))
        nb = k // 256
        out = km.linear_q6k(MEMORY.view(w, np.int8, m * k).reshape(m, k),
                            MEMORY.view(w_sub, np.int8, m * k // 16).reshape(m, k // 16),
                            MEMORY.view(w_d, np.float32, m * nb).reshape(m, nb),
                            MEMORY.view(q, np.int8, n * k).reshape(n, k),
                            MEMORY.view(act_d, np.float32, n * nb).reshape(n, nb),
                            np.float32(out_scale))
        MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)
    return run


def k_embed_q6k(grid, block, w, w_sub, w_d, ids, out, k):
    n = grid[0]
    id_list = MEMORY.view(ids, np.int32, n)
    dst = MEMORY.view(out, np.float32, n * k).reshape(n, k)
    for i, tok in enumerate(id_list):
        row = int(tok)
        codes = MEMORY.view(w + row * k, np.int8, k).astype(np.float32)
        sub = MEMORY.view(w_sub + row * (k // 16), np.int8, k // 16).astype(np.float32)
        d = MEMORY.view(w_d + row * (k // 256) * 4, np.float32, k // 256)
        d_sub = (np.repeat(d, 16) * sub).astype(np.float32)  # exact: an f16 times an int8
        dst[i] = (np.repeat(d_sub, 16) * codes).astype(np.float32)


def _decode(kind: str, w: int, count: int, scale: int = 0, group: int = 0) -> np.ndarray:
    if kind == "f32":
        return MEMORY.view(w, np.float32, count).copy()
    if kind == "f16":
        return MEMORY.view(w, np.float16, count).astype(np.float32)
    if kind == "bf16":
        return (MEMORY.view(w, np.uint16, count).astype(np.uint32) << 16).view(np.float32)
    codes = MEMORY.view(w, np.int8, count).astype(np.float32).reshape(-1, group)
    scales = MEMORY.view(scale, np.float32, count // group)
    return (codes * scales[:, None]).reshape(-1)


def k_linear_float(name, kind):
    def run(grid, block, *args):
        if kind == "i8g":
            w, scale, group, x, out_scale, y, m, k, n = args
        else:
            w, x, out_scale, y, m, k, n = args
            scale, group = 0, 0
        _covers(grid, block, m, n, _tn(name))
        wm = _decode(kind, w, m * k, scale, group).reshape(m, k)
        xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
        out = (xs @ wm.T).astype(np.float32)
        if out_scale != 1:
            out = out * np.float32(out_scale)
        MEMORY.view(y, np.float32, n * m)[:] = out.reshape(-1)
    return run


def k_embed(kind):
    def run(grid, block, *args):
        if kind == "i8g":
            w, scale, group, ids, out, k = args
        else:
            w, ids, out, k = args
            scale, group = 0, 0
        n = grid[0]
        id_list = MEMORY.view(ids, np.int32, n)
        dst = MEMORY.view(out, np.float32, n * k).reshape(n, k)
        isz = 1 if kind == "i8g" else (4 if kind == "f32" else 2)
        for i, tok in enumerate(id_list):
            row_scale = scale + int(tok) * (k // group) * 4 if kind == "i8g" else 0
            dst[i] = _decode(kind, w + int(tok) * k * isz, k, row_scale, group)
    return run


def k_rmsnorm(grid, block, x, weight, y, k, eps):
    n = grid[0]
    xs = MEMORY.view(x, np.float32, n * k).reshape(n, k)
    out = km.rmsnorm(xs, MEMORY.view(weight, np.float32, k), np.float32(eps))
    MEMORY.view(y, np.float32, n * k)[:] = out.reshape(-1)


def k_rope(grid, block, x, y, n_heads, head_dim, pos, theta):
    assert grid[0] == n_heads
    n = grid[1]
    width = n_heads * head_dim
    xs = MEMORY.view(x, np.float32, n * width).reshape(n, width)
    MEMORY.view(y, np.float32, n * width)[:] = km.rope_neox(xs, n_heads, head_dim, pos,
                                                            theta).reshape(-1)


def k_kv_store(grid, block, k, v, k_cache, v_cache, layer, pos, width, n_ctx):
    n = grid[0]
    assert pos + n <= n_ctx
    dst = ((layer * n_ctx) + pos) * width * 2
    src_k = MEMORY.view(k, np.float32, n * width)
    src_v = MEMORY.view(v, np.float32, n * width)
    MEMORY.view(k_cache + dst, np.float16, n * width)[:] = src_k.astype(np.float16)
    MEMORY.view(v_cache + dst, np.float16, n * width)[:] = src_v.astype(np.float16)


def k_attention(grid, block, q, k_cache, v_cache, out, layer, pos, n_heads, n_kv_heads,
                head_dim, n_ctx, score_scale):
    assert grid[0] == n_heads
    n = grid[1]
    width = n_kv_heads * head_dim
    layer_off = layer * n_ctx * width * 2
    kc = MEMORY.view(k_cache + layer_off, np.float16, n_ctx * width).reshape(1, n_ctx, width)
    vc = MEMORY.view(v_cache + layer_off, np.float16, n_ctx * width).reshape(1, n_ctx, width)
    qs = MEMORY.view(q, np.float32, n * n_heads * head_dim).reshape(n, -1)
    res = km.attention(qs, kc, vc, 0, pos, n_heads, n_kv_heads, head_dim,
                       np.float32(score_scale), block[0] // 32)
    MEMORY.view(out, np.float32, res.size)[:] = res.reshape(-1)


def _positions(pos: int, n: int) -> list[int]:
    return [int(p) for p in MEMORY.view(pos, np.int32, n)]


def _rows_table(caches: int, pos: int, n: int) -> tuple[list[int], list[int], list[int]]:
    """The *_rows kernels' table: n K cache addresses, n V cache addresses, n positions."""
    ptrs = [int(p) for p in MEMORY.view(caches, np.uint64, 2 * n)]
    return ptrs[:n], ptrs[n:], _positions(pos, n)


def k_rope_rows(grid, block, x, y, n_heads, head_dim, pos, theta):
    row = n_heads * head_dim * 4
    for r, p in enumerate(_positions(pos, grid[1])):
        k_rope((n_heads, 1, 1), block, x + r * row, y + r * row, n_heads, head_dim, p, theta)


def k_kv_store_rows(grid, block, k, v, caches, pos, layer, width, n_ctx):
    for r, (kc, vc, p) in enumerate(zip(*_rows_table(caches, pos, grid[0]))):
        k_kv_store((1, 1, 1), block, k + r * width * 4, v + r * width * 4, kc, vc, layer, p,
                   width, n_ctx)


def k_attention_rows(grid, block, q, caches, pos, out, layer, n_heads, n_kv_heads, head_dim,
                     n_ctx, score_scale):
    row = n_heads * head_dim * 4
    for r, (kc, vc, p) in enumerate(zip(*_rows_table(caches, pos, grid[1]))):
        k_attention((n_heads, 1, 1), block, q + r * row, kc, vc, out + r * row, layer, p,
                    n_heads, n_kv_heads, head_dim, n_ctx, score_scale)


def k_elementwise(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def run(grid, block, a, b, y, count):
        assert grid[0] * block[0] >= count
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


MODELS: dict[str, Callable[..., None]] = {
    "quantize_per_token_i8": k_quantize_per_token_i8,
    "quantize_q8_k": k_quantize_q8_k,
    "rmsnorm": k_rmsnorm,
    "rope_neox": k_rope,
    "rope_rows": k_rope_rows,
    "kv_store": k_kv_store,
    "kv_store_rows": k_kv_store_rows,
    "attention": k_attention,
    "attention_rows": k_attention_rows,
    "relu2_mul": k_elementwise(_relu2),
    "silu_mul": k_elementwise(_silu),
    "add": k_elementwise(lambda a, b: a + b),
}
for _kind in ("gemv", "gemm"):
    MODELS[f"linear_i2s_{_kind}"] = k_linear_i2s(f"linear_i2s_{_kind}")
    MODELS[f"linear_tq_{_kind}"] = k_linear_tq(f"linear_tq_{_kind}")
    MODELS[f"linear_q6k_{_kind}"] = k_linear_q6k(f"linear_q6k_{_kind}")
    for _fmt in ("f32", "f16", "bf16", "i8g"):
        MODELS[f"linear_{_fmt}_{_kind}"] = k_linear_float(f"linear_{_fmt}_{_kind}", _fmt)
for _fmt in ("f32", "f16", "bf16", "i8g"):
    MODELS[f"embed_{_fmt}"] = k_embed(_fmt)
MODELS["embed_q6k"] = k_embed_q6k


class FakeFunction:
    def __init__(self, name: str, max_threads: int) -> None:
        self.name = name
        self.max_threads = max_threads  # the kernel's __launch_bounds__ (PTX .maxntid)
        self.arg_format = ""

    def prepare(self, arg_types: str) -> "FakeFunction":
        self.arg_format = arg_types
        return self

    def prepared_call(self, grid: tuple, block: tuple, *args: Any) -> None:
        # pack and unpack as PyCUDA would: catches a wrong count or a float passed as int
        _active("cuLaunchKernel")
        packed = struct.pack("=" + self.arg_format.replace("P", "Q"), *args)
        values = struct.unpack("=" + self.arg_format.replace("P", "Q"), packed)
        threads = block[0] * block[1] * block[2]
        # a real launch with more threads than __launch_bounds__ fails with "too many resources"
        assert threads <= self.max_threads, f"{self.name}: {threads} threads > {self.max_threads}"
        assert len(grid) == 3 and all(0 < g < 2**31 for g in grid), grid
        assert grid[1] <= 65535 and grid[2] <= 65535, grid
        LAUNCHES.append((self.name, tuple(grid), tuple(block)))
        if EMULATOR:
            _run_emulated(self.name, self.arg_format, tuple(grid), tuple(block), values)
        else:
            MODELS[self.name](tuple(grid), tuple(block), *values)


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


class FakePool:
    def allocate(self, size: int) -> FakeAlloc:
        _active("cuMemAlloc")
        return MEMORY.alloc(size)

    def stop_holding(self) -> None:
        pass


def _mem_alloc(size: int) -> FakeAlloc:
    _active("cuMemAlloc")
    return MEMORY.alloc(size)


def _to_device(array: np.ndarray) -> FakeAlloc:
    alloc = MEMORY.alloc(array.nbytes)
    _memcpy_htod(alloc, array)
    return alloc


def _memcpy_htod(dst: Any, array: np.ndarray) -> None:
    _active("cuMemcpyHtoD")
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    MEMORY.view(int(dst), np.uint8, raw.size)[:] = raw


def _memcpy_dtoh(array: np.ndarray, src: Any) -> None:
    _active("cuMemcpyDtoH")
    flat = array.reshape(-1).view(np.uint8)
    flat[:] = MEMORY.view(int(src), np.uint8, flat.size)


def _memcpy_dtod(dst: Any, src: Any, size: int) -> None:
    _active("cuMemcpyDtoD")
    MEMORY.view(int(dst), np.uint8, size)[:] = MEMORY.view(int(src), np.uint8, size)


def _memset_d8(dst: Any, value: int, size: int) -> None:
    _active("cuMemsetD8")
    MEMORY.view(int(dst), np.uint8, size)[:] = value


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
    driver.mem_alloc = _mem_alloc
    driver.to_device = _to_device
    driver.memcpy_htod = _memcpy_htod
    driver.memcpy_dtoh = _memcpy_dtoh
    driver.memcpy_dtod = _memcpy_dtod
    driver.memset_d8 = _memset_d8
    tools.DeviceMemoryPool = FakePool
    pkg.driver = driver
    pkg.tools = tools
    return {"pycuda": pkg, "pycuda.driver": driver, "pycuda.tools": tools}


def install(monkeypatch: Any, driver_version: int = 13000, emulator: Any = None) -> None:
    """Put the fake PyCUDA in sys.modules for one test (and re-import the backend with it).
    With ``emulator`` (a ctypes.CDLL of the CPU emulator) kernels run from their .cu source."""
    for name, module in build_modules(driver_version).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "bitnet_cuda.backend", raising=False)
    monkeypatch.setattr(sys.modules[__name__], "EMULATOR", [emulator] if emulator else [])
    LAUNCHES.clear()
    STACKS.clear()
