"""Every op against the numpy reference backend: ternary matmuls bit-exact, the rest to ~1e-6."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.formats.floats import quantize_rows
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack
from bitnet.hal import ALL_OPS, FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat, WeightTensor

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def ternary_tensor(fmt: WeightFormat, values: np.ndarray, rng: np.random.Generator,
                   out_scale: float = 1.0) -> WeightTensor:
    rows, cols = values.shape
    if fmt is WeightFormat.I2_S:
        data = i2s_pack(values, float(rng.uniform(0.01, 2.0)))
    else:
        d = rng.uniform(0.01, 2.0, (rows, cols // 256)).astype(np.float16).astype(np.float32)
        data = (tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack)(values, d)
    return WeightTensor("w", fmt, rows, cols, data, out_scale=out_scale)


def both(vulkan, reference, op: str, *args):
    """Run op on both backends from host arrays; return (vulkan, reference) host results."""
    dev_args = [vulkan.upload(a) if isinstance(a, np.ndarray) else a for a in args]
    ref_args = [reference.upload(a) if isinstance(a, np.ndarray) else a for a in args]
    got = vulkan.download(getattr(vulkan, op)(*dev_args))
    want = reference.download(getattr(reference, op)(*ref_args))
    return got, want


def assert_close(got: np.ndarray, want: np.ndarray, rel: float = 1e-5) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got - want).max()) <= rel * scale


def test_capabilities_claim_the_whole_contract(vulkan_backend):
    caps = vulkan_backend.capabilities
    assert caps.ops == ALL_OPS
    assert caps.ternary_formats == TERNARY_FORMATS
    assert caps.float_formats == FLOAT_FORMATS


@SETTINGS
@given(
    fmt=st.sampled_from(sorted(TERNARY_FORMATS)),
    n=st.integers(1, 6),
    rows=st.integers(1, 40),
    blocks=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_ternary_is_bit_exact(vulkan_backend, reference_backend, fmt, n, rows, blocks,
                                     seed):
    rng = np.random.default_rng(seed)
    cols = 256 * blocks
    values = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    tensor = ternary_tensor(fmt, values, rng)
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.01, 10)).astype(np.float32)
    got = vulkan_backend.download(
        vulkan_backend.linear_ternary(vulkan_backend.load_weight(tensor), vulkan_backend.upload(x))
    )
    want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", sorted(TERNARY_FORMATS))
def test_linear_ternary_edge_rows(vulkan_backend, reference_backend, fmt):
    """All-zero rows (the 1e-5 floor / the zero Q8_K block), amax ties of both signs, tiny and
    huge magnitudes, out_scale, and I2_S's 128-multiple K."""
    rng = np.random.default_rng(7)
    cols = 384 if fmt is WeightFormat.I2_S else 512
    values = rng.integers(-1, 2, (9, cols)).astype(np.int8)
    tensor = ternary_tensor(fmt, values, rng, out_scale=0.75)
    x = rng.standard_normal((5, cols)).astype(np.float32)
    x[0] = 0.0
    x[1, :5] = [-3.0, 3.0, 3.0, -3.0, 1.0]
    x[1, 5:] = np.clip(x[1, 5:], -2.9, 2.9)
    x[2] *= 1e-7
    x[3] *= 1e4
    x[4, 256:] = 0.0
    got = vulkan_backend.download(
        vulkan_backend.linear_ternary(vulkan_backend.load_weight(tensor), vulkan_backend.upload(x))
    )
    want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", sorted(FLOAT_FORMATS))
def test_linear_float_and_embed(vulkan_backend, reference_backend, fmt):
    rng = np.random.default_rng(3)
    rows, cols = 37, 512
    data = quantize_rows(fmt, rng.standard_normal((rows, cols)).astype(np.float32))
    tensor = WeightTensor("w", fmt, rows, cols, data, out_scale=1.25)
    weight = vulkan_backend.load_weight(tensor)
    ref_weight = reference_backend.load_weight(tensor)
    for n in (1, 7):
        x = rng.standard_normal((n, cols)).astype(np.float32)
        got = vulkan_backend.download(vulkan_backend.linear_float(weight, vulkan_backend.upload(x)))
        assert_close(got, reference_backend.linear_float(ref_weight, x))
    ids = np.array([0, 36, 5, 5], dtype=np.int32)
    got = vulkan_backend.download(vulkan_backend.embed(weight, vulkan_backend.upload(ids)))
    np.testing.assert_array_equal(got, reference_backend.embed(ref_weight, ids))


@pytest.mark.parametrize("n,k", [(1, 256), (3, 2560), (2, 100)])
def test_rmsnorm(vulkan_backend, reference_backend, n, k):
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((n, k)) * 3).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (1, k)).astype(np.float32)
    got, want = both(vulkan_backend, reference_backend, "rmsnorm", x, w, 1e-5)
    if vulkan_backend.runtime.use_fp64:  # double sum of squares, correctly rounded sqrt and divide
        np.testing.assert_array_equal(got, want)
    assert_close(got, want, 1e-6)


@pytest.mark.parametrize("pos,n,heads,dim,theta", [(0, 4, 4, 64, 10000.0),
                                                   (200, 1, 2, 128, 500000.0),
                                                   (5000, 3, 1, 32, 10000.0)])
def test_rope(vulkan_backend, reference_backend, pos, n, heads, dim, theta):
    rng = np.random.default_rng(pos)
    x = rng.standard_normal((n, heads * dim)).astype(np.float32)
    got, want = both(vulkan_backend, reference_backend, "rope", x, pos, heads, dim, theta)
    if vulkan_backend.runtime.use_fp64:  # tables and rotation in float64, as the reference
        np.testing.assert_array_equal(got, want)
    assert_close(got, want, 1e-6)


@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 64), (2, 2, 32), (8, 1, 16)])
def test_attention_prefill_then_decode(vulkan_backend, reference_backend, heads, kv_heads, dim):
    rng = np.random.default_rng(heads * 100 + dim)
    n_layers, n_ctx = 2, 16
    caches = [b.kv_cache_alloc(n_layers, n_ctx, kv_heads, dim)
              for b in (vulkan_backend, reference_backend)]
    pos = 0
    for n in (5, 1, 1, 3):
        q = rng.standard_normal((n, heads * dim)).astype(np.float32)
        k = rng.standard_normal((n, kv_heads * dim)).astype(np.float32)
        v = rng.standard_normal((n, kv_heads * dim)).astype(np.float32)
        for layer in range(n_layers):
            results = []
            for backend, cache in zip((vulkan_backend, reference_backend), caches):
                out = backend.attention(backend.upload(q), backend.upload(k), backend.upload(v),
                                        cache, layer, pos, heads, kv_heads, dim)
                results.append(backend.download(out))
            assert_close(results[0], results[1], 1e-5)
        pos += n


def test_attention_rejects_overflowing_the_cache(vulkan_backend):
    cache = vulkan_backend.kv_cache_alloc(1, 4, 1, 16)
    q = vulkan_backend.upload(np.zeros((2, 16), np.float32))
    with pytest.raises(ValueError, match="exceed"):
        vulkan_backend.attention(q, q, q, cache, 0, 3, 1, 1, 16)


@pytest.mark.parametrize("op", ["add", "relu2_mul", "silu_mul"])
def test_elementwise(vulkan_backend, reference_backend, op):
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((3, 1000)) * 4).astype(np.float32)
    b = rng.standard_normal((3, 1000)).astype(np.float32)
    got, want = both(vulkan_backend, reference_backend, op, a, b)
    if op != "silu_mul":  # one correctly rounded f32 op chain; silu_mul's exp is a few ulp
        np.testing.assert_array_equal(got, want)
    assert_close(got, want, 1e-6)


def test_slice_rows_and_round_trip(vulkan_backend):
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    buf = vulkan_backend.upload(x)
    np.testing.assert_array_equal(vulkan_backend.download(buf), x)
    np.testing.assert_array_equal(vulkan_backend.download(vulkan_backend.slice_rows(buf, 5, 6)),
                                  x[5:6])
    ids = np.array([4, 1, 2], dtype=np.int32)
    np.testing.assert_array_equal(vulkan_backend.download(vulkan_backend.upload(ids)), ids)
    parts = [vulkan_backend.slice_rows(buf, 4, 6), vulkan_backend.slice_rows(buf, 0, 1)]
    joined = vulkan_backend.download(vulkan_backend.concat_rows(parts))
    np.testing.assert_array_equal(joined, x[[4, 5, 0]])
    with pytest.raises(ValueError, match="float32 2-D or int32 1-D"):
        vulkan_backend.upload(np.zeros((2, 2), np.float64))


def q6_k_tensor(rows: int, cols: int, rng: np.random.Generator,
                out_scale: float = 1.0) -> WeightTensor:
    w = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 3, (rows, 1))).astype(np.float32)
    return WeightTensor("output.weight", WeightFormat.Q6_K, rows, cols,
                        quantize_rows(WeightFormat.Q6_K, w), out_scale=out_scale)


@SETTINGS
@given(
    n=st.integers(1, 10),
    rows=st.integers(1, 40),
    blocks=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_q6_k_is_bit_exact(vulkan_backend, reference_backend, n, rows, blocks, seed):
    """Q6_K x Q8_K (hal linear_float): exact integer block sums, f32 epilogue in block order."""
    rng = np.random.default_rng(seed)
    cols = 256 * blocks
    tensor = q6_k_tensor(rows, cols, rng, out_scale=0.5)
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.01, 10)).astype(np.float32)
    x[0, :256] = 0.0  # an all-zero Q8_K block
    got = vulkan_backend.download(
        vulkan_backend.linear_float(vulkan_backend.load_weight(tensor), vulkan_backend.upload(x))
    )
    want = reference_backend.linear_float(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


def test_many_rows_fold_into_z(vulkan_backend, reference_backend, monkeypatch):
    """Groups beyond maxComputeWorkGroupCount[0] fold into z; pretend the limit is 3."""
    monkeypatch.setattr(vulkan_backend.runtime, "max_groups", 3)
    rng = np.random.default_rng(5)
    values = rng.integers(-1, 2, (203, 256)).astype(np.int8)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    for fmt in (WeightFormat.I2_S, WeightFormat.TQ2_0):
        tensor = ternary_tensor(fmt, values, rng)
        got = vulkan_backend.download(vulkan_backend.linear_ternary(
            vulkan_backend.load_weight(tensor), vulkan_backend.upload(x)))
        want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
        np.testing.assert_array_equal(got, want)
    tensor = q6_k_tensor(203, 256, rng)
    got = vulkan_backend.download(vulkan_backend.linear_float(
        vulkan_backend.load_weight(tensor), vulkan_backend.upload(x)))
    want = reference_backend.linear_float(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


def test_buffers_beyond_the_binding_limit_are_refused(vulkan_backend, monkeypatch):
    monkeypatch.setattr(vulkan_backend.runtime, "max_buffer_range", 1024)
    data = quantize_rows(WeightFormat.F32, np.zeros((4, 512), np.float32))
    with pytest.raises(MemoryError, match="maxStorageBufferRange"):
        vulkan_backend.load_weight(WeightTensor("big", WeightFormat.F32, 4, 512, data))


@pytest.mark.parametrize("int_dot", ["0", "1"])
def test_both_integer_dot_paths_are_bit_exact(reference_backend, monkeypatch, int_dot):
    """The OpSDot shaders (where the device has VK_KHR_shader_integer_dot_product) and the
    portable ones (BITNET_VULKAN_INT_DOT=0) give the reference's bits."""
    from bitnet_vulkan.descriptor import descriptor

    from bitnet.hal import CreateOptions

    monkeypatch.setenv("BITNET_VULKAN_INT_DOT", int_dot)
    backend = descriptor.create(descriptor.probe()[0], CreateOptions())
    try:
        if int_dot == "1" and not backend.info()["int_dot"]:
            pytest.skip("this device has no VK_KHR_shader_integer_dot_product")
        assert backend.info()["int_dot"] == (int_dot == "1")
        rng = np.random.default_rng(17)
        values = rng.integers(-1, 2, (21, 512)).astype(np.int8)
        x = (rng.standard_normal((9, 512)) * 2).astype(np.float32)
        for fmt in sorted(TERNARY_FORMATS):
            tensor = ternary_tensor(fmt, values, rng)
            got = backend.download(backend.linear_ternary(backend.load_weight(tensor),
                                                          backend.upload(x)))
            want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
            np.testing.assert_array_equal(got, want)
        tensor = q6_k_tensor(21, 512, rng)  # the Q6_K head's integer dot takes the same path
        got = backend.download(backend.linear_float(backend.load_weight(tensor),
                                                    backend.upload(x)))
        want = reference_backend.linear_float(reference_backend.load_weight(tensor), x)
        np.testing.assert_array_equal(got, want)
    finally:
        backend.close()
