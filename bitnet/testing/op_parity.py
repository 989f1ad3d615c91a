"""Every op of a backend against the numpy reference backend, on random and edge inputs.

Collected by the conformance plugin (``bitnet.testing.conformance``) under ``<conftest>::ops``
for backends whose conftest opts in with ``conformance_extras = ("ops", ...)``. Ternary matmuls
and the Q6_K head must be bit-exact; the rest match to ~1e-6 relative, and exactly where the
backend computes rmsnorm / rope in float64 as the reference does (a conftest says so with a
fixture ``conformance_fp64_exact`` returning True; without one those two are checked to 1e-6
only). Checks of ops or formats the backend does not claim are skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.formats.floats import quantize_rows
from bitnet.hal import KV_BLOCK, FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat, WeightTensor
from bitnet.hal.backend import KernelBackend
from bitnet.hal.ops import Op
from bitnet.testing import conformance
from bitnet.testing.weights import q6_k_tensor, ternary_tensor

# the fixture, registered with this module's tests (whatever the enabling conftest imported)
reference_backend = conformance.reference_backend

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def require(backend: KernelBackend, op: Op, fmt: WeightFormat | None = None) -> None:
    """Skip the calling check when ``backend`` does not claim ``op`` (or ``fmt``)."""
    caps = backend.capabilities
    if op not in caps.ops:
        pytest.skip(f"{op.value} is not claimed by this backend")
    if fmt is not None and fmt not in caps.ternary_formats | caps.float_formats:
        pytest.skip(f"{fmt.value} weights are not claimed by this backend")


def fp64_exact(request: pytest.FixtureRequest) -> bool:
    """Whether the backend's conftest says rmsnorm / rope run in float64 (then bit-exact)."""
    try:
        return bool(request.getfixturevalue("conformance_fp64_exact"))
    except pytest.FixtureLookupError:  # not declared: the documented default, 1e-6 only
        return False


def both(backend: KernelBackend, reference: KernelBackend, op: str, *args):
    """Run op on both backends from host arrays; return (backend, reference) host results."""
    dev_args = [backend.upload(a) if isinstance(a, np.ndarray) else a for a in args]
    ref_args = [reference.upload(a) if isinstance(a, np.ndarray) else a for a in args]
    got = backend.download(getattr(backend, op)(*dev_args))
    want = reference.download(getattr(reference, op)(*ref_args))
    return got, want


def assert_close(got: np.ndarray, want: np.ndarray, rel: float = 1e-5) -> None:
    """float32 ``got`` within ``rel`` times max |want| of ``want``, elementwise, same shape."""
    assert got.shape == want.shape and got.dtype == np.float32
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got - want).max()) <= rel * scale


def _linear_ternary(backend: KernelBackend, tensor: WeightTensor, x: np.ndarray) -> np.ndarray:
    return backend.download(backend.linear_ternary(backend.load_weight(tensor), backend.upload(x)))


@SETTINGS
@given(
    fmt=st.sampled_from(sorted(TERNARY_FORMATS)),
    n=st.integers(1, 6),
    rows=st.integers(1, 40),
    blocks=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_ternary_is_bit_exact(conformance_backend, reference_backend, fmt, n, rows,
                                     blocks, seed):
    require(conformance_backend, Op.LINEAR_TERNARY, fmt)
    rng = np.random.default_rng(seed)
    cols = 256 * blocks
    values = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    tensor = ternary_tensor(fmt, values, rng)
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.01, 10)).astype(np.float32)
    got = _linear_ternary(conformance_backend, tensor, x)
    want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", sorted(TERNARY_FORMATS))
def test_linear_ternary_edge_rows(conformance_backend, reference_backend, fmt):
    """All-zero rows (the 1e-5 floor / the zero Q8_K block), amax ties of both signs, tiny and
    huge magnitudes, out_scale, and I2_S's 128-multiple K."""
    require(conformance_backend, Op.LINEAR_TERNARY, fmt)
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
    got = _linear_ternary(conformance_backend, tensor, x)
    want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [16, 37, 70])
@pytest.mark.parametrize("fmt", [*sorted(TERNARY_FORMATS), WeightFormat.Q6_K])
def test_prompt_sized_integer_matmuls_are_bit_exact(conformance_backend, reference_backend,
                                                    fmt, n):
    """Prompt-sized batches, which a backend may run on other kernels (CUDA: int8 tensor-core
    tiles of 64 rows x 64 tokens from 16 tokens on): rows and tokens that are no multiple of a
    tile, an all-zero Q8_K block, out_scale; bit for bit."""
    rng = np.random.default_rng(n)
    rows, cols = 70, 512
    if fmt is WeightFormat.Q6_K:
        require(conformance_backend, Op.LINEAR_FLOAT, fmt)
        tensor, op = q6_k_tensor(rows, cols, rng, out_scale=0.5), "linear_float"
    else:
        require(conformance_backend, Op.LINEAR_TERNARY, fmt)
        values = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
        tensor, op = ternary_tensor(fmt, values, rng, out_scale=0.5), "linear_ternary"
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.01, 10, (n, 1))).astype(np.float32)
    x[n // 2, 256:] = 0.0
    backend = conformance_backend
    got = backend.download(getattr(backend, op)(backend.load_weight(tensor), backend.upload(x)))
    want = getattr(reference_backend, op)(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", sorted(FLOAT_FORMATS))
def test_linear_float_and_embed(conformance_backend, reference_backend, fmt):
    backend = conformance_backend
    require(backend, Op.LINEAR_FLOAT, fmt)
    require(backend, Op.EMBED)
    rng = np.random.default_rng(3)
    rows, cols = 37, 512
    data = quantize_rows(fmt, rng.standard_normal((rows, cols)).astype(np.float32))
    tensor = WeightTensor("w", fmt, rows, cols, data, out_scale=1.25)
    weight = backend.load_weight(tensor)
    ref_weight = reference_backend.load_weight(tensor)
    for n in (1, 7):
        x = rng.standard_normal((n, cols)).astype(np.float32)
        got = backend.download(backend.linear_float(weight, backend.upload(x)))
        assert_close(got, reference_backend.linear_float(ref_weight, x))
    ids = np.array([0, 36, 5, 5], dtype=np.int32)
    got = backend.download(backend.embed(weight, backend.upload(ids)))
    np.testing.assert_array_equal(got, reference_backend.embed(ref_weight, ids))


@SETTINGS
@given(
    n=st.integers(1, 10),
    rows=st.integers(1, 40),
    blocks=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_q6_k_is_bit_exact(conformance_backend, reference_backend, n, rows, blocks, seed):
    """Q6_K x Q8_K (hal linear_float): exact integer block sums, f32 epilogue in block order."""
    backend = conformance_backend
    require(backend, Op.LINEAR_FLOAT, WeightFormat.Q6_K)
    rng = np.random.default_rng(seed)
    cols = 256 * blocks
    tensor = q6_k_tensor(rows, cols, rng, out_scale=0.5)
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.01, 10)).astype(np.float32)
    x[0, :256] = 0.0  # an all-zero Q8_K block
    got = backend.download(backend.linear_float(backend.load_weight(tensor), backend.upload(x)))
    want = reference_backend.linear_float(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n,k", [(1, 256), (3, 2560), (2, 100)])
def test_rmsnorm(conformance_backend, reference_backend, request, n, k):
    require(conformance_backend, Op.RMSNORM)
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((n, k)) * 3).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (1, k)).astype(np.float32)
    got, want = both(conformance_backend, reference_backend, "rmsnorm", x, w, 1e-5)
    if fp64_exact(request):  # double sum of squares, correctly rounded sqrt and divide
        np.testing.assert_array_equal(got, want)
    assert_close(got, want, 1e-6)


@pytest.mark.parametrize("pos,n,heads,dim,theta", [(0, 4, 4, 64, 10000.0),
                                                   (200, 1, 2, 128, 500000.0),
                                                   (5000, 3, 1, 32, 10000.0)])
def test_rope(conformance_backend, reference_backend, request, pos, n, heads, dim, theta):
    require(conformance_backend, Op.ROPE)
    rng = np.random.default_rng(pos)
    x = rng.standard_normal((n, heads * dim)).astype(np.float32)
    got, want = both(conformance_backend, reference_backend, "rope", x, pos, heads, dim, theta)
    if fp64_exact(request):  # tables and rotation in float64, as the reference
        np.testing.assert_array_equal(got, want)
    assert_close(got, want, 1e-6)


@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 64), (2, 2, 32), (8, 1, 16)])
def test_attention_prefill_then_decode(conformance_backend, reference_backend, heads, kv_heads,
                                       dim):
    require(conformance_backend, Op.ATTENTION)
    rng = np.random.default_rng(heads * 100 + dim)
    n_layers, n_ctx = 2, 16
    pair = (conformance_backend, reference_backend)
    caches = [b.kv_cache_alloc(n_layers, n_ctx, kv_heads, dim) for b in pair]
    pos = 0
    for n in (5, 1, 1, 3):
        q = rng.standard_normal((n, heads * dim)).astype(np.float32)
        k = rng.standard_normal((n, kv_heads * dim)).astype(np.float32)
        v = rng.standard_normal((n, kv_heads * dim)).astype(np.float32)
        for layer in range(n_layers):
            results = []
            for backend, cache in zip(pair, caches):
                out = backend.attention(backend.upload(q), backend.upload(k), backend.upload(v),
                                        cache, layer, pos, heads, kv_heads, dim)
                results.append(backend.download(out))
            assert_close(results[0], results[1], 1e-5)
        pos += n


@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 64), (8, 1, 16)])
def test_attention_rows_is_rope_then_attention_per_sequence(conformance_backend,
                                                            reference_backend, heads, kv_heads,
                                                            dim):
    """Sequences of one paged pool with different histories (one empty) decode one token each
    in one call, twice; then each sequence's blocks must hold what per-sequence rope +
    attention would have put there."""
    require(conformance_backend, Op.ATTENTION_ROWS)
    rng = np.random.default_rng(heads + dim)
    theta = 10000.0
    prefix = [3, 0, 19]
    tables = np.array([[5, 0], [2, 7], [6, 1]], np.int32)  # blocks of KV_BLOCK, shuffled
    pair = (conformance_backend, reference_backend)
    pools = [b.kv_cache_alloc(2, 8 * KV_BLOCK, kv_heads, dim) for b in pair]

    def rows(n: int, width: int) -> np.ndarray:
        return rng.standard_normal((n, width)).astype(np.float32)

    for seq, n in enumerate(prefix):  # history: plain attention on each backend
        if n:
            q, k, v = rows(n, heads * dim), rows(n, kv_heads * dim), rows(n, kv_heads * dim)
            for b, pool in zip(pair, pools):
                b.attention(b.upload(q), b.upload(k), b.upload(v), pool, 1, 0, heads,
                            kv_heads, dim, table=tables[seq])
    positions = np.array(prefix, np.int32)
    for _ in range(2):
        q, k, v = (rows(len(prefix), heads * dim), rows(len(prefix), kv_heads * dim),
                   rows(len(prefix), kv_heads * dim))
        results = [b.download(b.attention_rows(b.upload(q), b.upload(k), b.upload(v), pool, 1,
                                               positions, heads, kv_heads, dim, theta, tables))
                   for b, pool in zip(pair, pools)]
        assert results[0].shape == (len(prefix), heads * dim)
        assert_close(results[0], results[1], 1e-5)
        positions = positions + 1
    # one more token per sequence through the plain ops reads what attention_rows stored
    for seq, pos in enumerate(positions.tolist()):
        q, k, v = rows(1, heads * dim), rows(1, kv_heads * dim), rows(1, kv_heads * dim)
        results = [b.download(b.attention(b.upload(q), b.upload(k), b.upload(v), pool, 1,
                                          pos, heads, kv_heads, dim, table=tables[seq]))
                   for b, pool in zip(pair, pools)]
        assert_close(results[0], results[1], 1e-5)


def test_attention_rows_rejects_bad_rows(conformance_backend):
    require(conformance_backend, Op.ATTENTION_ROWS)
    b = conformance_backend
    pool = b.kv_cache_alloc(1, 4 * KV_BLOCK, 1, 16)
    x = b.upload(np.zeros((2, 16), np.float32))
    tables = np.array([[0, 1], [2, 3]], np.int32)
    with pytest.raises(ValueError, match="blocks"):  # position 2 * KV_BLOCK needs a 3rd block
        b.attention_rows(x, x, x, pool, 0, np.array([1, 2 * KV_BLOCK], np.int32), 1, 1, 16,
                         10000.0, tables)
    with pytest.raises(ValueError, match="same cache row"):
        b.attention_rows(x, x, x, pool, 0, np.array([1, 1], np.int32), 1, 1, 16, 10000.0,
                         np.array([[0, 1], [0, 3]], np.int32))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        b.attention_rows(x, x, x, pool, 0, np.array([1, 2], np.int32), 1, 1, 16, 10000.0,
                         np.array([[0, 1], [9, 3]], np.int32))
    with pytest.raises(ValueError, match="positions"):
        b.attention_rows(x, x, x, pool, 0, np.array([1], np.int32), 1, 1, 16, 10000.0,
                         tables[:1])


def test_attention_through_a_block_table_matches_the_contiguous_cache(conformance_backend):
    """A prompt in chunks across block edges, through a shuffled table, gives the bits of the
    same calls on a contiguous cache; a table too short or naming a block outside the pool is
    refused."""
    require(conformance_backend, Op.ATTENTION)
    b = conformance_backend
    rng = np.random.default_rng(7)
    heads, kv_heads, dim = 4, 2, 64
    pool = b.kv_cache_alloc(1, 6 * KV_BLOCK, kv_heads, dim)
    flat = b.kv_cache_alloc(1, 3 * KV_BLOCK, kv_heads, dim)
    table = np.array([4, 1, 3], np.int32)
    pos = 0
    for n in (KV_BLOCK - 3, 5, 1, KV_BLOCK + 2):
        q, k, v = (rng.standard_normal((n, w)).astype(np.float32)
                   for w in (heads * dim, kv_heads * dim, kv_heads * dim))
        args = [b.upload(a) for a in (q, k, v)]
        got = b.download(b.attention(*args, pool, 0, pos, heads, kv_heads, dim, table=table))
        want = b.download(b.attention(*args, flat, 0, pos, heads, kv_heads, dim))
        assert np.array_equal(got, want), f"chunk at {pos}: paged != contiguous"
        pos += n
    one = [b.upload(rng.standard_normal((1, w)).astype(np.float32))
           for w in (heads * dim, kv_heads * dim, kv_heads * dim)]
    with pytest.raises(ValueError, match="blocks"):
        b.attention(*one, pool, 0, 3 * KV_BLOCK, heads, kv_heads, dim, table=table)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        b.attention(*one, pool, 0, 0, heads, kv_heads, dim, table=np.array([6], np.int32))


def test_attention_rejects_overflowing_the_cache(conformance_backend):
    require(conformance_backend, Op.ATTENTION)
    cache = conformance_backend.kv_cache_alloc(1, 4, 1, 16)
    q = conformance_backend.upload(np.zeros((2, 16), np.float32))
    with pytest.raises(ValueError, match="exceed"):
        conformance_backend.attention(q, q, q, cache, 0, 3, 1, 1, 16)


@pytest.mark.parametrize("op", ["add", "relu2_mul", "silu_mul"])
def test_elementwise(conformance_backend, reference_backend, op):
    require(conformance_backend, Op(op))
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((3, 1000)) * 4).astype(np.float32)
    b = rng.standard_normal((3, 1000)).astype(np.float32)
    got, want = both(conformance_backend, reference_backend, op, a, b)
    if op != "silu_mul":  # one correctly rounded f32 op chain; silu_mul's exp is a few ulp
        np.testing.assert_array_equal(got, want)
    assert_close(got, want, 1e-6)


def test_slice_rows_and_round_trip(conformance_backend):
    backend = conformance_backend
    require(backend, Op.SLICE_ROWS)
    require(backend, Op.CONCAT_ROWS)
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    buf = backend.upload(x)
    np.testing.assert_array_equal(backend.download(buf), x)
    np.testing.assert_array_equal(backend.download(backend.slice_rows(buf, 5, 6)), x[5:6])
    ids = np.array([4, 1, 2], dtype=np.int32)
    np.testing.assert_array_equal(backend.download(backend.upload(ids)), ids)
    parts = [backend.slice_rows(buf, 4, 6), backend.slice_rows(buf, 0, 1)]
    joined = backend.download(backend.concat_rows(parts))
    np.testing.assert_array_equal(joined, x[[4, 5, 0]])
    with pytest.raises(ValueError, match="float32 2-D or int32 1-D"):
        backend.upload(np.zeros((2, 2), np.float64))
