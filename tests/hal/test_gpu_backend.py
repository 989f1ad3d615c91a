"""GpuBackend over a null runtime: every dispatch matches the KERNELS table (one argument order
for every API), memory is pooled, and nothing needs a device. The numbers themselves are checked
on real runtimes (PoCL, lavapipe) by each plugin's conformance suite."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np
import pytest

from bitnet.formats.floats import quantize_rows
from bitnet.hal import WeightFormat, WeightTensor
from bitnet.hal.device_runtime import KERNELS, MATMUL, KernelCache, KernelSpec, Limits
from bitnet.hal.gpu_backend import GpuBackend
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
        self.dispatches: list[tuple[str, tuple[int, ...], int, tuple[float, ...]]] = []

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
        self.dispatches.append((kernel.name, grid, len(buffers), tuple(scalars)))
        self.submissions += 1

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass

    @contextmanager
    def record(self):
        yield None

    def info(self) -> dict[str, Any]:
        return {"device": "null"}


@pytest.fixture
def backend():
    from bitnet.hal import DeviceInfo, DeviceKind

    info = DeviceInfo(backend="null", index=0, name="null", kind=DeviceKind.DGPU)
    return GpuBackend("null", info, NullRuntime())


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
    backend.add(backend.relu2_mul(h, h), backend.silu_mul(h, h))
    backend.concat_rows([backend.slice_rows(h, 0, 1), h])
    ran = {name for name, *_ in backend.runtime.dispatches}
    assert ran == set(KERNELS) - {"embed_q6_k"}  # every kernel but the Q6_K table's embed


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
