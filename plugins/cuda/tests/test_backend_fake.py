"""bitnet.hal's GpuBackend over CudaRuntime end to end on a fake PyCUDA (fake_cuda.py), against
the reference.

Each kernel is replaced by its numpy model (kernel_model.py) reading arguments in the .cu
parameter order (the KERNELS table's), so these tests catch wrong argument order, pointer
arithmetic, layouts, shapes and launch geometry in runtime.py. They cannot catch a bug in the
CUDA code itself: that needs a GPU (the conformance suite).
"""

from __future__ import annotations

import dataclasses
import gc
import threading

import numpy as np
import pytest

import fake_cuda
from bitnet.backends.reference.backend import ReferenceBackend
from bitnet.formats.floats import quantize_rows
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack
from bitnet.hal import DeviceInfo, DeviceKind, WeightFormat, WeightTensor
from bitnet.testing.weights import q6_k_tensor

REF = ReferenceBackend(DeviceInfo(backend="reference", index=0, name="numpy",
                                  kind=DeviceKind.CPU))



def _ternary(fmt: WeightFormat, rows: int, cols: int, rng, out_scale: float = 1.0):
    values = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    if fmt is WeightFormat.I2_S:
        data = i2s_pack(values, 0.0173)
    else:
        d = rng.uniform(0.01, 0.1, (rows, cols // 256)).astype(np.float16).astype(np.float32)
        data = (tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack)(values, d)
    return WeightTensor("blk.0.ffn_up.weight", fmt, rows, cols, data, out_scale)


@pytest.mark.parametrize("fmt", [WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0])
@pytest.mark.parametrize("n", [1, 3, 9])
def test_linear_ternary_is_bit_exact(backend, fmt, n):
    rng = np.random.default_rng(n)
    tensor = _ternary(fmt, 13, 512, rng, out_scale=1.0 if n != 3 else 0.5)
    x = rng.standard_normal((n, 512)).astype(np.float32)
    x[0, :256] = 0.0  # an all-zero Q8_K block
    got = backend.download(backend.linear_ternary(backend.load_weight(tensor), backend.upload(x)))
    want = REF.linear_ternary(REF.load_weight(tensor), x)
    assert got.shape == (n, 13) and got.dtype == np.float32
    assert np.array_equal(got, want)
    launched = {name: (grid, block) for name, grid, block in fake_cuda.LAUNCHES}
    matmul = "linear_i2s" if fmt is WeightFormat.I2_S else "linear_tq"
    grid, block = launched[matmul]
    assert block == (128, 1, 1) and grid == (4, -(-n // 8), 1)  # 4 warps (rows) a block


# (compute capability, tokens) -> the tensor-core variant runs? From sm_80 and 16 tokens on.
VARIANT_CHOICE = [((9, 0), 16, True), ((8, 0), 70, True), ((12, 0), 20, True),
                  ((9, 0), 15, False), ((9, 0), 1, False), ((7, 5), 64, False),
                  ((7, 5), 16, False)]


@pytest.mark.parametrize("capability,n,mma", VARIANT_CHOICE)
def test_prompts_take_the_tensor_core_gemm_from_sm_80(monkeypatch, capability, n, mma):
    """On a fake GPU of each compute capability: the runtime declares the "mma" tile only from
    sm_80, GpuBackend picks it from 16 tokens on and sizes the grid from it (64 rows x 64
    tokens a 128-thread block), the compute_80 module is loaded only then, and the numbers are
    the reference's either way."""
    monkeypatch.setattr(fake_cuda.FakeDevice, "capability", capability)
    fake_cuda.install(monkeypatch)
    from bitnet_cuda.descriptor import descriptor
    from bitnet.hal import CreateOptions

    (device,) = descriptor.probe()
    cuda = descriptor.create(device, CreateOptions())
    try:
        assert bool(cuda.runtime.limits.matmul_tiles) == (capability >= (8, 0))
        rng = np.random.default_rng(n)
        for fmt, base in ((WeightFormat.I2_S, "linear_i2s"), (WeightFormat.TQ1_0, "linear_tq"),
                          (WeightFormat.Q6_K, "linear_q6_k")):
            fake_cuda.LAUNCHES.clear()
            if fmt is WeightFormat.Q6_K:
                tensor, op = q6_k_tensor(70, 512, rng), "linear_float"
            else:
                tensor, op = _ternary(fmt, 70, 512, rng), "linear_ternary"
            x = rng.standard_normal((n, 512)).astype(np.float32)
            got = cuda.download(getattr(cuda, op)(cuda.load_weight(tensor), cuda.upload(x)))
            assert np.array_equal(got, getattr(REF, op)(REF.load_weight(tensor), x))
            (name, grid, block), = [launch for launch in fake_cuda.LAUNCHES
                                    if launch[0].startswith("linear_")]
            if mma:
                assert (name, grid, block) == (base + "_mma", (2, -(-n // 64), 1), (128, 1, 1))
            else:
                assert (name, grid, block) == (base, (18, -(-n // 8), 1), (128, 1, 1))
        loaded = set(cuda.runtime._modules)
        assert ("linear_mma" in loaded) == mma
        notes = " ".join(cuda.capabilities.notes)
        assert ("mma.sync" in notes) == (capability >= (8, 0))
        assert ("compute_80" in notes) == (capability >= (8, 0))
    finally:
        cuda.close()


def test_the_tensor_cores_can_be_switched_off(monkeypatch):
    """BITNET_CUDA_MMA=0 (for A/B measurements): an sm_90 declares no tile, prompts run dp4a."""
    monkeypatch.setenv("BITNET_CUDA_MMA", "0")
    fake_cuda.install(monkeypatch)
    from bitnet_cuda.descriptor import descriptor
    from bitnet.hal import CreateOptions

    (device,) = descriptor.probe()
    cuda = descriptor.create(device, CreateOptions())
    try:
        assert cuda.runtime.limits.matmul_tiles == ()
        tensor = _ternary(WeightFormat.I2_S, 8, 256, np.random.default_rng(1))
        cuda.linear_ternary(cuda.load_weight(tensor), cuda.upload(np.ones((32, 256), np.float32)))
        assert [n for n, _, _ in fake_cuda.LAUNCHES if n.startswith("linear_")] == ["linear_i2s"]
    finally:
        cuda.close()


def test_a_variant_the_gpu_lacks_is_refused(backend, monkeypatch):
    from bitnet.hal.device_runtime import KernelSpec

    monkeypatch.setattr(backend.runtime, "limits",
                        dataclasses.replace(backend.runtime.limits, matmul_tiles=()))
    spec = KernelSpec("linear_i2s", variant="mma")
    with pytest.raises(ValueError, match="no 'mma' variant on this GPU"):
        backend.runtime.launch_geometry(spec, (1, 1))


@pytest.mark.parametrize("fmt", [WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16,
                                 WeightFormat.Q8_0, WeightFormat.Q6_K])
def test_linear_float_and_embed(backend, fmt):
    rng = np.random.default_rng(5)
    table = rng.standard_normal((40, 256)).astype(np.float32)
    tensor = WeightTensor("token_embd.weight", fmt, 40, 256, quantize_rows(fmt, table))
    w_cuda = backend.load_weight(tensor)
    w_ref = REF.load_weight(tensor)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    got = backend.download(backend.linear_float(w_cuda, backend.upload(x)))
    np.testing.assert_allclose(got, REF.linear_float(w_ref, x), rtol=1e-5, atol=1e-5)
    ids = np.array([3, 0, 39, 3], dtype=np.int32)
    rows = backend.download(backend.embed(w_cuda, backend.upload(ids)))
    assert np.array_equal(rows, REF.embed(w_ref, ids))


@pytest.mark.parametrize("n,cols", [(1, 768), (3, 512), (9, 256)])
def test_linear_q6_k_is_bit_exact(backend, n, cols):
    """Q6_K x Q8_K (hal linear_float): gemv and gemm, an odd block count (a half-used warp
    step), an all-zero Q8_K block and out_scale, bit for bit with the reference."""
    rng = np.random.default_rng(cols + n)
    w = (rng.standard_normal((11, cols)) * rng.uniform(0.01, 3, (11, 1))).astype(np.float32)
    tensor = WeightTensor("output.weight", WeightFormat.Q6_K, 11, cols,
                          quantize_rows(WeightFormat.Q6_K, w), out_scale=0.5 if n == 3 else 1.0)
    x = (rng.standard_normal((n, cols)) * 3).astype(np.float32)
    x[0, :256] = 0.0
    got = backend.download(backend.linear_float(backend.load_weight(tensor), backend.upload(x)))
    assert np.array_equal(got, REF.linear_float(REF.load_weight(tensor), x))
    kernels = [name for name, _, _ in fake_cuda.LAUNCHES]
    assert kernels[-2:] == ["quantize_q8_k", "linear_q6_k"]


def test_rmsnorm_rope_gating_add_slices(backend):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 128)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (1, 128)).astype(np.float32)
    bx = backend.upload(x)
    assert np.array_equal(backend.download(backend.rmsnorm(bx, backend.upload(w), 1e-5)),
                          REF.rmsnorm(x, w, 1e-5))
    got = backend.download(backend.rope(bx, 7, 2, 64, 10000.0))
    assert np.array_equal(got, REF.rope(x, 7, 2, 64, 10000.0))
    y = rng.standard_normal((5, 128)).astype(np.float32)
    by = backend.upload(y)
    assert np.array_equal(backend.download(backend.add(bx, by)), REF.add(x, y))
    assert np.array_equal(backend.download(backend.relu2_mul(bx, by)), REF.relu2_mul(x, y))
    np.testing.assert_allclose(backend.download(backend.silu_mul(bx, by)), REF.silu_mul(x, y),
                               rtol=1e-6, atol=1e-7)
    assert np.array_equal(backend.download(backend.slice_rows(bx, 2, 4)), x[2:4])
    parts = [backend.slice_rows(bx, 4, 5), backend.slice_rows(bx, 0, 2)]
    assert np.array_equal(backend.download(backend.concat_rows(parts)), x[[4, 0, 1]])


def test_attention_with_cache_prefill_then_decode(backend):
    rng = np.random.default_rng(3)
    n_layers, n_ctx, heads, kv_heads, dim = 2, 16, 4, 2, 32
    cache_c = backend.kv_cache_alloc(n_layers, n_ctx, kv_heads, dim)
    cache_r = REF.kv_cache_alloc(n_layers, n_ctx, kv_heads, dim)
    pos = 0
    for n in (5, 1, 1, 3):  # a prompt, two decode steps, a second chunk
        q = rng.standard_normal((n, heads * dim)).astype(np.float32)
        k = rng.standard_normal((n, kv_heads * dim)).astype(np.float32)
        v = rng.standard_normal((n, kv_heads * dim)).astype(np.float32)
        got = backend.download(backend.attention(backend.upload(q), backend.upload(k),
                                                 backend.upload(v), cache_c, 1, pos, heads,
                                                 kv_heads, dim))
        want = REF.attention(q, k, v, cache_r, 1, pos, heads, kv_heads, dim)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
        pos += n
    with pytest.raises(ValueError, match="exceed the cache"):
        backend.attention(backend.upload(q), backend.upload(k), backend.upload(v), cache_c, 1,
                          15, heads, kv_heads, dim)


def test_shape_errors_name_the_op(backend):
    w = backend.load_weight(_ternary(WeightFormat.I2_S, 4, 256, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="linear_ternary: x has 128 columns, weight has 256"):
        backend.linear_ternary(w, backend.upload(np.zeros((2, 128), np.float32)))
    with pytest.raises(TypeError, match="linear_float got a i2_s weight"):
        backend.linear_float(w, backend.upload(np.zeros((2, 256), np.float32)))
    with pytest.raises(ValueError, match="upload"):
        backend.upload(np.zeros((2, 3), np.float64))
    with pytest.raises(ValueError, match="add"):
        backend.add(backend.upload(np.zeros((2, 3), np.float32)),
                    backend.upload(np.zeros((3, 2), np.float32)))


def test_decode_step_moves_only_ids_in_and_logits_out(backend, monkeypatch):
    """A whole tiny layer's worth of ops between one upload and one download: no other copies."""
    copies = []
    driver = fake_cuda.build_modules()["pycuda.driver"]  # fresh functions to wrap
    import pycuda.driver as live

    for name in ("memcpy_htod_async", "memcpy_dtoh_async", "memcpy_dtod_async"):
        real = getattr(live, name)
        monkeypatch.setattr(live, name, lambda *a, _n=name, _r=real: (copies.append(_n), _r(*a)))
    assert driver is not live
    rng = np.random.default_rng(9)
    embed = backend.load_weight(WeightTensor(
        "token_embd.weight", WeightFormat.F16, 64, 256,
        quantize_rows(WeightFormat.F16, rng.standard_normal((64, 256)).astype(np.float32))))
    up = backend.load_weight(_ternary(WeightFormat.I2_S, 256, 256, rng))
    norm = backend.upload(np.ones((1, 256), np.float32))
    copies.clear()
    before = backend.submission_count()
    h = backend.embed(embed, backend.upload(np.array([5], np.int32)))
    h = backend.add(h, backend.linear_ternary(up, backend.rmsnorm(h, norm, 1e-5)))
    logits = backend.download(backend.linear_float(embed, backend.rmsnorm(h, norm, 1e-5)))
    assert copies == ["memcpy_htod_async", "memcpy_dtoh_async"]
    assert logits.shape == (1, 64)
    # bench's host submissions: 7 launches (embed, rmsnorm, quantize, linear_i2s, add,
    # rmsnorm, linear_f16) and the 2 copies
    assert backend.submission_count() - before == 9


@pytest.mark.slow
def test_registry_validation_cases_on_the_fake_driver(backend):
    """bitnet.registry.validation's whole table through the host code (fake kernels)."""
    from bitnet.registry import validation

    result = validation.validate_backend(backend)
    assert not result.failed, "\n".join(r.line() for r in result.failed)


def _in_thread(fn):
    """Run fn in a thread that then ends (as the server's load thread does); its result."""
    out = []
    worker = threading.Thread(target=lambda: out.append((threading.get_ident(), fn())))
    worker.start()
    worker.join()
    return out[0]


def test_context_follows_the_threads_and_every_push_is_popped(monkeypatch):
    """Load in one thread, step in another, close in a third: each thread gets the context
    before its first GPU call and pops it when it ends. PyCUDA aborts the process when a thread
    (or the interpreter) ends with a context still pushed, as `bitnet bench --device cuda` did
    on an H100 before this."""
    fake_cuda.install(monkeypatch)
    from bitnet_cuda.descriptor import descriptor
    from bitnet.hal import CreateOptions

    (device,) = descriptor.probe()
    loader, backend = _in_thread(lambda: descriptor.create(device, CreateOptions()))
    assert fake_cuda.STACKS[loader] == []  # popped when the load thread ended

    def step():
        x = backend.upload(np.ones((2, 256), np.float32))
        return backend.download(backend.add(x, x))

    stepper, y = _in_thread(step)
    assert fake_cuda.STACKS[stepper] == [] and np.all(y == 2)
    assert threading.get_ident() not in fake_cuda.STACKS  # the main thread never touched it
    backend.synchronize()
    assert len(fake_cuda.STACKS[threading.get_ident()]) == 1
    backend.close()
    assert fake_cuda.STACKS[threading.get_ident()] == []


def test_exit_handler_pops_the_main_threads_context(backend):
    from bitnet_cuda.runtime import _leave_at_exit

    backend.synchronize()
    assert len(fake_cuda.STACKS[threading.get_ident()]) == 1
    _leave_at_exit()
    assert fake_cuda.STACKS[threading.get_ident()] == []
    backend.synchronize()  # still usable: the next call pushes again
    assert len(fake_cuda.STACKS[threading.get_ident()]) == 1


def test_a_thread_that_outlives_the_backend_pops_its_own_push(monkeypatch):
    """A worker thread steps the model, the app drops the model, then the worker ends: the
    worker's push is popped by the worker (not by whichever thread collected the backend), and
    the main thread's stack is left alone."""
    fake_cuda.install(monkeypatch)
    from bitnet_cuda.descriptor import descriptor
    from bitnet.hal import CreateOptions

    (device,) = descriptor.probe()
    backend = descriptor.create(device, CreateOptions())
    stepped, release, worker_id = threading.Event(), threading.Event(), []

    def worker():
        worker_id.append(threading.get_ident())
        backend.download(backend.upload(np.ones((1, 8), np.float32)))
        stepped.set()
        release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    stepped.wait(10)
    main = threading.get_ident()
    assert len(fake_cuda.STACKS[main]) == 1 and len(fake_cuda.STACKS[worker_id[0]]) == 1
    del backend
    gc.collect()
    assert len(fake_cuda.STACKS[main]) == 1  # no other thread's guard popped main's stack
    release.set()
    thread.join()
    assert fake_cuda.STACKS[worker_id[0]] == []
    from bitnet_cuda.runtime import _leave_at_exit

    _leave_at_exit()  # the backend is gone; the main thread's push is still popped at exit
    assert fake_cuda.STACKS[main] == []
