"""GpuBackend: the KernelBackend contract written once over a DeviceRuntime.

Weights, the KV cache, step buffers and every op as a sequence of dispatches live here; a GPU
plugin supplies only its devices, a ``DeviceRuntime`` and the kernels of
``bitnet.hal.device_runtime.KERNELS``. Buffers stay on the device between ops; activations come
from a size-class pool, so a decode step's many small buffers are recycled (a buffer returns to
the pool when Python drops it; each runtime orders its work, so a reused block is never written
before earlier readers ran).

Positions and block tables reach the kernels in device buffers (``KERNELS``' "step" and
"table"): rope, kv_store and attention read row r's position from step[r], so n tokens of one
sequence and attention_rows' B sequences are the same dispatches, and a recorded step replays
at new positions by rewriting its step buffer.

Weight layouts (``bitnet.hal.device_layout``): ternary weights as I2_S-interleaved 2-bit codes
(TQ1_0 and TQ2_0 with f32 block scales), Q6_K split into its integer parts for llama.cpp's
Q6_K x Q8_K dot, other float formats as their on-disk rows, decoded in the kernel.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from bitnet.hal import arg_checks
from bitnet.hal.backend import KernelBackend, LayerSpec, WeightTensor
from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.device_layout import float_rows, split_q6_k_ints, ternary_as_i2s
from bitnet.hal.device_runtime import ATTENTION_SPLIT, DeviceRuntime, KernelSpec
from bitnet.hal.kv_blocks import KV_BLOCK, check_table
from bitnet.hal.weight_formats import FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat
from bitnet.hal.ops import ALL_OPS
from bitnet.hal.rope_tables import RopeTables

TILE_N = 8  # tokens per matmul work-group (the kernels' TILE_N)
MATMUL_WORK_GROUP = 128  # invocations of one matmul work-group (lanes x rows)
MIN_BLOCK = 256  # pooled buffers are powers of two from here


@dataclass
class DeviceArray:
    """A device buffer: f32 [n, K] activations, int32 [n] ids, or int8 / f32 scratch."""

    mem: Any
    shape: tuple[int, ...]
    dtype: np.dtype
    _finalizer: Any = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class TernaryWeight:
    format: WeightFormat
    rows: int
    cols: int
    codes: Any  # uint8 [M, K/4], I2_S interleave
    block_scales: Any | None  # TQ1_0 / TQ2_0: f32 [M, K/256]
    tensor_scale: float  # I2_S
    out_scale: float


@dataclass
class FloatWeight:
    format: WeightFormat
    rows: int
    cols: int
    data: Any  # on-disk bytes [rows, row_bytes]
    row_bytes: int
    out_scale: float


@dataclass
class Q6KWeight:
    """Q6_K split for the integer Q6_K x Q8_K dot (hal linear_float) and embed."""

    format: WeightFormat
    rows: int
    cols: int
    codes: Any  # int8 [M, K] in -32..31
    sub: Any  # int8 [M, K/16]: sub-block scales
    d: Any  # f32 [M, K/256]: block scales
    out_scale: float


GpuWeight = TernaryWeight | FloatWeight | Q6KWeight


@dataclass
class GpuKVCache:
    n_layers: int
    n_ctx: int
    width: int  # n_kv_heads * head_dim (even)
    k: Any  # f16 [n_layers, n_ctx, width]
    v: Any


@dataclass(frozen=True)
class FusedLayer:
    """``prepare_layer``'s handle: a block whose seven matmuls are one ternary family ("i2s":
    I2_S; "tq": TQ1_0 / TQ2_0, one activation quantizer), run by the FUSED_KERNELS."""

    spec: LayerSpec
    family: str  # "i2s" or "tq"


# LayerSpec.activation -> the fused gate/up kernel's act scalar (relu2_mul, silu_mul)
FUSED_ACTIVATIONS = {"relu2": 0, "silu": 1}


@dataclass
class StepRecording:
    """Ops captured once by ``GpuBackend.recording``: ``replay(pos)`` runs their dispatches
    again on the same buffers (kept here, so the pool never hands them out), reading whatever
    their inputs hold by then, at position ``pos`` (< ``positions``: the rope tables', the KV
    cache's and any block table's reach when captured)."""

    backend: "GpuBackend"
    recording: Any  # the runtime's Recording
    buffers: list[DeviceArray]
    positions: int
    steps: dict[int, DeviceArray] = field(default_factory=dict)  # n -> step buffer int32 [n]
    # a captured batched step (attention_rows): its rows' positions int32 [B] and block tables
    # int32 [B, T], which replay_rows writes; the tables last written (rewritten on change)
    rows: tuple[DeviceArray, DeviceArray] | None = None
    rows_tables: np.ndarray | None = None

    def replay(self, pos: int) -> None:
        if self.rows is not None:
            raise ValueError(f"{self.backend.name}: a recorded batched step replays with "
                             f"replay_rows(positions, tables)")
        if not 0 <= pos < self.positions:
            raise ValueError(f"{self.backend.name}: position {pos} is beyond this recording "
                             f"({self.positions} positions)")
        for n, step in self.steps.items():  # the captured tokens' positions: pos .. pos+n-1
            self.backend.runtime.copy_in(step.mem, np.arange(pos, pos + n, dtype=np.int32))
        self.recording.replay()

    def replay_rows(self, positions: np.ndarray, tables: np.ndarray) -> None:
        """A recorded batched step again: row r at positions[r] through tables[r] (int32 [B]
        and [B, T], the shapes captured; every position below ``positions``)."""
        if self.rows is None:
            raise ValueError(f"{self.backend.name}: this recording is of one sequence: "
                             f"replay(pos)")
        step, table = self.rows
        positions = np.ascontiguousarray(positions, dtype=np.int32)
        tables = np.ascontiguousarray(tables, dtype=np.int32)
        if positions.shape != step.shape or tables.shape != table.shape:
            raise ValueError(f"{self.backend.name}: replay_rows of positions {positions.shape} "
                             f"and tables {tables.shape} on a recording of {step.shape} and "
                             f"{table.shape}")
        if positions.size and not (0 <= positions.min() and positions.max() < self.positions):
            raise ValueError(f"{self.backend.name}: positions up to {int(positions.max())} are "
                             f"beyond this recording ({self.positions} positions)")
        self.backend.runtime.copy_in(step.mem, positions)
        if self.rows_tables is None or not np.array_equal(self.rows_tables, tables):
            self.backend.runtime.copy_in(table.mem, tables)
            self.rows_tables = tables.copy()
        self.recording.replay()

    def close(self) -> None:
        """Free the runtime's recording (command buffers, descriptor sets); the buffers go
        back to the pool when this is dropped."""
        destroy = getattr(self.recording, "destroy", None)
        if destroy is not None:
            destroy()


class BufferPool:
    """Free device blocks by power-of-two size class (tinygrad's LRU allocator, simplified)."""

    def __init__(self, runtime: DeviceRuntime) -> None:
        self.runtime = runtime
        self.free: dict[int, list[Any]] = {}
        self.closed = False

    def take(self, nbytes: int) -> tuple[Any, int]:
        size = max(MIN_BLOCK, 1 << (max(nbytes, 1) - 1).bit_length())
        size = min(size, max(nbytes, self.runtime.limits.max_buffer))
        blocks = self.free.get(size)
        if blocks:
            return blocks.pop(), size
        return self.runtime.allocate(size), size

    def give(self, mem: Any, size: int) -> None:
        if not self.closed:
            self.free.setdefault(size, []).append(mem)

    def close(self) -> None:
        self.closed = True
        self.free.clear()


class GpuBackend(KernelBackend):
    """Every KernelBackend op on one device through ``runtime``. A plugin's descriptor creates
    it with its runtime; ``name`` is the plugin's."""

    def __init__(self, name: str, device: DeviceInfo, runtime: DeviceRuntime,
                 notes: tuple[str, ...] = ()) -> None:
        self.name = name
        self.device = device
        self.runtime = runtime
        self.capabilities = Capabilities(ops=ALL_OPS, ternary_formats=TERNARY_FORMATS,
                                         float_formats=FLOAT_FORMATS, notes=notes)
        self._pool = BufferPool(runtime)
        self._matmul_specs: dict[tuple[str, int, str, int], KernelSpec] = {}  # _matmul's
        # the last input quantized, its mode and its (q, scales): q/k/v (and gate/up) read one
        # input, quantized once; holding x keeps its buffer out of the pool, and ops write new
        # buffers, so only ``write`` can change it (and it drops the memo)
        self._quantized: tuple[DeviceArray, str, tuple[DeviceArray, DeviceArray]] | None = None
        self._reach = 0  # while capturing: the positions the captured ops can replay at
        self._capture: StepRecording | None = None  # the recording being captured, if any
        # small int32 host arrays on the device (positions, block tables), by role: the last
        # upload and a copy of what it holds. The model hands every layer of a step the same
        # positions and tables: they go up once a step. Matched by content, not identity, so
        # a caller that rewrites its array in place is never served stale values; a new upload
        # takes a new buffer (work queued on the old one still reads what it was given).
        self._uploads: dict[str, tuple[np.ndarray, DeviceArray]] = {}
        # f64 tables where the device has fp64: then rope matches the reference bit for bit
        self._rope_tables = RopeTables(self._to_device,
                                       np.float64 if runtime.limits.fp64 else np.float32)

    # -- buffers -----------------------------------------------------------------------------

    def _alloc(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0:
            raise ValueError(f"{self.name}: cannot allocate an empty buffer of shape {shape}")
        mem, size = self._pool.take(nbytes)
        array = DeviceArray(mem, tuple(int(s) for s in shape), dtype)
        array._finalizer = weakref.finalize(array, self._pool.give, mem, size)
        if self._capture is not None:  # the recording holds its buffers
            self._capture.buffers.append(array)
        return array

    def _to_device(self, array: np.ndarray) -> Any:
        """A weight or table: its own allocation, kept until close."""
        array = np.ascontiguousarray(array)
        mem = self.runtime.allocate(max(4, (array.nbytes + 3) // 4 * 4))
        self.runtime.copy_in(mem, array)
        return mem

    def upload(self, array: np.ndarray) -> DeviceArray:
        array = np.asarray(array)
        if not ((array.dtype == np.int32 and array.ndim == 1)
                or (array.dtype == np.float32 and array.ndim == 2)):
            raise ValueError(f"{self.name} upload takes float32 2-D or int32 1-D arrays, got "
                             f"{array.dtype} {array.ndim}-D")
        buf = self._alloc(array.shape, array.dtype)
        self.runtime.copy_in(buf.mem, np.ascontiguousarray(array))
        return buf

    def write(self, buf: DeviceArray, array: np.ndarray) -> None:
        """Overwrite a buffer with a host array of its shape and dtype (a recording's input)."""
        array = np.ascontiguousarray(array, dtype=buf.dtype)
        if array.shape != buf.shape:
            raise ValueError(f"{self.name} write: {array.shape} into a {buf.shape} buffer")
        if self._quantized is not None and self._quantized[0] is buf:
            self._quantized = None  # its quantization no longer holds
        self.runtime.copy_in(buf.mem, array)

    def download(self, buf: DeviceArray) -> np.ndarray:
        raw = self.runtime.copy_out(buf.mem, buf.nbytes)
        return raw.view(buf.dtype).reshape(buf.shape).copy()

    def load_weight(self, tensor: WeightTensor) -> GpuWeight:
        if tensor.format in TERNARY_FORMATS:
            host = ternary_as_i2s(tensor)
            scales = None
            if host.block_scales is not None:
                scales = self._to_device(host.block_scales.astype(np.float32))
            return TernaryWeight(tensor.format, tensor.rows, tensor.cols,
                                 self._to_device(host.codes), scales, host.tensor_scale,
                                 float(tensor.out_scale))
        if tensor.format is WeightFormat.Q6_K:
            codes, sub, d = split_q6_k_ints(tensor)
            return Q6KWeight(tensor.format, tensor.rows, tensor.cols, self._to_device(codes),
                             self._to_device(sub), self._to_device(d), float(tensor.out_scale))
        if tensor.format in FLOAT_FORMATS:
            rows = float_rows(tensor)
            return FloatWeight(tensor.format, tensor.rows, tensor.cols, self._to_device(rows),
                               rows.shape[1], float(tensor.out_scale))
        raise ValueError(f"{tensor.name}: {self.name} cannot hold {tensor.format.value}")

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int,
                       head_dim: int) -> GpuKVCache:
        width = n_kv_heads * head_dim
        if width % 2:
            raise ValueError(f"{self.name} KV cache rows must hold an even count, got {width}")
        nbytes = n_layers * n_ctx * width * 2  # f16
        return GpuKVCache(n_layers, n_ctx, width, self.runtime.allocate(nbytes),
                          self.runtime.allocate(nbytes))

    def _device_ints(self, role: str, values: np.ndarray) -> DeviceArray:
        """int32 host values on the device, uploaded again only when they differ from the
        role's last upload (``_uploads``)."""
        last = self._uploads.get(role)
        if last is not None and np.array_equal(last[0], values):
            return last[1]
        values = np.ascontiguousarray(values, dtype=np.int32)
        buf = self._alloc(values.shape, np.int32)
        self.runtime.copy_in(buf.mem, values)
        self._uploads[role] = (values.copy(), buf)
        return buf

    def _segment(self, pos: int, n: int) -> DeviceArray:
        """The step buffer of n tokens of one sequence at pos: int32 [n], pos .. pos+n-1.
        While capturing, one unwritten buffer per n that each replay fills
        (StepRecording.replay)."""
        if self._capture is not None:
            if self._capture.rows is not None:
                raise ValueError(f"{self.name}: one recording holds one sequence's tokens or "
                                 f"one batched step, not both")
            step = self._capture.steps.get(n)
            if step is None:
                step = self._capture.steps[n] = self._alloc((n,), np.int32)
            return step
        return self._device_ints("step", np.arange(pos, pos + n, dtype=np.int32))

    # -- dispatch ----------------------------------------------------------------------------

    def _run(self, spec: KernelSpec, grid: tuple[int, ...], buffers: list[Any],
             *scalars: float) -> None:
        self.runtime.dispatch(self.runtime.kernel(spec), grid, buffers, scalars)

    def _matmul(self, name: str, words_per_row: int, fmt: str = "",
                blocks: int = 0) -> KernelSpec:
        """A matmul kernel's spec: lanes = the SIMD width clamped to [TILE_N, 32]; rows fill
        MATMUL_WORK_GROUP invocations within the shared memory (words_per_row int32 a row).
        Worked out once per shape (every eager matmul of every token asks again)."""
        key = (name, words_per_row, fmt, blocks)
        spec = self._matmul_specs.get(key)
        if spec is None:
            spec = self._matmul_specs[key] = self._matmul_spec(name, words_per_row, fmt, blocks)
        return spec

    def _matmul_spec(self, name: str, words_per_row: int, fmt: str, blocks: int) -> KernelSpec:
        limits = self.runtime.limits
        lanes = 1 << (min(32, max(TILE_N, limits.simd_width)).bit_length() - 1)
        if lanes > limits.max_work_group:
            raise RuntimeError(f"{self.name} {name}: matmuls need {lanes} invocations per group")
        rows = max(1, min(MATMUL_WORK_GROUP, limits.max_work_group) // lanes)
        rows = min(rows, limits.max_rows, limits.shared_memory // (4 * words_per_row))
        if rows < 1:
            raise ValueError(f"{self.name} {name}: one row needs {4 * words_per_row} bytes of "
                             f"shared memory, the device has {limits.shared_memory}")
        return KernelSpec(name, fmt=fmt, lanes=lanes, rows=rows, blocks=blocks)

    def _matmul_grid(self, name: str, words_per_row: int, m: int, n: int, fmt: str = "",
                     blocks: int = 0) -> tuple[KernelSpec, tuple[int, int]]:
        """A matmul's spec and grid (row groups, token tiles) for m rows x n tokens: the
        runtime's MatmulTile for the kernel once n reaches its min_tokens, else ``_matmul``'s
        shape over TILE_N tokens."""
        for tile in self.runtime.limits.matmul_tiles:
            if name in tile.kernels and n >= tile.min_tokens:
                spec = KernelSpec(name, fmt=fmt, blocks=blocks, variant=tile.variant)
                return spec, (-(-m // tile.rows), -(-n // tile.tokens))
        spec = self._matmul(name, words_per_row, fmt=fmt, blocks=blocks)
        return spec, (-(-m // spec.rows), -(-n // TILE_N))

    # -- ops ---------------------------------------------------------------------------------

    def embed(self, table: GpuWeight, token_ids: DeviceArray) -> DeviceArray:
        if not isinstance(table, (FloatWeight, Q6KWeight)):
            raise TypeError(f"{self.name} embed needs a float-format table, got "
                            f"{table.format.value}")
        n = token_ids.shape[0]
        out = self._alloc((n, table.cols), np.float32)
        if isinstance(table, Q6KWeight):
            self._run(KernelSpec("embed_q6_k"), (table.cols, n),
                      [table.codes, table.sub, table.d, token_ids.mem, out.mem], table.cols)
            return out
        self._run(KernelSpec("embed", fmt=table.format.value), (table.cols, n),
                  [table.data, token_ids.mem, out.mem], table.row_bytes, table.cols)
        return out

    def rmsnorm(self, x: DeviceArray, weight: DeviceArray, eps: float) -> DeviceArray:
        n, k = arg_checks.norm_input(self.name, x, weight)
        out = self._alloc((n, k), np.float32)
        self._run(KernelSpec("rmsnorm"), (n, 1), [x.mem, weight.mem, out.mem], k, eps)
        return out

    def _quantize(self, x: DeviceArray, mode: str) -> tuple[DeviceArray, DeviceArray]:
        """x f32 [n, K] -> (q int8 [n, K], scales): "per_token_i8" one f32 per row [n],
        "q8_k" one f32 d per 256-block [n, K/256]. The same x again reuses the last result."""
        last = self._quantized
        if last is not None and last[0] is x and last[1] == mode:
            return last[2]
        n, k = x.shape
        q = self._alloc((n, k), np.int8)
        if mode == "per_token_i8":
            scales = self._alloc((n,), np.float32)
            self._run(KernelSpec("quantize_per_token_i8"), (n, 1), [x.mem, q.mem, scales.mem], k)
        else:
            scales = self._alloc((n, k // 256), np.float32)
            self._run(KernelSpec("quantize_q8_k"), (k // 256, n), [x.mem, q.mem, scales.mem], k)
        self._quantized = (x, mode, (q, scales))
        return q, scales

    def linear_ternary(self, w: GpuWeight, x: DeviceArray) -> DeviceArray:
        if not isinstance(w, TernaryWeight):
            raise TypeError(f"{self.name} linear_ternary got a {w.format.value} weight")
        n, k = arg_checks.matmul_input(self.name, "linear_ternary", x, w.cols)
        out = self._alloc((n, w.rows), np.float32)
        if w.format is WeightFormat.I2_S:
            q, scales = self._quantize(x, "per_token_i8")
            spec, grid = self._matmul_grid("linear_i2s", TILE_N * 32, w.rows, n)
            self._run(spec, grid, [w.codes, q.mem, scales.mem, out.mem], k, n, w.rows,
                      w.tensor_scale, w.out_scale)
            return out
        nb = k // 256
        q, act_d = self._quantize(x, "q8_k")
        spec, grid = self._matmul_grid("linear_tq", TILE_N * nb, w.rows, n, blocks=nb)
        self._run(spec, grid, [w.codes, w.block_scales, q.mem, act_d.mem, out.mem], k, n,
                  w.rows, w.out_scale)
        return out

    def linear_float(self, w: GpuWeight, x: DeviceArray) -> DeviceArray:
        n, k = arg_checks.matmul_input(self.name, "linear_float", x, w.cols)
        out = self._alloc((n, w.rows), np.float32)
        if isinstance(w, Q6KWeight):  # Q6_K x Q8_K as llama.cpp (hal KernelBackend.linear_float)
            nb = k // 256
            q, act_d = self._quantize(x, "q8_k")
            spec, grid = self._matmul_grid("linear_q6_k", TILE_N * nb, w.rows, n, blocks=nb)
            self._run(spec, grid, [w.codes, w.sub, w.d, q.mem, act_d.mem, out.mem], k, n,
                      w.rows, w.out_scale)
            return out
        if not isinstance(w, FloatWeight):
            raise TypeError(f"{self.name} linear_float got a {w.format.value} weight")
        spec, grid = self._matmul_grid("linear_float", TILE_N * 32, w.rows, n,
                                       fmt=w.format.value)
        self._run(spec, grid, [w.data, x.mem, out.mem], w.row_bytes, k, n, w.rows, w.out_scale)
        return out

    def rope(self, x: DeviceArray, pos: int, n_heads: int, head_dim: int,
             theta: float) -> DeviceArray:
        n, _ = arg_checks.rope_input(self.name, x, n_heads, head_dim)
        return self._rope(x, self._segment(pos, n), pos + n, n_heads, head_dim, theta, n)

    def _rope(self, x: DeviceArray, step: DeviceArray, end: int, n_heads: int, head_dim: int,
              theta: float, run: int = 1) -> DeviceArray:
        """Rows of x rotated at the positions step holds (all below ``end``); ``run``: how many
        consecutive positions the rows hold from the first (n tokens of one sequence), which
        bounds where a recording of it may start."""
        n, width = x.shape
        cos_t, sin_t = self._angles(theta, head_dim, end, run)
        out = self._alloc((n, width), np.float32)
        self._run(KernelSpec("rope"), (width // 2, n),
                  [x.mem, cos_t, sin_t, step.mem, out.mem], n_heads, head_dim)
        return out

    def _angles(self, theta: float, head_dim: int, end: int, run: int) -> tuple[Any, Any]:
        """The rope cos / sin tables reaching position ``end`` - 1; while capturing, a replay
        can start as far as the tables hold ``run`` consecutive positions from there."""
        tables = self._rope_tables.get(theta, head_dim, end)
        if self._capture is not None:
            self._reach = min(self._reach, self._rope_tables.positions(theta, head_dim) - run + 1)
        return tables

    def attention(self, q: DeviceArray, k: DeviceArray, v: DeviceArray, cache: GpuKVCache,
                  layer: int, pos: int, n_heads: int, n_kv_heads: int, head_dim: int,
                  table: np.ndarray | None = None) -> DeviceArray:
        n = arg_checks.attention_fits(self.name, q, k, v, cache, layer, pos, n_heads, n_kv_heads,
                                     head_dim, table)
        self._head_fits("attention", head_dim)
        span = self._span("attention", cache, pos, n, table)
        tables = None if table is None else self._device_ints("table", table)
        return self._attend(q, k, v, cache, layer, self._segment(pos, n), tables, span,
                            n_heads, n_kv_heads, head_dim)

    def _span(self, op: str, cache: GpuKVCache, pos: int, n: int,
              table: np.ndarray | None) -> int:
        """The attention scores' stride for n tokens at pos: one past the last position; while
        capturing, every position the cache (or the block table) holds, as a replay may run
        at any of them."""
        if self._capture is None:
            return pos + n
        span = cache.n_ctx
        if table is not None:  # all of it: a replay reads as far as it reaches
            span = len(table) * KV_BLOCK
            check_table(f"{self.name} {op}", table, cache.n_ctx, span)
        self._reach = min(self._reach, span - n + 1)
        return span

    def attention_rows(self, q: DeviceArray, k: DeviceArray, v: DeviceArray, cache: GpuKVCache,
                       layer: int, positions: np.ndarray, n_heads: int, n_kv_heads: int,
                       head_dim: int, theta: float, tables: np.ndarray) -> DeviceArray:
        """The B rows in four dispatches whatever B: rope of q, rope of k, kv_store and
        attention, each over all rows, reading row r's position from the step buffer and its
        block table from row r of the tables buffer (both uploaded once a step: every layer
        passes the same arrays)."""
        tables, positions = arg_checks.attention_rows_fit(self.name, q, k, v, cache, positions,
                                                          tables, n_heads, n_kv_heads, head_dim)
        self._head_fits("attention_rows", head_dim)
        if self._capture is not None:  # replay_rows writes the rows' positions and tables
            step, table, end = self._captured_rows(positions, tables)
        else:
            step, table = self._device_ints("step", positions), self._device_ints("table", tables)
            end = int(positions.max()) + 1
        q = self._rope(q, step, end, n_heads, head_dim, theta)
        k = self._rope(k, step, end, n_kv_heads, head_dim, theta)
        return self._attend(q, k, v, cache, layer, step, table, end, n_heads, n_kv_heads,
                            head_dim)

    def _captured_rows(self, positions: np.ndarray,
                       tables: np.ndarray) -> tuple[DeviceArray, DeviceArray, int]:
        """While capturing a batched step: the recording's own positions and tables buffers
        (one pair for every layer) and the reach of its tables, which any replay may use."""
        capture = self._capture
        if capture.steps:
            raise ValueError(f"{self.name}: one recording holds one sequence's tokens or one "
                             f"batched step, not both")
        if capture.rows is None:
            capture.rows = (self._alloc(positions.shape, np.int32),
                            self._alloc(tables.shape, np.int32))
        elif capture.rows[1].shape != tables.shape:
            raise ValueError(f"{self.name}: every layer of a recorded step takes tables of "
                             f"one shape, got {tables.shape} after {capture.rows[1].shape}")
        end = tables.shape[1] * KV_BLOCK
        self._reach = min(self._reach, end)
        return capture.rows[0], capture.rows[1], end

    def _head_fits(self, op: str, head_dim: int) -> None:
        if head_dim > self.runtime.limits.max_head_dim:
            raise ValueError(f"{self.name} {op}: head_dim {head_dim} > "
                             f"{self.runtime.limits.max_head_dim}")

    def _attend(self, q: DeviceArray, k: DeviceArray, v: DeviceArray, cache: GpuKVCache,
                layer: int, step: DeviceArray, tables: DeviceArray | None, span: int,
                n_heads: int, n_kv_heads: int, head_dim: int) -> DeviceArray:
        """kv_store then attention for the rows of q, k, v (after RoPE): row r at position
        step[r], through row r of ``tables`` (int32 [B, T]) or, for a 1-D table, through it
        for every row; None: position p is cache row p. ``span`` > every position."""
        rows = q.shape[0]
        width = n_kv_heads * head_dim
        table, block, stride = step.mem, 0, 0  # no table: the kernels read none (any binds)
        if tables is not None:
            table, block = tables.mem, KV_BLOCK
            stride = tables.shape[1] if len(tables.shape) == 2 else 0
        self._run(KernelSpec("kv_store"), (width // 2, rows),
                  [k.mem, v.mem, cache.k, cache.v, step.mem, table], layer, cache.n_ctx, width,
                  block, stride)
        scores, parts, splits = self._attention_scratch(rows, n_heads, head_dim, span)
        scale = float(np.float32(1 / np.sqrt(head_dim)))
        self._run(KernelSpec("attention"), (n_heads * splits, rows),
                  [q.mem, cache.k, cache.v, step.mem, table, scores.mem, parts.mem], layer,
                  cache.n_ctx, n_heads, n_kv_heads, head_dim, scale, block, stride, span)
        return self._attention_combine(step, parts, rows, n_heads, head_dim, span)

    def _attention_scratch(self, rows: int, n_heads: int, head_dim: int,
                           span: int) -> tuple[DeviceArray, DeviceArray, int]:
        """attention's scratch for positions below span: the scores [rows, H, span], each split
        run's (max, sum, output) [rows, H, splits, D + 2], and the count of split runs (the
        grid's, from span alone: a recording's grid holds at every position)."""
        splits = -(-span // ATTENTION_SPLIT)
        scores = self._alloc((rows, n_heads, span), np.float32)
        parts = self._alloc((rows, n_heads, splits, head_dim + 2), np.float32)
        return scores, parts, splits

    def _attention_combine(self, step: DeviceArray, parts: DeviceArray, rows: int,
                           n_heads: int, head_dim: int, span: int) -> DeviceArray:
        """The split runs of each (row, head) merged into attention's output [rows, H*D]."""
        out = self._alloc((rows, n_heads * head_dim), np.float32)
        self._run(KernelSpec("attention_combine"), (n_heads, rows),
                  [step.mem, parts.mem, out.mem], n_heads, head_dim, span)
        return out

    def _elementwise(self, name: str, a: DeviceArray, b: DeviceArray) -> DeviceArray:
        arg_checks.same_shapes(self.name, name, a, b)
        out = self._alloc(a.shape, np.float32)
        count = a.shape[0] * a.shape[1]
        self._run(KernelSpec(name), (count, 1), [a.mem, b.mem, out.mem], count)
        return out

    def relu2_mul(self, gate: DeviceArray, up: DeviceArray) -> DeviceArray:
        return self._elementwise("relu2_mul", gate, up)

    def silu_mul(self, gate: DeviceArray, up: DeviceArray) -> DeviceArray:
        return self._elementwise("silu_mul", gate, up)

    def add(self, a: DeviceArray, b: DeviceArray) -> DeviceArray:
        return self._elementwise("add", a, b)

    def slice_rows(self, x: DeviceArray, start: int, stop: int) -> DeviceArray:
        _, k = arg_checks.row_slice(self.name, x, start, stop)
        out = self._alloc((stop - start, k), np.float32)
        self.runtime.copy(x.mem, start * k * 4, out.mem, 0, (stop - start) * k * 4)
        return out

    def concat_rows(self, parts: list[DeviceArray]) -> DeviceArray:
        k = arg_checks.concat_width(self.name, parts)
        out = self._alloc((sum(p.shape[0] for p in parts), k), np.float32)
        row = 0
        for part in parts:
            self.runtime.copy(part.mem, 0, out.mem, row * k * 4, part.shape[0] * k * 4)
            row += part.shape[0]
        return out

    # -- a whole decode block in eight dispatches -----------------------------------------------

    def prepare_layer(self, spec: LayerSpec) -> FusedLayer | None:
        """A block runs fused (``decode_layer``) where the runtime has the FUSED_KERNELS and
        its seven matmuls are one ternary family; float or mixed weights, a row wider than
        the prologue's shared memory or a head wider than attention's run op by op (None)."""
        if spec.activation not in FUSED_ACTIVATIONS:
            raise ValueError(f"{self.name} prepare_layer: unknown activation "
                             f"{spec.activation!r} (relu2 or silu)")
        weights = (spec.attn_q, spec.attn_k, spec.attn_v, spec.attn_output, spec.ffn_gate,
                   spec.ffn_up, spec.ffn_down)
        if not all(isinstance(w, TernaryWeight) for w in weights):
            return None
        families = {"i2s" if w.format is WeightFormat.I2_S else "tq" for w in weights}
        width = spec.attn_q.cols
        if (len(families) != 1 or width > getattr(self.runtime, "fused_max_width", 0)
                or spec.head_dim > self.runtime.limits.max_head_dim):
            return None
        return FusedLayer(spec, families.pop())

    def decode_layer(self, layer: FusedLayer, h: DeviceArray, cache: GpuKVCache, index: int,
                     pos: int, table: np.ndarray | None = None) -> DeviceArray:
        """One token's block in eight dispatches, the bits of the ops (``KernelBackend``):
        norm_qkv, rope_attention, attention_combine, rmsnorm_quantize (or the plain quantizer
        without a sub-norm), linear_add, norm_gate_up, rmsnorm_quantize, linear_add."""
        s = layer.spec
        d = s.attn_q.cols
        if tuple(h.shape) != (1, d) or h.dtype != np.float32:
            raise ValueError(f"{self.name} decode_layer: h must be float32 [1, {d}], got "
                             f"{list(h.shape)} {h.dtype}")
        if cache.width != s.n_kv_heads * s.head_dim:
            raise ValueError(f"{self.name} decode_layer: the KV cache was allocated for other "
                             f"head sizes")
        arg_checks.cache_reach(self.name, "decode_layer", cache, index, pos, 1, table)
        qkv = self._norm_matmul(layer, "norm_qkv", h, s.attn_norm, (s.attn_q, s.attn_k, s.attn_v))
        a = self._rope_attention(s, qkv, cache, index, pos, table)
        h = self._linear_add(layer, s.attn_output, self._norm_quantize(layer, a, s.attn_sub_norm),
                             h)
        f = self._norm_matmul(layer, "norm_gate_up", h, s.ffn_norm, (s.ffn_gate, s.ffn_up),
                              FUSED_ACTIVATIONS[s.activation])
        return self._linear_add(layer, s.ffn_down, self._norm_quantize(layer, f, s.ffn_sub_norm),
                                h)

    def _norm_matmul(self, layer: FusedLayer, name: str, x: DeviceArray, norm: DeviceArray,
                     weights: tuple[TernaryWeight, ...], act: int | None = None) -> DeviceArray:
        """rmsnorm(x, norm) quantized in each work-group (prologue), then the weights' rows as
        one matmul: q/k/v stacked (out [1, Mq + Mk + Mv]) or, with ``act``, gate and up
        gated (out [1, F])."""
        k = x.shape[1]
        rows = sum(w.rows for w in weights) if act is None else weights[0].rows
        out = self._alloc((1, rows), np.float32)
        codes = [w.codes for w in weights]
        sizes = [w.rows for w in weights] if act is None else [rows, act]
        eps = layer.spec.eps
        out_scales = [w.out_scale for w in weights]
        if layer.family == "i2s":
            spec = self._matmul(f"{name}_i2s", TILE_N * 32)
            self._run(spec, (-(-rows // spec.rows), 1), [x.mem, norm.mem, *codes, out.mem], k,
                      *sizes, eps, *[w.tensor_scale for w in weights], *out_scales)
        else:
            nb = k // 256
            spec = self._matmul(f"{name}_tq", TILE_N * nb, blocks=nb)
            self._run(spec, (-(-rows // spec.rows), 1),
                      [x.mem, norm.mem, *codes, *[w.block_scales for w in weights], out.mem], k,
                      *sizes, eps, *out_scales)
        return out

    def _rope_attention(self, s: LayerSpec, qkv: DeviceArray, cache: GpuKVCache, index: int,
                        pos: int, table: np.ndarray | None) -> DeviceArray:
        """RoPE, the KV store and attention's split runs of one token in one dispatch (grid:
        a group per query head and split run), reading q, k and v from norm_qkv's output,
        then attention_combine: the attention op's split structure and bits."""
        step = self._segment(pos, 1)
        span = self._span("decode_layer", cache, pos, 1, table)
        cos_t, sin_t = self._angles(s.rope_theta, s.head_dim, pos + 1, 1)
        table_mem, block = step.mem, 0  # no table: the kernel reads none (any binds)
        if table is not None:
            table_mem, block = self._device_ints("table", table).mem, KV_BLOCK
        scores, parts, splits = self._attention_scratch(1, s.n_heads, s.head_dim, span)
        scale = float(np.float32(1 / np.sqrt(s.head_dim)))
        self._run(KernelSpec("rope_attention"), (s.n_heads * splits, 1),
                  [qkv.mem, cos_t, sin_t, cache.k, cache.v, step.mem, table_mem, scores.mem,
                   parts.mem], index, cache.n_ctx, s.n_heads, s.n_kv_heads, s.head_dim, scale,
                  block, span)
        return self._attention_combine(step, parts, 1, s.n_heads, s.head_dim, span)

    def _norm_quantize(self, layer: FusedLayer, x: DeviceArray,
                       norm: DeviceArray | None) -> tuple[DeviceArray, DeviceArray]:
        """A sub-norm and the quantization of its output in one dispatch: (q, scales) as
        ``_quantize`` gives them; without a sub-norm, the plain quantizer."""
        mode = "per_token_i8" if layer.family == "i2s" else "q8_k"
        if norm is None:
            return self._quantize(x, mode)
        k = x.shape[1]
        q = self._alloc((1, k), np.int8)
        if layer.family == "i2s":
            scales = self._alloc((1,), np.float32)
            name = "rmsnorm_quantize_i8"
        else:
            scales = self._alloc((1, k // 256), np.float32)
            name = "rmsnorm_quantize_q8_k"
        self._run(KernelSpec(name), (1, 1), [x.mem, norm.mem, q.mem, scales.mem], k,
                  layer.spec.eps)
        return q, scales

    def _linear_add(self, layer: FusedLayer, w: TernaryWeight,
                    quantized: tuple[DeviceArray, DeviceArray], h: DeviceArray) -> DeviceArray:
        """h + W x for x's quantization: the matmul with the residual add as its epilogue."""
        q, scales = quantized
        out = self._alloc((1, w.rows), np.float32)
        if layer.family == "i2s":
            spec = self._matmul("linear_add_i2s", TILE_N * 32)
            self._run(spec, (-(-w.rows // spec.rows), 1),
                      [w.codes, q.mem, scales.mem, h.mem, out.mem], w.cols, w.rows,
                      w.tensor_scale, w.out_scale)
        else:
            nb = w.cols // 256
            spec = self._matmul("linear_add_tq", TILE_N * nb, blocks=nb)
            self._run(spec, (-(-w.rows // spec.rows), 1),
                      [w.codes, w.block_scales, q.mem, scales.mem, h.mem, out.mem], w.cols,
                      w.rows, w.out_scale)
        return out

    # -- record and replay ---------------------------------------------------------------------

    @contextmanager
    def recording(self) -> Iterator[StepRecording | None]:
        """Capture the ops run inside (their dispatches are recorded, not run); the yielded
        StepRecording replays them. Yields None where the runtime has no replay: the ops then
        ran eagerly. Positions come from the step buffer; what else changes between replays
        (token ids) must sit in buffers the caller writes (``write``)."""
        capture = self.runtime.record()
        if capture is None:
            yield None
            return
        # a recording reuses only what it computed or uploaded itself, and nothing it holds
        # serves later eager ops (a runtime may not run the captured work before a replay)
        self._forget_memos()
        self._reach = 1 << 62
        try:
            with capture as recorded:
                step = self._capture = StepRecording(self, recorded, [], 0)
                yield step
            step.positions = self._reach
        finally:
            self._capture = None
            self._forget_memos()

    def _forget_memos(self) -> None:
        self._quantized = None
        self._uploads.clear()

    # -- the rest ----------------------------------------------------------------------------

    def synchronize(self) -> None:
        self.runtime.synchronize()

    def submission_count(self) -> int | None:
        return self.runtime.submissions

    def close(self) -> None:
        if self._pool.closed:
            return
        self._forget_memos()
        self._pool.close()
        self._rope_tables.clear()
        self.runtime.close()

    def info(self) -> dict[str, Any]:
        return {**self.runtime.info(), "tile_tokens": TILE_N}
