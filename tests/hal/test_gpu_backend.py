"""GpuBackend over a null runtime: every dispatch matches the KERNELS table (one argument order
for every API), memory is pooled, and nothing needs a device. The numbers themselves are checked
on real runtimes (PoCL, lavapipe) by each plugin's conformance suite."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np
import pytest

from bitnet.formats.floats import quantize_rows
from bitnet.hal import KV_BLOCK, WeightFormat, WeightTensor
from bitnet.hal.backend import LayerSpec
from bitnet.hal.device_runtime import (ATTENTION_SPLIT, FUSED_KERNELS, KERNELS, MATMUL, KernelCache, KernelSpec,
                                       Limits, MatmulTile)
from bitnet.hal.gpu_backend import TILE_N, GpuBackend
from bitnet.testing.weights import q6_k_tensor, ternary_tensor


class NullRuntime:
    """Host bytes for memory; dispatches only recorded and checked against KERNELS."""

    name = "null"
    fingerprint = "null"

    def __init__(self) -> None:
        self.limits = Limits(simd_width=8, max_work_group=256, max_rows=256,
                             shared_memory=32768, max_buffer=1 << 30, fp64=True,
                             max_head_dim=256)
        self.submissions = 0
        self.allocations = 0
        # (kernel, grid, buffer count, scalars, buffers) of each dispatch
        self.dispatches: list[tuple[str, tuple[int, ...], int, tuple[float, ...], list]] = []

    def allocate(self, nbytes: int) -> bytearray:
        self.allocations += 1
        return bytearray(nbytes)

    def free(self, mem: bytearray) -> None:
        pass

    def copy_in(self, mem: bytearray, host: np.ndarray, offset: int = 0) -> None:
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8).tobytes()
        mem[offset:offset + len(raw)] = raw
        self.submissions += 1

    def copy_out(self, mem: bytearray, nbytes: int, offset: int = 0) -> np.ndarray:
        self.submissions += 1
        return np.frombuffer(bytes(mem[offset:offset + nbytes]), np.uint8).copy()

    def copy(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        dst[dst_offset:dst_offset + nbytes] = src[src_offset:src_offset + nbytes]
        self.submissions += 1

    def kernel(self, spec: KernelSpec) -> KernelSpec:
        return spec

    def dispatch(self, kernel: KernelSpec, grid: tuple[int, ...], buffers: Sequence[Any],
                 scalars: Sequence[float]) -> None:
        sig = kernel.sig
        assert len(buffers) == len(sig.buffers), (kernel.name, len(buffers))
        assert len(scalars) == len(sig.scalars), (kernel.name, scalars)
        assert all(isinstance(b, bytearray) for b in buffers), kernel.name
        assert len(grid) == 2 and min(grid) >= 1, (kernel.name, grid)
        if sig.grid == MATMUL:
            assert kernel.lanes * kernel.rows <= self.limits.max_work_group
        self.dispatches.append((kernel.name, grid, len(buffers), tuple(scalars), list(buffers)))
        self.submissions += 1

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass

    @contextmanager
    def record(self):
        yield None


class NullRecording:
    def __init__(self, runtime: "RecordingNullRuntime") -> None:
        self.runtime = runtime
        self.dispatches: list[tuple[str, tuple[int, ...], int, tuple[float, ...], list]] = []
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.runtime.submissions += 1


class RecordingNullRuntime(NullRuntime):
    """NullRuntime whose record() captures dispatches (not run) and counts replays."""

    def __init__(self) -> None:
        super().__init__()
        self.capturing: NullRecording | None = None

    def dispatch(self, kernel, grid, buffers, scalars) -> None:
        if self.capturing is None:
            return super().dispatch(kernel, grid, buffers, scalars)
        self.capturing.dispatches.append((kernel.name, grid, len(buffers), tuple(scalars),
                                          list(buffers)))

    @contextmanager
    def record(self):
        self.capturing = NullRecording(self)
        try:
            yield self.capturing
        finally:
            self.capturing = None

    def info(self) -> dict[str, Any]:
        return {"device": "null"}


def _backend(runtime: NullRuntime) -> GpuBackend:
    from bitnet.hal import DeviceInfo, DeviceKind

    info = DeviceInfo(backend="null", index=0, name="null", kind=DeviceKind.DGPU)
    return GpuBackend("null", info, runtime)


@pytest.fixture
def backend():
    return _backend(NullRuntime())


def test_every_op_dispatches_in_the_kernel_table_order(backend):
    rng = np.random.default_rng(1)
    x = backend.upload(rng.standard_normal((3, 256)).astype(np.float32))
    for fmt in (WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0):
        values = rng.integers(-1, 2, (16, 256)).astype(np.int8)
        backend.linear_ternary(backend.load_weight(ternary_tensor(fmt, values, rng)), x)
    backend.linear_float(backend.load_weight(q6_k_tensor(16, 256, rng)), x)
    table = WeightTensor("t", WeightFormat.F16, 32, 256,
                         quantize_rows(WeightFormat.F16, rng.standard_normal((32, 256))))
    w = backend.load_weight(table)
    backend.linear_float(w, x)
    h = backend.embed(w, backend.upload(np.array([1, 2, 3], np.int32)))
    norm = backend.upload(np.ones((1, 256), np.float32))
    h = backend.rmsnorm(h, norm, 1e-5)
    q = backend.rope(h, 0, 2, 128, 10000.0)
    cache = backend.kv_cache_alloc(1, 8, 2, 128)
    backend.attention(q, q, q, cache, 0, 0, 2, 2, 128)
    pool = backend.kv_cache_alloc(1, 4 * KV_BLOCK, 2, 128)
    backend.attention(q, q, q, pool, 0, 0, 2, 2, 128, table=np.array([3], np.int32))
    backend.attention_rows(h, q, q, pool, 0, np.array([4, 0, 9], np.int32), 2, 2, 128,
                           10000.0, np.array([[1], [2], [3]], np.int32))
    backend.add(backend.relu2_mul(h, h), backend.silu_mul(h, h))
    backend.concat_rows([backend.slice_rows(h, 0, 1), h])
    ran = {name for name, *_ in backend.runtime.dispatches}
    # every op kernel but the Q6_K table's embed (decode_layer's: below)
    assert ran == set(KERNELS) - set(FUSED_KERNELS) - {"embed_q6_k"}


def test_a_runtime_matmul_tile_sizes_the_grid_from_its_min_tokens():
    """A MatmulTile in the runtime's limits: GpuBackend runs its kernels as the tile's variant
    from min_tokens tokens on, with (row groups, token tiles) of the tile; other kernels and
    fewer tokens keep the default spec over TILE_N tokens."""
    runtime = NullRuntime()
    runtime.limits = dataclasses.replace(runtime.limits, matmul_tiles=(
        MatmulTile("wide", ("linear_i2s",), rows=64, tokens=32, min_tokens=16),))
    backend = _backend(runtime)
    rng = np.random.default_rng(4)
    weights = {fmt: backend.load_weight(ternary_tensor(
        fmt, rng.integers(-1, 2, (100, 256)).astype(np.int8), rng))
        for fmt in (WeightFormat.I2_S, WeightFormat.TQ2_0)}
    specs: list[tuple[KernelSpec, tuple[int, ...]]] = []
    runtime.kernel = lambda spec: specs.append(spec) or spec
    default_rows = backend._matmul("linear_i2s", TILE_N * 32).rows
    for n in (15, 16, 33):
        x = backend.upload(rng.standard_normal((n, 256)).astype(np.float32))
        for fmt, w in weights.items():
            runtime.dispatches.clear()
            backend.linear_ternary(w, x)
            (name, grid, *_), = [d for d in runtime.dispatches if d[0].startswith("linear_")]
            spec = specs[-1]
            if fmt is WeightFormat.I2_S and n >= 16:
                assert (spec.variant, grid) == ("wide", (2, -(-n // 32)))
            else:
                assert spec.variant == ""
                assert grid == (-(-100 // spec.rows), -(-n // TILE_N))
    assert default_rows < 64


def test_one_input_is_quantized_once_per_mode(backend):
    """q, k and v (gate and up) read one input: it is quantized once, and again only for another
    input or another quantization (TQ weights take Q8_K blocks, I2_S per-token int8)."""
    rng = np.random.default_rng(2)
    data = rng.standard_normal((2, 256)).astype(np.float32)
    x = backend.upload(data)

    def weight(fmt):
        values = rng.integers(-1, 2, (16, 256)).astype(np.int8)
        return backend.load_weight(ternary_tensor(fmt, values, rng))

    def quantizes() -> int:
        return sum(name.startswith("quantize") for name, *_ in backend.runtime.dispatches)

    for _ in range(3):
        backend.linear_ternary(weight(WeightFormat.I2_S), x)
    assert quantizes() == 1
    backend.linear_ternary(weight(WeightFormat.TQ2_0), x)
    assert quantizes() == 2
    backend.linear_ternary(weight(WeightFormat.TQ2_0), backend.upload(data))  # another buffer
    assert quantizes() == 3


def test_step_buffers_come_from_the_pool(backend):
    """A second identical op allocates nothing: its buffers are the first one's, recycled."""
    x = np.ones((2, 64), np.float32)
    a = backend.upload(x)
    backend.add(a, a)  # the sum is dropped: its block goes back to the pool
    before = backend.runtime.allocations
    backend.add(a, a)
    assert backend.runtime.allocations == before


def test_download_round_trips(backend):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(backend.download(backend.upload(x)), x)
    np.testing.assert_array_equal(backend.download(backend.slice_rows(backend.upload(x), 1, 3)),
                                  x[1:])


def test_submissions_are_counted(backend):
    before = backend.submission_count()
    backend.add(backend.upload(np.ones((1, 4), np.float32)),
                backend.upload(np.ones((1, 4), np.float32)))
    assert backend.submission_count() - before == 3  # two copies in, one dispatch


def test_kernel_cache_keeps_binaries_by_device(tmp_path, monkeypatch):
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path))
    builds = []
    cache = KernelCache("null", "device-a")
    assert cache.get("src", lambda: builds.append(1) or b"bin-a") == b"bin-a"
    assert cache.get("src", lambda: builds.append(1) or b"other") == b"bin-a"
    other = KernelCache("null", "device-b")
    assert other.get("src", lambda: builds.append(1) or b"bin-b") == b"bin-b"
    assert len(builds) == 2


def _decode_rows(backend, batch: int, layers: int = 3):
    """A batched decode step's attention: ``layers`` attention_rows calls of ``batch`` rows
    with one positions array and one tables array (as Transformer.forward_batch passes them)."""
    heads, kv_heads, dim = 4, 2, 64
    pool = backend.kv_cache_alloc(layers, 4 * batch * KV_BLOCK, kv_heads, dim)
    tables = np.arange(4 * batch, dtype=np.int32).reshape(batch, 4)[::-1].copy()
    positions = np.arange(batch, dtype=np.int32) % 8 * 7 + 3  # below 4 blocks
    q = backend.upload(np.ones((batch, heads * dim), np.float32))
    kv = backend.upload(np.ones((batch, kv_heads * dim), np.float32))
    for layer in range(layers):
        backend.attention_rows(q, kv, kv, pool, layer, positions, heads, kv_heads, dim,
                               10000.0, tables)
    return positions, tables


@pytest.mark.parametrize("batch", [1, 4, 8, 32])
def test_attention_rows_is_five_dispatches_whatever_the_batch(backend, batch):
    """rope (q), rope (k), kv_store, attention (split-K runs) and attention_combine, each over
    all B rows: a batched step's
    attention costs the same dispatches for 1 row or 32, and its positions and block tables
    go to the device once for every layer of the step."""
    runtime = backend.runtime
    copies = runtime.submissions - len(runtime.dispatches)
    _decode_rows(backend, batch, layers=3)
    names = [name for name, *_ in runtime.dispatches]
    assert names == ["rope", "rope", "kv_store", "attention", "attention_combine"] * 3
    assert all(grid[1] == batch for _, grid, *_ in runtime.dispatches)
    uploads = runtime.submissions - len(runtime.dispatches) - copies
    # q and kv (the test's), rope's cos and sin tables, then positions and tables once
    assert uploads == 2 + 2 + 2
    kv_store = next(d for d in runtime.dispatches if d[0] == "kv_store")
    attention = next(d for d in runtime.dispatches if d[0] == "attention")
    assert kv_store[3][3:] == (KV_BLOCK, 4)  # block, table_stride: row r reads table r
    assert attention[3][6:] == (KV_BLOCK, 4, 7 * min(batch - 1, 7) + 3 + 1)  # ..., span


def test_positions_and_tables_are_reuploaded_when_their_values_change(backend):
    """The upload memo matches values, not the array object: a caller that rewrites its
    array in place (a scheduler's next step) gets the new values on the device."""
    positions, tables = _decode_rows(backend, 2, layers=1)
    runtime = backend.runtime
    before = runtime.submissions
    heads, kv_heads, dim = 4, 2, 64
    pool = backend.kv_cache_alloc(1, 8 * KV_BLOCK, kv_heads, dim)
    q = backend.upload(np.ones((2, heads * dim), np.float32))
    kv = backend.upload(np.ones((2, kv_heads * dim), np.float32))
    uploads = runtime.submissions - before

    def decode() -> None:
        backend.attention_rows(q, kv, kv, pool, 0, positions, heads, kv_heads, dim, 10000.0,
                               tables)

    decode()
    assert runtime.submissions - before == uploads + 5  # same values: nothing uploaded
    positions += 1  # in place
    tables[1, 0] = 6
    decode()
    assert runtime.submissions - before == uploads + 5 + 2 + 5
    attention = runtime.dispatches[-2]
    assert attention[0] == "attention"
    step, table = attention[4][3], attention[4][4]  # the step and table buffers it read
    assert np.frombuffer(bytes(step[:8]), np.int32).tolist() == positions.tolist()
    assert np.frombuffer(bytes(table[:8 * 4]), np.int32).tolist() == tables.ravel().tolist()


def test_a_recording_writes_its_positions_at_each_replay():
    """Recorded rope and attention read the step buffer the recording owns; replay(pos)
    writes pos .. pos+n-1 there, then replays; the table a recorded attention reads is a
    constant input and bounds the recording's reach."""
    runtime = RecordingNullRuntime()
    backend = _backend(runtime)
    heads, kv_heads, dim = 2, 1, 64
    pool = backend.kv_cache_alloc(1, 8 * KV_BLOCK, kv_heads, dim)
    table = np.array([5, 2, 7], np.int32)
    x = backend.upload(np.ones((1, heads * dim), np.float32))
    kv = backend.upload(np.ones((1, kv_heads * dim), np.float32))
    with backend.recording() as recorded:
        q = backend.rope(x, 0, heads, dim, 10000.0)
        k = backend.rope(kv, 0, kv_heads, dim, 10000.0)
        backend.attention(q, k, kv, pool, 0, 0, heads, kv_heads, dim, table=table)
    captured = recorded.recording.dispatches
    assert [d[0] for d in captured] == ["rope", "rope", "kv_store", "attention",
                                        "attention_combine"]
    assert captured[-2][3][6:] == (KV_BLOCK, 0, 3 * KV_BLOCK)  # the table's whole reach
    assert recorded.positions == 3 * KV_BLOCK
    step = captured[-2][4][3]  # the step buffer recorded attention reads
    assert captured[-1][4][0] is step  # ... and the combine
    assert all(d[4][KERNELS[d[0]].buffers.index("step")] is step for d in captured)
    before = runtime.submissions
    recorded.replay(17)
    assert runtime.submissions - before == 2  # the position, then the replay
    assert np.frombuffer(bytes(step[:4]), np.int32).tolist() == [17]
    with pytest.raises(ValueError, match="beyond this recording"):
        recorded.replay(3 * KV_BLOCK)
    with pytest.raises(ValueError, match="of one sequence"):
        recorded.replay_rows(np.array([1], np.int32), table[None])


def test_a_recorded_batched_step_writes_its_rows_positions_and_tables_at_each_replay():
    """attention_rows under a recording reads the recording's own positions [B] and tables
    [B, T] buffers (one pair for every layer); replay_rows writes the positions each time and
    the tables only when they changed, then replays: 2 or 3 submissions whatever B and the
    layer count. A recording holds one batched step or one sequence's tokens, not both."""
    runtime = RecordingNullRuntime()
    backend = _backend(runtime)
    heads, kv_heads, dim, batch, layers = 2, 1, 64, 3, 2
    pool = backend.kv_cache_alloc(layers, 12 * KV_BLOCK, kv_heads, dim)
    tables = np.arange(12, dtype=np.int32).reshape(batch, 4)
    q = backend.upload(np.ones((batch, heads * dim), np.float32))
    kv = backend.upload(np.ones((batch, kv_heads * dim), np.float32))
    with backend.recording() as recorded:
        for layer in range(layers):
            backend.attention_rows(q, kv, kv, pool, layer, np.array([0, 5, 9], np.int32),
                                   heads, kv_heads, dim, 10000.0, tables)
    captured = recorded.recording.dispatches
    assert [d[0] for d in captured] == ["rope", "rope", "kv_store", "attention",
                                        "attention_combine"] * layers
    step, table = recorded.rows
    assert all(d[4][KERNELS[d[0]].buffers.index("step")] is step.mem for d in captured)
    assert all(d[4][KERNELS[d[0]].buffers.index("table")] is table.mem for d in captured
               if "table" in KERNELS[d[0]].buffers)
    assert captured[-2][3][6:] == (KV_BLOCK, 4, 4 * KV_BLOCK)  # the tables' whole reach
    assert recorded.positions == 4 * KV_BLOCK
    before = runtime.submissions
    recorded.replay_rows(np.array([3, 60, 17], np.int32), tables[::-1])
    assert runtime.submissions - before == 3  # positions, tables, the replay
    assert np.frombuffer(bytes(step.mem[:12]), np.int32).tolist() == [3, 60, 17]
    assert np.frombuffer(bytes(table.mem[:48]), np.int32).tolist() == \
        tables[::-1].ravel().tolist()
    before = runtime.submissions
    recorded.replay_rows(np.array([4, 61, 18], np.int32), tables[::-1])
    assert runtime.submissions - before == 2  # the same tables: not written again
    with pytest.raises(ValueError, match="beyond this recording"):
        recorded.replay_rows(np.array([4, 4 * KV_BLOCK, 18], np.int32), tables)
    with pytest.raises(ValueError, match="replay_rows of positions"):
        recorded.replay_rows(np.array([4, 5], np.int32), tables[:2])
    with pytest.raises(ValueError, match="replay_rows"):
        recorded.replay(3)
    with pytest.raises(ValueError, match="not both"):
        with backend.recording():
            backend.rope(q, 0, heads, dim, 10000.0)
            backend.attention_rows(q, kv, kv, pool, 0, np.array([0, 5, 9], np.int32), heads,
                                   kv_heads, dim, 10000.0, tables)


# -- decode_layer: a block in eight dispatches ------------------------------------------------

class FusedNullRuntime(NullRuntime):
    fused_max_width = 1024  # rows up to 1024 wide fit the fused prologues


class FusedRecordingNullRuntime(RecordingNullRuntime):
    fused_max_width = 1024


def _layer_spec(b: GpuBackend, rng, fmt=WeightFormat.I2_S, d=256, heads=4, kv=2, ff=512,
                sub_norms=True, activation="relu2", formats=None) -> LayerSpec:
    """A block's weights on b; ``formats`` overrides the seven weights' formats in order."""
    shapes = [(heads * 64, d), (kv * 64, d), (kv * 64, d), (d, heads * 64), (ff, d), (ff, d),
              (d, ff)]
    formats = formats or [fmt] * 7
    weights = []
    for (rows, cols), f in zip(shapes, formats):
        if f is WeightFormat.F16:
            data = quantize_rows(f, rng.standard_normal((rows, cols)).astype(np.float32))
            weights.append(b.load_weight(WeightTensor("w", f, rows, cols, data)))
        else:
            values = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
            weights.append(b.load_weight(ternary_tensor(f, values, rng)))
    q, k, v, o, gate, up, down = weights

    def norm(width):
        return b.upload(np.ones((1, width), np.float32))

    return LayerSpec(norm(d), q, k, v, norm(heads * 64) if sub_norms else None, o, norm(d),
                     gate, up, norm(ff) if sub_norms else None, down, activation, heads, kv, 64,
                     10000.0, 1e-5)


@pytest.mark.parametrize("fmt", [WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0])
@pytest.mark.parametrize("sub_norms", [True, False])
def test_decode_layer_runs_a_block_in_eight_dispatches(fmt, sub_norms):
    """One decode token's block: norm + q/k/v, rope + kv store + attention's split runs, their
    combine, sub-norm + quantize (the plain quantizer without a sub-norm), o + residual,
    norm + gate/up, sub-norm + quantize, down + residual: 8 dispatches (issue 15's bound),
    in the table's order."""
    b = _backend(FusedNullRuntime())
    rng = np.random.default_rng(3)
    spec = _layer_spec(b, rng, fmt, sub_norms=sub_norms)
    layer = b.prepare_layer(spec)
    assert layer is not None and layer.family == ("i2s" if fmt is WeightFormat.I2_S else "tq")
    pool = b.kv_cache_alloc(1, 4 * KV_BLOCK, 2, 64)
    h = b.upload(np.ones((1, 256), np.float32))
    before = len(b.runtime.dispatches)
    out = b.decode_layer(layer, h, pool, 0, KV_BLOCK + 1, np.array([3, 1], np.int32))
    names = [d[0] for d in b.runtime.dispatches[before:]]
    family = layer.family
    quantize = ("rmsnorm_quantize_" + ("i8" if family == "i2s" else "q8_k") if sub_norms else
                "quantize_" + ("per_token_i8" if family == "i2s" else "q8_k"))
    assert names == [f"norm_qkv_{family}", "rope_attention", "attention_combine", quantize,
                     f"linear_add_{family}", f"norm_gate_up_{family}", quantize,
                     f"linear_add_{family}"]
    assert out.shape == (1, 256)
    attention = b.runtime.dispatches[before + 1]
    assert attention[1] == (4, 1)  # a group per query head (one split run: span <= 256)
    assert attention[3][6:] == (KV_BLOCK, KV_BLOCK + 2)  # block, span (one past the position)
    assert b.runtime.dispatches[before + 5][3][2] == 0  # relu2


def test_every_fused_kernel_runs_in_the_table_order():
    b = _backend(FusedNullRuntime())
    rng = np.random.default_rng(4)
    for fmt, activation in ((WeightFormat.I2_S, "silu"), (WeightFormat.TQ2_0, "relu2")):
        spec = _layer_spec(b, rng, fmt, activation=activation)
        cache = b.kv_cache_alloc(1, 8, 2, 64)
        b.decode_layer(b.prepare_layer(spec), b.upload(np.ones((1, 256), np.float32)), cache,
                       0, 2)
    ran = {name for name, *_ in b.runtime.dispatches}
    assert set(FUSED_KERNELS) <= ran


def test_prepare_layer_offers_only_what_the_fused_kernels_run():
    """None (op by op) without the runtime's fused kernels, for a float or mixed-family
    block, or a row wider than the prologue holds; an unknown activation is refused."""
    rng = np.random.default_rng(5)
    plain = _backend(NullRuntime())
    assert plain.prepare_layer(_layer_spec(plain, rng)) is None  # no fused_max_width
    b = _backend(FusedNullRuntime())
    assert b.prepare_layer(_layer_spec(b, rng)) is not None
    mixed = [WeightFormat.I2_S] * 6 + [WeightFormat.TQ2_0]
    assert b.prepare_layer(_layer_spec(b, rng, formats=mixed)) is None
    tq = [WeightFormat.TQ2_0] * 6 + [WeightFormat.TQ1_0]  # one quantizer: one family
    assert b.prepare_layer(_layer_spec(b, rng, formats=tq)).family == "tq"
    floats = [WeightFormat.F16] + [WeightFormat.I2_S] * 6
    assert b.prepare_layer(_layer_spec(b, rng, formats=floats)) is None
    assert b.prepare_layer(_layer_spec(b, rng, d=2048)) is None  # wider than 1024
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        b.prepare_layer(_layer_spec(b, rng, activation="gelu"))


def test_decode_layer_refuses_bad_calls():
    b = _backend(FusedNullRuntime())
    layer = b.prepare_layer(_layer_spec(b, np.random.default_rng(6)))
    cache = b.kv_cache_alloc(1, 8, 2, 64)
    h = b.upload(np.ones((1, 256), np.float32))
    with pytest.raises(ValueError, match=r"h must be float32 \[1, 256\]"):
        b.decode_layer(layer, b.upload(np.ones((2, 256), np.float32)), cache, 0, 0)
    with pytest.raises(ValueError, match="exceed the cache"):
        b.decode_layer(layer, h, cache, 0, 8)
    with pytest.raises(ValueError, match="other head sizes"):
        b.decode_layer(layer, h, b.kv_cache_alloc(1, 8, 1, 64), 0, 0)


def test_a_recorded_decode_layer_replays_at_new_positions():
    """decode_layer's rope_attention reads the recording's step buffer, and a block table
    bounds the recording's reach as attention's does."""
    runtime = FusedRecordingNullRuntime()
    b = _backend(runtime)
    layer = b.prepare_layer(_layer_spec(b, np.random.default_rng(7)))
    pool = b.kv_cache_alloc(1, 8 * KV_BLOCK, 2, 64)
    table = np.array([5, 2, 7], np.int32)
    h = b.upload(np.ones((1, 256), np.float32))
    with b.recording() as recorded:
        b.decode_layer(layer, h, pool, 0, 0, table)
    captured = recorded.recording.dispatches
    assert len(captured) == 8
    attention = captured[1]
    assert attention[0] == "rope_attention" and attention[3][7] == 3 * KV_BLOCK  # span
    assert recorded.positions == 3 * KV_BLOCK
    step = attention[4][KERNELS["rope_attention"].buffers.index("step")]
    recorded.replay(2 * KV_BLOCK + 3)
    assert np.frombuffer(bytes(step[:4]), np.int32).tolist() == [2 * KV_BLOCK + 3]


def test_split_k_attention_grids_follow_the_span_alone():
    """The attention op and decode_layer's rope_attention split the positions into runs of
    ATTENTION_SPLIT the same way: (H * runs, 1) groups, runs from the span (under a recording
    the table's whole reach, whatever the position), parts [1, H, runs, D + 2] merged by
    attention_combine (H, 1)."""
    runtime = FusedRecordingNullRuntime()
    b = _backend(runtime)
    layer = b.prepare_layer(_layer_spec(b, np.random.default_rng(8)))
    heads, kv_heads, dim = 4, 2, 64
    blocks = -(-(2 * ATTENTION_SPLIT + 5) // KV_BLOCK)  # a reach of three runs
    pool = b.kv_cache_alloc(1, blocks * KV_BLOCK, kv_heads, dim)
    table = np.arange(blocks, dtype=np.int32)[::-1].copy()
    h = b.upload(np.ones((1, 256), np.float32))
    q = b.upload(np.ones((1, heads * dim), np.float32))
    kv = b.upload(np.ones((1, kv_heads * dim), np.float32))
    grids = {}
    for pos in (3, 2 * ATTENTION_SPLIT + 1):
        with b.recording() as recorded:
            b.decode_layer(layer, h, pool, 0, pos, table)
            b.attention(q, kv, kv, pool, 0, pos, heads, kv_heads, dim, table=table)
        ran = [(d[0], d[1]) for d in recorded.recording.dispatches
               if d[0].startswith(("rope_attention", "attention"))]
        grids[pos] = ran
    assert grids[3] == grids[2 * ATTENTION_SPLIT + 1] == [
        ("rope_attention", (heads * 3, 1)), ("attention_combine", (heads, 1)),
        ("attention", (heads * 3, 1)), ("attention_combine", (heads, 1))]
    eager = len(runtime.dispatches)
    b.attention(q, kv, kv, pool, 0, ATTENTION_SPLIT, heads, kv_heads, dim, table=table)
    attention = runtime.dispatches[eager:][-2]
    assert attention[1] == (heads * 2, 1)  # eagerly: the runs up to the position
    parts = attention[4][KERNELS["attention"].buffers.index("parts")]
    assert len(parts) >= 4 * heads * 2 * (dim + 2)
