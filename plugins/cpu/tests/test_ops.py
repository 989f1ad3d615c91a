"""The float and elementwise ops against the reference backend, on every kernel table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.hal.kv_blocks import KV_BLOCK, blocks_for, cache_rows
from bitnet.hal.weight_formats import WeightFormat

from bitnet.testing.weights import q6_k_tensor
from bitnet_cpu import _kernels

from conftest import float_tensor, make_backend

FLOAT_FORMATS = [WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16, WeightFormat.Q8_0,
                 WeightFormat.Q6_K]


@settings(max_examples=15, deadline=None)
@given(fmt=st.sampled_from(FLOAT_FORMATS), m=st.integers(1, 41), blocks=st.integers(1, 3),
       n=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_linear_float_and_embed(variant, reference, fmt, m, blocks, n, seed):
    rng = np.random.default_rng(seed)
    k = blocks * 256
    tensor = float_tensor(fmt, rng.standard_normal((m, k)).astype(np.float32))
    x = rng.standard_normal((n, k)).astype(np.float32)
    cpu = make_backend(variant, 2)
    w = cpu.load_weight(tensor)
    rw = reference.load_weight(tensor)
    got = cpu.download(cpu.linear_float(w, cpu.upload(x)))
    want = reference.linear_float(rw, x)
    if fmt is WeightFormat.Q6_K:
        # Q8_K activations, exact integer block sums, f32 epilogue in block order: bit-exact
        np.testing.assert_array_equal(got, want)
    else:
        # f32 sums in another order: error bounded by K ulps of sum |w x|
        bound = 4 * k * np.finfo(np.float32).eps * (np.abs(rw.matrix) @ np.abs(x).T).T.max()
        assert np.abs(got - want).max() <= bound
    ids = rng.integers(0, m, size=n).astype(np.int32)
    np.testing.assert_array_equal(cpu.download(cpu.embed(w, cpu.upload(ids))),
                                  reference.embed(rw, ids))


def test_f16_row_tails(variant, reference):
    """F16 rows whose K is not a multiple of any SIMD width."""
    rng = np.random.default_rng(3)
    tensor = float_tensor(WeightFormat.F16, rng.standard_normal((9, 77)).astype(np.float32))
    x = rng.standard_normal((2, 77)).astype(np.float32)
    cpu = make_backend(variant)
    got = cpu.download(cpu.linear_float(cpu.load_weight(tensor), cpu.upload(x)))
    np.testing.assert_allclose(got, reference.linear_float(reference.load_weight(tensor), x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", [WeightFormat.F16, WeightFormat.BF16, WeightFormat.F32,
                                 WeightFormat.Q8_0])
@pytest.mark.parametrize("k", [64, 256, 1024 + 32, 2560])  # both sides of the F16 tile limit
def test_float_head_is_batch_invariant(variant, fmt, k):
    """A token's outputs are the same bits whatever else is in the batch (tiles of rows and
    tokens, tails of both), so batched decoding never changes a sequence's text."""
    rng = np.random.default_rng(k)
    m = 75  # not a multiple of the row tiles or blocks
    cpu = make_backend(variant)
    w = cpu.load_weight(float_tensor(fmt, rng.standard_normal((m, k)).astype(np.float32)))
    x = rng.standard_normal((17, k)).astype(np.float32)
    alone = np.concatenate([cpu.download(cpu.linear_float(w, cpu.upload(x[t:t + 1])))
                            for t in range(17)])
    for n in (2, 3, 5, 8, 17):
        np.testing.assert_array_equal(cpu.download(cpu.linear_float(w, cpu.upload(x[:n]))),
                                      alone[:n])


def test_elementwise_ops_bit_exact(variant, reference):
    rng = np.random.default_rng(1)
    cpu = make_backend(variant)
    x = rng.standard_normal((5, 640)).astype(np.float32) * 3
    u = rng.standard_normal((5, 640)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (1, 640)).astype(np.float32)
    X, U, W = cpu.upload(x), cpu.upload(u), cpu.upload(w)
    np.testing.assert_array_equal(cpu.download(cpu.rmsnorm(X, W, 1e-5)),
                                  reference.rmsnorm(x, w, 1e-5))
    np.testing.assert_array_equal(cpu.download(cpu.rope(X, 7, 5, 128, 500000.0)),
                                  reference.rope(x, 7, 5, 128, 500000.0))
    np.testing.assert_array_equal(cpu.download(cpu.relu2_mul(X, U)), reference.relu2_mul(x, u))
    np.testing.assert_array_equal(cpu.download(cpu.add(X, U)), reference.add(x, u))
    np.testing.assert_allclose(cpu.download(cpu.silu_mul(X, U)), reference.silu_mul(x, u),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(cpu.download(cpu.slice_rows(X, 1, 3)), x[1:3])


def test_rope_reuses_the_tables_of_earlier_positions(variant, reference):
    """rope keeps the cos/sin tables of the last call's positions: later calls inside that
    range read its rows at their offset, calls outside it (or of another head size or theta)
    compute new ones; every call equals the reference."""
    rng = np.random.default_rng(3)
    cpu = make_backend(variant)
    x = rng.standard_normal((8, 4 * 64)).astype(np.float32)
    calls = [(x, 3, 4, 64, 1e4), (x[:2], 6, 4, 64, 1e4), (x[:1], 10, 4, 64, 1e4),
             (x[:3], 10, 4, 64, 1e4), (x[:2], 11, 2, 128, 1e4), (x[:2], 11, 2, 128, 5e5),
             (x[:1], 3, 4, 64, 1e4)]
    for xs, pos, heads, dim, theta in calls:
        np.testing.assert_array_equal(cpu.download(cpu.rope(cpu.upload(xs), pos, heads, dim,
                                                            theta)),
                                      reference.rope(xs, pos, heads, dim, theta))


def test_rmsnorm_rows_in_fours_equal_rows_alone(variant):
    """A prompt's rows are normalized four at a time: each row equals itself normalized alone
    (the decode path), for every count of leftover rows and K with a tail past 8."""
    rng = np.random.default_rng(4)
    cpu = make_backend(variant, 2)
    for n, k in [(4, 2560), (7, 13), (9, 6912), (6, 8)]:
        x = (rng.standard_normal((n, k)) * 7).astype(np.float32)
        w = cpu.upload(rng.uniform(0.5, 1.5, (1, k)).astype(np.float32))
        rows = cpu.download(cpu.rmsnorm(cpu.upload(x), w, 1e-6))
        for t in range(n):
            np.testing.assert_array_equal(
                rows[t:t + 1], cpu.download(cpu.rmsnorm(cpu.upload(x[t:t + 1]), w, 1e-6)))


def test_outputs_start_on_a_cache_line(variant):
    """Op outputs start on a 64-byte boundary (the GEMM epilogue stores whole lines)."""
    rng = np.random.default_rng(6)
    cpu = make_backend(variant)
    x = cpu.upload(rng.standard_normal((3, 256)).astype(np.float32))
    w = cpu.load_weight(float_tensor(WeightFormat.F16,
                                     rng.standard_normal((5, 256)).astype(np.float32)))
    outs = [cpu.rmsnorm(x, cpu.upload(np.ones((1, 256), np.float32)), 1e-6), cpu.add(x, x),
            cpu.relu2_mul(x, x), cpu.rope(x, 0, 2, 128, 1e4), cpu.linear_float(w, x)]
    assert all(o.array.ctypes.data % 64 == 0 for o in outs)


def test_keep_heap_takes_the_backend_values_and_refuses_huge_ones():
    import platform

    from bitnet_cpu import _kernels
    from bitnet_cpu.backend import HEAP_MMAP_BELOW, HEAP_TRIM_ABOVE

    assert _kernels.keep_heap(2 << 30, HEAP_TRIM_ABOVE) is False
    if platform.libc_ver()[0] == "glibc":
        assert _kernels.keep_heap(HEAP_MMAP_BELOW, HEAP_TRIM_ABOVE) is True


@pytest.mark.parametrize("n_heads,n_kv,steps", [(4, 2, [5, 1, 1, 3]), (20, 5, [1, 1]),
                                                 (3, 3, [9])])
def test_attention_prefill_then_decode(variant, reference, n_heads, n_kv, steps):
    rng = np.random.default_rng(n_heads)
    d = 64
    cpu = make_backend(variant)
    cache = cpu.kv_cache_alloc(2, 32, n_kv, d)
    rcache = reference.kv_cache_alloc(2, 32, n_kv, d)
    pos = 0
    for n in steps:
        q = rng.standard_normal((n, n_heads * d)).astype(np.float32)
        k = rng.standard_normal((n, n_kv * d)).astype(np.float32)
        v = rng.standard_normal((n, n_kv * d)).astype(np.float32)
        got = cpu.download(cpu.attention(cpu.upload(q), cpu.upload(k), cpu.upload(v), cache, 1,
                                         pos, n_heads, n_kv, d))
        want = reference.attention(q, k, v, rcache, 1, pos, n_heads, n_kv, d)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
        pos += n
    np.testing.assert_array_equal(cache.k[1, :pos], rcache.k[1, :pos].view(np.uint16))


def _qkv(rng, n: int, n_heads: int, n_kv: int, d: int) -> list[np.ndarray]:
    return [rng.standard_normal((n, w)).astype(np.float32) for w in (n_heads * d, n_kv * d,
                                                                     n_kv * d)]


@pytest.mark.parametrize("n_heads,n_kv,d,chunks", [(4, 2, 64, [13, 5, 1, 1, 20]),
                                                   (20, 5, 128, [40, 1]),
                                                   (3, 1, 100, [16, 16, 1])])
def test_attention_through_a_block_table_is_the_contiguous_cache(variant, n_heads, n_kv, d,
                                                                 chunks):
    """Chunks that start and end inside blocks (the stores split per block), a prefill large
    enough to run on both threads and decode steps through a shuffled table: the bits of the
    same calls on a contiguous cache, and the same f16 values in the rows the table names."""
    rng = np.random.default_rng(n_heads + d)
    cpu = make_backend(variant, 2)
    total = sum(chunks)
    table = rng.permutation(blocks_for(total) + 3).astype(np.int32)  # spare blocks stay zero
    pool = cpu.kv_cache_alloc(2, table.size * KV_BLOCK, n_kv, d)
    flat = cpu.kv_cache_alloc(2, total, n_kv, d)
    pos = 0
    for n in chunks:
        args = [cpu.upload(a) for a in _qkv(rng, n, n_heads, n_kv, d)]
        got = cpu.download(cpu.attention(*args, pool, 1, pos, n_heads, n_kv, d, table=table))
        want = cpu.download(cpu.attention(*args, flat, 1, pos, n_heads, n_kv, d))
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        pos += n
    rows = cache_rows(table, np.arange(total))
    np.testing.assert_array_equal(pool.k[1, rows], flat.k[1])
    np.testing.assert_array_equal(pool.v[1, rows], flat.v[1])
    assert not pool.k[0].any()  # layer 0 was never written


@pytest.mark.parametrize("n_heads,n_kv", [(4, 2), (20, 5)])
def test_attention_rows_equals_each_sequence_alone(variant, n_heads, n_kv):
    """The batched decode step of one pool (shuffled blocks, a prefix block shared by two
    sequences) must give every sequence the bits it gets decoded alone in a contiguous cache:
    the server's streamed and plain replies, batched differently, are compared token for
    token."""
    rng = np.random.default_rng(n_heads)
    d = 64
    history = [6, 0, 2 * KV_BLOCK + 3, KV_BLOCK + 11]
    steps = 3
    per_seq = blocks_for(max(history) + steps)
    tables = rng.permutation(len(history) * per_seq).astype(np.int32).reshape(-1, per_seq)
    tables[3, 0] = tables[2, 0]  # sequence 3 reuses sequence 2's first block (same prefix)
    cpu = make_backend(variant)
    pool = cpu.kv_cache_alloc(2, tables.size * KV_BLOCK, n_kv, d)
    alone = [cpu.kv_cache_alloc(2, max(history) + steps, n_kv, d) for _ in history]
    prefix = _qkv(np.random.default_rng(1), KV_BLOCK, n_heads, n_kv, d)
    for r, (cache, n) in enumerate(zip(alone, history)):
        if not n:
            continue
        rows = _qkv(np.random.default_rng(n), n, n_heads, n_kv, d)
        if r in (2, 3):
            rows = [np.concatenate([a[:KV_BLOCK], b[KV_BLOCK:]]) for a, b in zip(prefix, rows)]
        start = KV_BLOCK if r == 3 else 0  # its first block is already in the pool
        cpu.attention(*[cpu.upload(a[start:]) for a in rows], pool, 0, start, n_heads, n_kv, d,
                      table=tables[r])
        cpu.attention(*[cpu.upload(a) for a in rows], cache, 0, 0, n_heads, n_kv, d)
    positions = np.array(history, np.int32)
    for step in range(steps):
        q, k, v = _qkv(rng, len(history), n_heads, n_kv, d)
        got = cpu.download(cpu.attention_rows(cpu.upload(q), cpu.upload(k), cpu.upload(v),
                                              pool, 0, positions, n_heads, n_kv, d, 1e4,
                                              tables))
        for r, (cache, pos) in enumerate(zip(alone, positions.tolist())):
            qr = cpu.rope(cpu.upload(q[r:r + 1]), pos, n_heads, d, 1e4)
            kr = cpu.rope(cpu.upload(k[r:r + 1]), pos, n_kv, d, 1e4)
            want = cpu.download(cpu.attention(qr, kr, cpu.upload(v[r:r + 1]), cache, 0, pos,
                                              n_heads, n_kv, d))
            np.testing.assert_array_equal(got[r:r + 1].view(np.uint32), want.view(np.uint32))
        positions += 1
    for r, cache in enumerate(alone):
        rows = cache_rows(tables[r], np.arange(positions[r]))
        np.testing.assert_array_equal(pool.k[0, rows], cache.k[0, :positions[r]])
        np.testing.assert_array_equal(pool.v[0, rows], cache.v[0, :positions[r]])


def test_attention_rows_refuses_what_the_kernel_cannot_run(variant):
    cpu = make_backend(variant)
    pool = cpu.kv_cache_alloc(1, 2 * KV_BLOCK, 1, 16)
    x = cpu.upload(np.zeros((1, 16), np.float32))
    positions, tables = np.array([0], np.int32), np.array([[1]], np.int32)
    with pytest.raises(ValueError, match="layer 1 outside"):
        cpu.attention_rows(x, x, x, pool, 1, positions, 1, 1, 16, 1e4, tables)
    odd = cpu.kv_cache_alloc(1, KV_BLOCK, 1, 15)
    y = cpu.upload(np.zeros((1, 15), np.float32))
    with pytest.raises(ValueError, match="head_dim 15"):
        cpu.attention_rows(y, y, y, odd, 0, positions, 1, 1, 15, 1e4, np.array([[0]], np.int32))
    with pytest.raises(ValueError, match=r"int32 \[B=1, T\]"):
        cpu.attention_rows(x, x, x, pool, 0, positions, 1, 1, 16, 1e4, np.array([[1]]))


def test_activation_quantizers_bit_exact():
    from bitnet.formats.activations import quantize_per_token_i8, quantize_q8_k
    from bitnet_cpu import _kernels

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((7, 512)) * 5).astype(np.float32)
    x[1] = 0.0
    x[2, 7] = -80.0  # the signed block maximum is negative
    # ties of |x| with opposite signs (the first wins): in one SIMD lane of the vectorized
    # scan (indices 16 apart), in two lanes with the later one in the lower lane, and apart
    x[3, 3], x[3, 19] = 90.0, -90.0
    x[4, 33], x[4, 20] = -90.0, 90.0
    x[5, 256 + 250], x[5, 256 + 1] = 90.0, -90.0
    x[6, :300] = -0.0  # signed zeros: the first block is all zero, its d is 0
    q = np.empty((7, 512), np.int8)
    s = np.empty(7, np.float32)
    asum = np.empty(7, np.int32)
    _kernels.quantize_per_token_i8(x, q, s, asum)
    want_q, want_s = quantize_per_token_i8(x)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(s, want_s)
    np.testing.assert_array_equal(asum, want_q.astype(np.int32).sum(axis=1))
    d = np.empty((7, 2), np.float32)
    bsum = np.empty((7, 2), np.int32)
    _kernels.quantize_q8_k(x, q, d, bsum)
    want_q, want_d = quantize_q8_k(x)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(bsum, want_q.reshape(7, 2, 256).astype(np.int32).sum(axis=2))


@pytest.mark.parametrize("n", range(2, 18))
def test_linear_q6_k_batch_bit_exact(variant, reference, n):
    """The batched Q6_K head path (codes unpacked once per row, reused for every token) gives
    exactly the reference's output, and each token's row equals that token decoded alone."""
    rng = np.random.default_rng(100 + n)
    m, k = 37, 768
    tensor = float_tensor(WeightFormat.Q6_K, rng.standard_normal((m, k)).astype(np.float32))
    x = rng.standard_normal((n, k)).astype(np.float32)
    cpu = make_backend(variant, 2)
    w = cpu.load_weight(tensor)
    got = cpu.download(cpu.linear_float(w, cpu.upload(x)))
    want = reference.linear_float(reference.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)
    alone = cpu.download(cpu.linear_float(w, cpu.upload(x[n - 1:n])))
    np.testing.assert_array_equal(got[n - 1:n], alone)


@pytest.mark.parametrize("k", [256, 256 * 3, 256 * 10])
@pytest.mark.parametrize("out_scale", [1.0, 0.37])
def test_linear_q6_k_batch_is_each_token_alone(variant, reference, k, out_scale):
    """Every token's Q6_K logits in a batch are bitwise the ones it gets alone (n = 1, the
    decode kernel), for batches that split into the kernels' token chunks in every way (and
    past one 64-token call), M not a multiple of their 16-row groups, and K of 1..10 blocks:
    the server compares streamed and non-streamed replies token by token."""
    rng = np.random.default_rng(k)
    m = 53
    tensor = q6_k_tensor(m, k, rng, out_scale=out_scale)
    x = rng.standard_normal((70, k)).astype(np.float32)
    x[0] = 0.0                    # an all-zero token (Q8_K scale 0)
    x[1, 5] = 1e4                 # one outlier: every other code of the token near 0
    x[2] *= 1e-30                 # tiny magnitudes
    cpu = make_backend(variant, 2)
    w = cpu.load_weight(tensor)
    alone = np.concatenate([cpu.download(cpu.linear_float(w, cpu.upload(x[t:t + 1])))
                            for t in range(len(x))])
    for n in (2, 3, 5, 8, 17, 70):
        got = cpu.download(cpu.linear_float(w, cpu.upload(x[:n])))
        np.testing.assert_array_equal(got.view(np.uint32), alone[:n].view(np.uint32),
                                      err_msg=f"n={n}")
    want = reference.linear_float(reference.load_weight(tensor), x[:17])
    np.testing.assert_array_equal(alone[:17], want)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 40), blocks=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_q6_k_groups_round_trip(m, blocks, seed):
    """The grouped Q6_K layout (kernels/bitnet_cpu.h) holds every bit of the file's blocks: any
    bytes (every 6-bit code, scale and d bit pattern), any row count (a padded last group) and
    odd or even block counts (a lone last block) come back unchanged, row by row."""
    rng = np.random.default_rng(seed)
    k = 256 * blocks
    rb = blocks * 210
    src = rng.integers(0, 256, size=(m, rb), dtype=np.uint8)
    groups = np.full((m + 15) // 16 * 16 * rb, 0xAA, np.uint8)
    _kernels.q6_k_groups(src, groups, 1)
    rows = rng.permutation(m).astype(np.int32)
    back = np.empty((m, rb), np.uint8)
    _kernels.q6_k_group_rows(groups, m, k, rows, back)
    np.testing.assert_array_equal(back, src[rows])
    padded = (m + 15) // 16 * 16  # the padding rows are zero blocks (zero codes, scales, d)
    pad = np.empty((padded - m, rb), np.uint8)
    _kernels.q6_k_group_rows(groups, padded, k, np.arange(m, padded, dtype=np.int32), pad)
    assert not pad.any()


def test_q6_k_groups_refuse_misfits():
    """Sizes that do not fit the layout and rows outside the matrix are errors, not reads
    past the buffer."""
    src = np.zeros((17, 210), np.uint8)
    with pytest.raises(ValueError):
        _kernels.q6_k_groups(src, np.zeros(17 * 210, np.uint8), 1)  # not padded to 32 rows
    groups = np.zeros(32 * 210, np.uint8)
    _kernels.q6_k_groups(src, groups, 1)
    out = np.empty((1, 210), np.uint8)
    with pytest.raises(IndexError):
        _kernels.q6_k_group_rows(groups, 17, 256, np.array([17], np.int32), out)
    with pytest.raises(ValueError):
        _kernels.q6_k_group_rows(groups, 17, 512, np.array([0], np.int32), out)
