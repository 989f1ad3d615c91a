"""linear_ternary against the numpy reference: bit-exact for every format and kernel table.

The integer dot is exact and the epilogue runs in the contract's order, so the outputs must be
identical, not merely close. Shapes cover the smallest legal K, K with a lone trailing 128-group
(I2_S), token counts across the tile sizes (1..8 tokens per tile) and uneven thread splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.hal.weight_formats import WeightFormat

from conftest import make_backend, ternary_tensor

FORMATS = [WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0]


def activations(kind: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "zeros":
        return np.zeros((n, k), np.float32)
    if kind == "extreme":
        x = rng.choice(np.array([-3e38, 3e38, 1e-30, -1e-30, 0.0], np.float32), size=(n, k))
        return x.astype(np.float32)
    if kind == "saturating":  # all +max: every q = 127 or -128, the largest integer sums
        return np.full((n, k), -1.0 if rng.random() < 0.5 else 1.0, np.float32)
    return (rng.standard_normal((n, k)) * rng.uniform(0.01, 10)).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(fmt=st.sampled_from(FORMATS), m=st.integers(1, 37), blocks=st.integers(1, 5),
       half=st.booleans(), n=st.integers(1, 19), threads=st.integers(1, 3),
       kind=st.sampled_from(["normal", "zeros", "extreme", "saturating"]),
       seed=st.integers(0, 2**31))
def test_linear_ternary_matches_reference(variant, reference, fmt, m, blocks, half, n, threads,
                                          kind, seed):
    rng = np.random.default_rng(seed)
    k = blocks * 256 + (128 if half and fmt is WeightFormat.I2_S else 0)
    if kind == "saturating":
        values = np.ones((m, k), np.int8)  # all codes 2: the largest unsigned code sums
    else:
        values = rng.integers(-1, 2, size=(m, k)).astype(np.int8)
    tensor = ternary_tensor(fmt, values, rng, out_scale=1.0 if seed % 3 else 0.5)
    x = activations(kind, n, k, rng)
    cpu = make_backend(variant, threads)
    got = cpu.download(cpu.linear_ternary(cpu.load_weight(tensor), cpu.upload(x)))
    want = reference.linear_ternary(reference.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.value)
def test_linear_ternary_2b_shape_tile_tails(variant, reference, fmt):
    """A 2B-4T width (K = 2560) with n across the GEMM tile sizes, rows not a multiple of 16."""
    rng = np.random.default_rng(7)
    values = rng.integers(-1, 2, size=(83, 2560)).astype(np.int8)
    tensor = ternary_tensor(fmt, values, rng)
    cpu = make_backend(variant, 2)
    w = cpu.load_weight(tensor)
    rw = reference.load_weight(tensor)
    for n in (1, 7, 17):
        x = rng.standard_normal((n, 2560)).astype(np.float32)
        got = cpu.download(cpu.linear_ternary(w, cpu.upload(x)))
        np.testing.assert_array_equal(got, reference.linear_ternary(rw, x))


def test_i2_s_code3_is_rejected(variant):
    from bitnet.hal.backend import WeightTensor

    data = np.zeros(128 // 4 + 32, np.uint8)
    data[5] = 0b00110000  # one 2-bit field = 3
    tensor = WeightTensor("blk.0.attn_q.weight", WeightFormat.I2_S, 1, 128, data)
    with pytest.raises(ValueError, match="code 3"):
        make_backend(variant).load_weight(tensor)


def test_i2_s_rejects_k_not_multiple_of_128(variant):
    from bitnet.hal.backend import WeightTensor

    tensor = WeightTensor("w", WeightFormat.I2_S, 1, 192, np.zeros(192 // 4 + 32, np.uint8))
    with pytest.raises(ValueError, match="K % 128"):
        make_backend(variant).load_weight(tensor)
