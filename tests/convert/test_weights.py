"""Linear weight codecs of the converter: HF unpacking, scale conventions, the Q/K permutation
and each output type (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.convert.errors import ConvertError
from bitnet.convert.weights import (FloatWeight, TernaryWeight, encode_linear, llama_permute,
                                    unpack_hf, weight_scale)
from bitnet.formats import dequantize
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import WeightFormat
from tests.convert.checkpoints import pack_hf


def ternary(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1, 2, (rows, cols), dtype=np.int8)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_unpack_inverts_transformers_packing(quarter_rows, cols, seed) -> None:
    values = ternary(4 * quarter_rows, cols, seed)
    np.testing.assert_array_equal(unpack_hf("w", pack_hf(values)), values)


def test_unpack_puts_bit_planes_on_row_blocks() -> None:
    # one packed byte 0b10_01_00_10: rows 0..3 of a 4-row tensor are codes 2, 0, 1, 2
    packed = np.array([[0b10010010]], dtype=np.uint8)
    np.testing.assert_array_equal(unpack_hf("w", packed).reshape(-1), [1, -1, 0, 1])
    with pytest.raises(ConvertError, match="'w': packed code 3"):
        unpack_hf("w", np.array([[0b11]], dtype=np.uint8))


def test_scale_conventions() -> None:
    assert weight_scale("s", np.array([2.0]), multiplies=True) == 2.0  # autobitlinear
    assert weight_scale("s", np.array([2.0]), multiplies=False) == 0.5  # bitlinear
    for bad, match in ((np.array([1.0, 2.0]), "2 values"), (np.array([0.0]), "positive"),
                       (np.array([np.nan]), "positive")):
        with pytest.raises(ConvertError, match=match):
            weight_scale("s", bad, multiplies=True)


def rope_rotate_half(x: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """HF's RoPE of one head x [D]: pairs (i, i + D/2)."""
    half = len(x) // 2
    angle = pos * theta ** (-np.arange(half) * 2 / len(x))
    a, b = x[:half], x[half:]
    return np.concatenate([a * np.cos(angle) - b * np.sin(angle),
                           a * np.sin(angle) + b * np.cos(angle)])


def rope_normal(x: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """llama.cpp's NORM RoPE of one head x [D]: adjacent pairs (2i, 2i + 1)."""
    pairs = x.reshape(-1, 2)
    angle = pos * theta ** (-np.arange(len(pairs)) * 2 / len(x))
    a, b = pairs[:, 0], pairs[:, 1]
    return np.stack([a * np.cos(angle) - b * np.sin(angle),
                     a * np.sin(angle) + b * np.cos(angle)], axis=1).reshape(-1)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([64, 96, 100, 128, 256]), st.integers(1, 3), st.integers(0, 50),
       st.integers(0, 2**32 - 1))
def test_permuted_rows_under_normal_rope_are_hf_rope(head_dim, n_heads, pos, seed) -> None:
    """What the permutation is for: q = W h rotated HF's way equals, head by head, the
    permuted W's q rotated llama.cpp's NORM way, up to the same permutation of the output."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_heads * head_dim, 8))
    h = rng.standard_normal(8)
    hf = np.concatenate([rope_rotate_half(q, pos) for q in (w @ h).reshape(n_heads, -1)])
    ours = np.concatenate([rope_normal(q, pos)
                           for q in (llama_permute(w, n_heads) @ h).reshape(n_heads, -1)])
    np.testing.assert_allclose(ours, llama_permute(hf[:, None], n_heads)[:, 0], atol=1e-12)


def decoded(fmt: WeightFormat, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return dequantize(WeightTensor("w", fmt, rows, cols, data, 1.0))


@pytest.mark.parametrize("fmt", [WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0,
                                 WeightFormat.F16])
def test_a_ternary_weight_in_every_type(fmt) -> None:
    values = ternary(8, 256, 1)
    written, data = encode_linear("w", TernaryWeight(values, 0.375), fmt)
    assert written is fmt
    np.testing.assert_array_equal(decoded(fmt, data, 8, 256), values * np.float32(0.375))


def test_several_scales_go_to_tq_exactly_and_not_to_i2_s() -> None:
    values = ternary(4, 512, 2).astype(np.float32)
    w = values * np.where(np.arange(512) < 256, 0.03125, 0.0625)[None, :]  # a scale per block
    for fmt in (WeightFormat.TQ2_0, WeightFormat.TQ1_0):
        _, data = encode_linear("w", FloatWeight(w, ternary=True), fmt)
        np.testing.assert_array_equal(decoded(fmt, data, 4, 512), w)
    with pytest.raises(ConvertError, match="more than one scale .*--type tq2_0"):
        encode_linear("w", FloatWeight(w, ternary=True), WeightFormat.I2_S)
    mixed = w.copy()
    mixed[0, :128] *= 2  # two magnitudes inside one 256-block
    with pytest.raises(ConvertError, match="not ternary within each 256-value block"):
        encode_linear("w", FloatWeight(mixed, ternary=True), WeightFormat.TQ2_0)


def test_a_float_linear_stays_f16() -> None:
    w = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    written, data = encode_linear("w", FloatWeight(w, ternary=False), WeightFormat.I2_S)
    assert written is WeightFormat.F16
    np.testing.assert_array_equal(decoded(written, data, 4, 256), w.astype(np.float16))
