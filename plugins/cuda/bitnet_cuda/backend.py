"""CudaBackend: every KernelBackend op on device-resident buffers, through PyCUDA.

Host side only: kernels are the precompiled PTX of ``kernels/*.cu`` (see ``ptx.py``), launched
with the geometry of ``launch.py`` on weights laid out by ``layout.py``. Everything runs in
order on the context's default stream; only ``upload`` and ``download`` cross the bus, so a
decode step moves the token ids in and the logits out and nothing else.

Memory: weights get their own allocations; activations and scratch come from a PyCUDA
DeviceMemoryPool, so the many small per-op buffers of a decode step are recycled instead of
hitting cuMemAlloc each time. A buffer returns to the pool when Python drops it; as all work is
ordered on one stream, a recycled block is never written before earlier kernels finished with it.

Threads: a CUDA context is current per thread, and a server loads the model in one thread and
steps it in another, so every entry point that touches the GPU first makes the backend's
context current in the calling thread (``_here``). PyCUDA aborts the process when a thread
ends, or the interpreter exits, with a context left on that thread's stack, so each push is
popped in its own thread: when the thread ends (a guard in a module-level thread-local, so it
outlives the backend), at exit (atexit) or on ``close`` (the closing thread's own push).
"""

from __future__ import annotations

import atexit
import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycuda.driver as cuda
from pycuda.tools import DeviceMemoryPool

from bitnet.hal import arg_checks
from bitnet.hal.backend import KernelBackend, WeightTensor
from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.weight_formats import FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat
from bitnet.hal.ops import ALL_OPS

from bitnet_cuda import launch, ptx
from bitnet_cuda.launch import KERNEL_ARGS
from bitnet_cuda.layout import DeviceLayout, repack

FLOAT_KINDS = ("f32", "f16", "bf16", "i8g", "q6k")  # layouts of float-format weights


class CudaBuffer:
    """A device array: ``shape`` and ``dtype`` on the host, the allocation on the GPU."""

    __slots__ = ("shape", "dtype", "alloc")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, alloc: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.alloc = alloc

    @property
    def ptr(self) -> int:
        return int(self.alloc)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class CudaWeight:
    """A weight on the device in a ``layout.py`` layout; format/rows/cols as loaded."""

    format: WeightFormat
    rows: int
    cols: int
    out_scale: float
    kind: str  # the layout kind: "i2s", "tq", "f32", "f16", "bf16", "i8g", "q6k"
    arrays: dict[str, Any] = field(default_factory=dict)  # name -> DeviceAllocation
    w_scale: float = 1.0
    group: int = 0


@dataclass
class CudaKVCache:
    """f16 K and V for all layers, each [n_layers, n_ctx, n_kv_heads * head_dim], on the GPU."""

    n_ctx: int
    n_layers: int
    width: int  # n_kv_heads * head_dim
    k: Any
    v: Any


class CudaBackend(KernelBackend):
    """One NVIDIA GPU. Create through the ``cuda`` descriptor."""

    name = "cuda"

    def __init__(self, device: DeviceInfo) -> None:
        self.device = device
        dev = cuda.Device(device.index)
        self._context = dev.retain_primary_context()
        self._key = next(_BACKEND_KEYS)  # this backend's entry in each thread's _PUSHED
        self._here()
        self._arch = ptx.arch_for(dev.compute_capability())
        self._pool = DeviceMemoryPool()
        self._rows_key: tuple | None = None  # _rows_table's last table and what it holds
        self._rows_buf: CudaBuffer | None = None
        self._act_of: CudaBuffer | None = None  # _activations' last input, mode and result
        self._act_mode = ""
        self._act: tuple[CudaBuffer, ...] = ()
        self._kernels: dict[str, Any] = {}
        self._submissions = 0  # kernel launches and copies: bench's host submissions a token
        self._modules = []  # keep modules alive as long as their functions
        for module_name in ptx.KERNEL_MODULES:
            module = cuda.module_from_buffer(ptx.read_ptx(module_name, self._arch))
            self._modules.append(module)
        for kernel, arg_types in KERNEL_ARGS.items():
            self._kernels[kernel] = self._find(kernel).prepare(arg_types)
        self.capabilities = Capabilities(
            ops=ALL_OPS,
            ternary_formats=TERNARY_FORMATS,
            float_formats=FLOAT_FORMATS,
            notes=(f"PTX compute_{self._arch}, JIT-compiled by the driver",
                   "TQ1_0 is repacked to 2-bit codes at load (+18.5 % weight bytes)"),
        )

    def _find(self, kernel: str) -> Any:
        for module in self._modules:
            try:
                return module.get_function(kernel)
            except cuda.LogicError:
                continue
        raise RuntimeError(f"bitnet-cuda: kernel {kernel} is in no shipped PTX module")

    def _here(self) -> None:
        """Make the context current in the calling thread (once per thread)."""
        pushed = _pushed_here()
        if self._key not in pushed:
            self._context.push()
            pushed[self._key] = _Pushed()

    def _leave(self) -> None:
        """Pop the context from the calling thread's stack, if it pushed it."""
        _pushed_here().pop(self._key, None)  # the guard pops as it goes

    def _launch(self, spec: launch.Launch, *args: Any) -> None:
        self._here()
        self._kernels[spec.kernel].prepared_call(spec.grid, spec.block, *args)
        self._submissions += 1

    def _empty(self, shape: tuple[int, ...], dtype: Any) -> CudaBuffer:
        self._here()
        buf_dtype = np.dtype(dtype)
        nbytes = max(1, math.prod(shape) * buf_dtype.itemsize)
        return CudaBuffer(shape, buf_dtype, self._pool.allocate(nbytes))

    # -- buffers -----------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> CudaBuffer:
        """f32 2-D activations or int32 1-D token ids -> a device buffer."""
        array = np.ascontiguousarray(array)
        if array.dtype == np.float32 and array.ndim == 2:
            pass
        elif array.dtype == np.int32 and array.ndim == 1:
            pass
        else:
            raise ValueError(f"bitnet-cuda.upload: expects float32 2-D or int32 1-D, got "
                             f"{array.dtype} {array.shape}")
        buf = self._empty(array.shape, array.dtype)
        cuda.memcpy_htod(buf.ptr, array)
        self._submissions += 1
        return buf

    def download(self, buf: CudaBuffer) -> np.ndarray:
        self._here()
        out = np.empty(buf.shape, dtype=buf.dtype)
        cuda.memcpy_dtoh(out, buf.ptr)  # waits for the kernels that produce buf
        self._submissions += 1
        return out

    def load_weight(self, tensor: WeightTensor) -> CudaWeight:
        layout: DeviceLayout = repack(tensor)
        self._here()
        arrays = {name: cuda.to_device(np.ascontiguousarray(a)) for name, a in
                  layout.arrays.items()}
        return CudaWeight(tensor.format, tensor.rows, tensor.cols, float(tensor.out_scale),
                          layout.kind, arrays, layout.w_scale, layout.group)

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int,
                       head_dim: int) -> CudaKVCache:
        width = n_kv_heads * head_dim
        nbytes = n_layers * n_ctx * width * 2  # f16
        self._here()
        k = cuda.mem_alloc(nbytes)
        v = cuda.mem_alloc(nbytes)
        cuda.memset_d8(k, 0, nbytes)
        cuda.memset_d8(v, 0, nbytes)
        return CudaKVCache(n_ctx, n_layers, width, k, v)

    # -- ops ---------------------------------------------------------------------------------

    def embed(self, table: CudaWeight, token_ids: CudaBuffer) -> CudaBuffer:
        if table.kind not in FLOAT_KINDS:
            raise ValueError(f"bitnet-cuda.embed: the table must be a float format, got "
                             f"{table.format.value}")
        if len(token_ids.shape) != 1 or token_ids.dtype != np.int32:
            raise ValueError("bitnet-cuda.embed: token ids must be an int32 1-D buffer")
        n = token_ids.shape[0]
        out = self._empty((n, table.cols), np.float32)
        spec = launch.rows_launch(f"embed_{table.kind}", n, launch.EMBED_THREADS)
        self._launch(spec, *self._weight_args(table), token_ids.ptr, out.ptr, table.cols)
        return out

    def rmsnorm(self, x: CudaBuffer, weight: CudaBuffer, eps: float) -> CudaBuffer:
        n, k = arg_checks.activations_2d("bitnet-cuda", "rmsnorm", x)
        if int(np.prod(weight.shape)) != k:
            raise ValueError(f"bitnet-cuda.rmsnorm: weight {weight.shape} does not match K={k}")
        out = self._empty((n, k), np.float32)
        spec = launch.rows_launch("rmsnorm", n, launch.NORM_THREADS)
        self._launch(spec, x.ptr, weight.ptr, out.ptr, k, np.float32(eps))
        return out

    def linear_ternary(self, w: CudaWeight, x: CudaBuffer) -> CudaBuffer:
        if w.kind not in ("i2s", "tq"):
            raise ValueError(f"bitnet-cuda.linear_ternary: {w.format.value} is not ternary")
        n = launch.check_width(x.shape, w.cols, "linear_ternary")
        arg_checks.activations_2d("bitnet-cuda", "linear_ternary", x)
        m, k = w.rows, w.cols
        y = self._empty((n, m), np.float32)
        out_scale = np.float32(w.out_scale)
        if w.kind == "i2s":
            q, scale, qsum = self._activations(x, "per_token_i8")
            self._launch(launch.linear_launch("i2s", m, n), int(w.arrays["codes"]), q.ptr,
                         scale.ptr, qsum.ptr, np.float32(w.w_scale), out_scale, y.ptr, m, k, n)
            return y
        q, d, bsum = self._activations(x, "q8_k")
        self._launch(launch.linear_launch("tq", m, n), int(w.arrays["codes"]), int(w.arrays["d"]),
                     q.ptr, d.ptr, bsum.ptr, out_scale, y.ptr, m, k, n)
        return y

    def _activations(self, x: CudaBuffer, mode: str) -> tuple[CudaBuffer, ...]:
        """x f32 [n, K] quantized: "per_token_i8" -> (q int8 [n, K], scale f32 [n], code sum
        int32 [n]); "q8_k" -> (q, d f32 [n, K/256], block code sums int32 [n, K/256]). The last
        result is kept: q, k and v (and gate and up) read one input, which never changes once
        written (every op makes a new buffer), so it is quantized once, not three times."""
        if self._act_of is x and self._act_mode == mode:
            return self._act
        n, k = x.shape
        q = self._empty((n, k), np.int8)
        if mode == "per_token_i8":
            scale, total = self._empty((n,), np.float32), self._empty((n,), np.int32)
        else:
            scale = self._empty((n, k // launch.QK_K), np.float32)
            total = self._empty((n, k // launch.QK_K), np.int32)
        self._launch(launch.quantize_launch(mode, n, k), x.ptr, k, q.ptr, scale.ptr, total.ptr)
        self._act_of, self._act_mode, self._act = x, mode, (q, scale, total)
        return self._act

    def linear_float(self, w: CudaWeight, x: CudaBuffer) -> CudaBuffer:
        if w.kind not in FLOAT_KINDS:
            raise ValueError(f"bitnet-cuda.linear_float: {w.format.value} is not a float format")
        n = launch.check_width(x.shape, w.cols, "linear_float")
        arg_checks.activations_2d("bitnet-cuda", "linear_float", x)
        y = self._empty((n, w.rows), np.float32)
        if w.kind == "q6k":
            # llama.cpp's Q6_K x Q8_K (hal KernelBackend.linear_float)
            q, d, _ = self._activations(x, "q8_k")
            self._launch(launch.linear_launch("q6k", w.rows, n), *self._weight_args(w), q.ptr,
                         d.ptr, np.float32(w.out_scale), y.ptr, w.rows, w.cols, n)
            return y
        spec = launch.linear_launch(w.kind, w.rows, n)
        self._launch(spec, *self._weight_args(w), x.ptr, np.float32(w.out_scale), y.ptr, w.rows,
                     w.cols, n)
        return y

    @staticmethod
    def _weight_args(w: CudaWeight) -> tuple[Any, ...]:
        if w.kind == "i8g":
            return int(w.arrays["codes"]), int(w.arrays["scale"]), w.group
        if w.kind == "q6k":
            return int(w.arrays["codes"]), int(w.arrays["sub"]), int(w.arrays["d"])
        return (int(w.arrays["w"]),)

    def rope(self, x: CudaBuffer, pos: int, n_heads: int, head_dim: int,
             theta: float) -> CudaBuffer:
        n, width = arg_checks.rope_input("bitnet-cuda", x, n_heads, head_dim)
        out = self._empty((n, width), np.float32)
        spec = launch.heads_launch("rope_neox", n_heads, n, launch.ROPE_THREADS)
        self._launch(spec, x.ptr, out.ptr, n_heads, head_dim, pos, np.float64(theta))
        return out

    def attention(self, q: CudaBuffer, k: CudaBuffer, v: CudaBuffer, cache: CudaKVCache,
                  layer: int, pos: int, n_heads: int, n_kv_heads: int,
                  head_dim: int) -> CudaBuffer:
        launch.check_heads(n_heads, n_kv_heads, head_dim)
        if pos < 0:
            raise ValueError(f"bitnet-cuda.attention: negative position {pos}")
        n = arg_checks.attention_fits("bitnet-cuda", q, k, v, cache, layer, pos, n_heads,
                                     n_kv_heads, head_dim)
        width = n_kv_heads * head_dim
        self._launch(launch.rows_launch("kv_store", n, launch.KV_THREADS), k.ptr, v.ptr,
                     int(cache.k), int(cache.v), layer, pos, width, cache.n_ctx)
        out = self._empty((n, n_heads * head_dim), np.float32)
        spec = launch.heads_launch("attention", n_heads, n, launch.ATT_WARPS * 32)
        self._launch(spec, q.ptr, int(cache.k), int(cache.v), out.ptr, layer, pos, n_heads,
                     n_kv_heads, head_dim, cache.n_ctx, _score_scale(head_dim))
        return out

    def attention_rows(self, q: CudaBuffer, k: CudaBuffer, v: CudaBuffer,
                       caches: list[CudaKVCache], layer: int, positions: list[int], n_heads: int,
                       n_kv_heads: int, head_dim: int, theta: float) -> CudaBuffer:
        """One decode step of B sequences in four launches (rope_rows for q and for k,
        kv_store_rows, attention_rows), whatever B: the rows' cache addresses and positions
        travel in one small table, uploaded once per step and reused by every layer."""
        launch.check_heads(n_heads, n_kv_heads, head_dim)
        n = arg_checks.attention_rows_fit("bitnet-cuda", q, k, v, caches, positions, n_heads,
                                         n_kv_heads, head_dim)
        width = n_kv_heads * head_dim
        n_ctx = caches[0].n_ctx
        if any(c.n_ctx != n_ctx or c.width != width or not 0 <= layer < c.n_layers
               for c in caches):
            raise ValueError(f"bitnet-cuda.attention_rows: layer {layer} and heads of {width} "
                             f"must fit every cache, and the caches must share one n_ctx")
        table = self._rows_table(caches, positions)
        pos_ptr = table.ptr + 16 * n  # after the 2n cache addresses (uint64)
        rq = self._empty(q.shape, np.float32)
        rk = self._empty(k.shape, np.float32)
        theta64 = np.float64(theta)
        self._launch(launch.heads_launch("rope_rows", n_heads, n, launch.ROPE_THREADS), q.ptr,
                     rq.ptr, n_heads, head_dim, pos_ptr, theta64)
        self._launch(launch.heads_launch("rope_rows", n_kv_heads, n, launch.ROPE_THREADS), k.ptr,
                     rk.ptr, n_kv_heads, head_dim, pos_ptr, theta64)
        self._launch(launch.rows_launch("kv_store_rows", n, launch.KV_THREADS), rk.ptr, v.ptr,
                     table.ptr, pos_ptr, layer, width, n_ctx)
        out = self._empty((n, n_heads * head_dim), np.float32)
        self._launch(launch.heads_launch("attention_rows", n_heads, n, launch.ATT_WARPS * 32),
                     rq.ptr, table.ptr, pos_ptr, out.ptr, layer, n_heads, n_kv_heads, head_dim,
                     n_ctx, _score_scale(head_dim))
        return out

    def _rows_table(self, caches: list[CudaKVCache], positions: list[int]) -> CudaBuffer:
        """[K cache addresses, V cache addresses] as uint64, then the positions as int32, on the
        device; the last one is kept, as every layer of a step asks for the same table."""
        key = (tuple(int(c.k) for c in caches), tuple(int(c.v) for c in caches),
               tuple(positions))
        if self._rows_key != key:
            host = np.concatenate([np.array(key[0] + key[1], np.uint64).view(np.int32),
                                   np.array(positions, np.int32)])
            self._rows_buf = self.upload(host)
            self._rows_key = key
        return self._rows_buf

    def relu2_mul(self, gate: CudaBuffer, up: CudaBuffer) -> CudaBuffer:
        return self._elementwise("relu2_mul", gate, up)

    def silu_mul(self, gate: CudaBuffer, up: CudaBuffer) -> CudaBuffer:
        return self._elementwise("silu_mul", gate, up)

    def add(self, a: CudaBuffer, b: CudaBuffer) -> CudaBuffer:
        return self._elementwise("add", a, b)

    def _elementwise(self, kernel: str, a: CudaBuffer, b: CudaBuffer) -> CudaBuffer:
        arg_checks.same_shapes("bitnet-cuda", kernel, a, b)
        out = self._empty(a.shape, np.float32)
        count = a.shape[0] * a.shape[1]
        self._launch(launch.elementwise_launch(kernel, count), a.ptr, b.ptr, out.ptr, count)
        return out

    def slice_rows(self, x: CudaBuffer, start: int, stop: int) -> CudaBuffer:
        n, k = arg_checks.activations_2d("bitnet-cuda", "slice_rows", x)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"bitnet-cuda.slice_rows: rows {start}..{stop} of {n}")
        out = self._empty((stop - start, k), np.float32)
        if stop > start:
            cuda.memcpy_dtod(out.ptr, x.ptr + start * k * 4, (stop - start) * k * 4)
            self._submissions += 1
        return out

    def concat_rows(self, parts: list[CudaBuffer]) -> CudaBuffer:
        """Stack f32 [n_i, K] buffers into one [sum n_i, K] (rows of several sequences)."""
        k = arg_checks.concat_width("bitnet-cuda", parts)
        out = self._empty((sum(p.shape[0] for p in parts), k), np.float32)
        offset = 0
        for part in parts:
            cuda.memcpy_dtod(out.ptr + offset, part.ptr, part.nbytes)
            self._submissions += 1
            offset += part.nbytes
        return out

    def submission_count(self) -> int:
        return self._submissions

    def synchronize(self) -> None:
        self._here()
        cuda.Context.synchronize()

    def close(self) -> None:
        if self._context is None:
            return
        self.synchronize()
        self._rows_buf = self._rows_key = self._act_of = None
        self._act = ()
        self._pool.stop_holding()
        self._kernels.clear()
        self._modules.clear()
        self._leave()
        self._context = None

    def info(self) -> dict[str, Any]:
        return {"kernel": f"ptx compute_{self._arch}", "gemv": "warp per row",
                "gemm_tokens_per_warp": launch.GEMM_TOKENS, "ptx": ptx.fingerprint()}


def _score_scale(head_dim: int) -> np.float32:
    """The attention scores' factor, rounded to f32 as the reference does."""
    return np.float32(1 / np.sqrt(head_dim))


_PUSHED = threading.local()  # .by_backend: {backend key: _Pushed} of the contexts this thread pushed
_BACKEND_KEYS = itertools.count()


def _pushed_here() -> dict[int, _Pushed]:
    try:
        return _PUSHED.by_backend
    except AttributeError:
        _PUSHED.by_backend = {}
        return _PUSHED.by_backend


class _Pushed:
    """One push of a backend's context in one thread. Dropped when the thread ends (CPython
    clears a finished thread's locals in that thread; _PUSHED is module-level, so this holds
    even after the backend is gone) or by ``_leave`` in the same thread; it then pops the
    context from that thread's stack."""

    def __del__(self) -> None:
        cuda.Context.pop()


@atexit.register
def _leave_at_exit() -> None:
    """Pop every push of the main thread, while PyCUDA is still whole: PyCUDA aborts the
    process if a context is still on the main thread's stack when that stack is destroyed,
    after the atexit handlers have run."""
    _pushed_here().clear()
