"""bitnet.formats.ternary: I2_S / TQ2_0 / TQ1_0 codecs and the two ternarizers.

gguf.quants (gguf-py 0.19) implements ggml's TQ1_0 / TQ2_0 byte for byte, so it is the oracle for
those; I2_S has no third-party codec here, so its layout is checked bit by bit by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants as gq
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet.formats.ternary import (
    i2s_pack,
    i2s_unpack,
    ternarize_absmean,
    tq1_pack,
    tq1_unpack,
    tq2_pack,
    tq2_unpack,
    tq_quantize,
)

FAST = settings(max_examples=40, deadline=None)


@st.composite
def ternary_matrices(draw, block: int, max_rows: int = 4, max_blocks: int = 3):
    rows = draw(st.integers(1, max_rows))
    cols = block * draw(st.integers(1, max_blocks))
    return draw(hnp.arrays(np.int8, (rows, cols), elements=st.integers(-1, 1)))


def f16_scales(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Positive block scales that survive the f16 round trip exactly."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 2.0, shape).astype(np.float16).astype(np.float32)


# -- I2_S ---------------------------------------------------------------------------------------


def test_i2s_layout_by_hand():
    # one 128-group: element e sits in byte e % 32 at shift 6 - 2 * (e // 32)
    values = np.zeros((1, 128), np.int8)  # code 1 everywhere: every byte 0b01010101 = 0x55
    values[0, 0] = 1  # code 2 in bits 7:6 of byte 0
    values[0, 32] = -1  # code 0 in bits 5:4 of byte 0
    values[0, 127] = 1  # code 2 in bits 1:0 of byte 31
    data = i2s_pack(values, 0.75)
    assert data.shape == (128 // 4 + 32,)
    assert data[0] == 0b10_00_01_01
    assert data[31] == 0b01_01_01_10
    assert np.all(data[1:31] == 0x55)
    assert data[32:36].view("<f4")[0] == np.float32(0.75)
    assert np.all(data[36:] == 0)


def test_i2s_groups_run_over_the_flattened_tensor():
    # two rows of 128: row 1 starts at byte 32 (K % 128 == 0)
    values = np.zeros((2, 128), np.int8)
    values[1, 0] = 1
    data = i2s_pack(values, 1.0)
    assert data[32] == 0b10_01_01_01
    assert data[0] == 0x55


@FAST
@given(ternary_matrices(block=128), st.floats(0.0001220703125, 10.0, width=32))
def test_i2s_round_trip(values, scale):
    rows, cols = values.shape
    data = i2s_pack(values, scale)
    assert data.shape == (rows * cols // 4 + 32,)
    back, back_scale = i2s_unpack(data, rows, cols)
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, values)
    assert back_scale == np.float32(scale)


def test_i2s_rejects_code_3():
    data = i2s_pack(np.zeros((1, 128), np.int8), 1.0)
    data[5] = 0b01_11_01_01  # element 32 + 5 gets code 3
    with pytest.raises(ValueError, match="code 3"):
        i2s_unpack(data, 1, 128)


def test_i2s_rejects_bad_shapes_and_values():
    with pytest.raises(ValueError, match="multiple of 128"):
        i2s_pack(np.zeros((2, 96), np.int8), 1.0)
    with pytest.raises(ValueError, match="-1, 0, 1"):
        i2s_pack(np.full((1, 128), 2, np.int8), 1.0)
    with pytest.raises(ValueError, match="needs 64 bytes"):
        i2s_unpack(np.zeros(70, np.uint8), 1, 128)


def test_i2s_is_tq2_with_reversed_fields():
    # docs/formats.md 2.3: same grouping and codes; the four 2-bit fields of a byte are reversed
    rng = np.random.default_rng(1)
    values = rng.integers(-1, 2, (3, 512)).astype(np.int8)
    i2s = i2s_pack(values, 0.5)[: 3 * 512 // 4].reshape(3, 2, 64)
    tq2 = tq2_pack(values, np.full((3, 2), 0.5, np.float32)).reshape(3, 2, 66)[:, :, :64]
    fields = [(tq2 >> s) & 3 for s in (0, 2, 4, 6)]
    reversed_bytes = (fields[0] << 6) | (fields[1] << 4) | (fields[2] << 2) | fields[3]
    np.testing.assert_array_equal(i2s, reversed_bytes)


# -- TQ2_0 / TQ1_0 against gguf.quants ---------------------------------------------------------


@FAST
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([256, 512])),
               elements=st.floats(-4, 4, width=32, allow_subnormal=False)),
)
def test_tq_quantize_and_pack_match_gguf_on_any_floats(w):
    values, d = tq_quantize(w)
    np.testing.assert_array_equal(tq2_pack(values, d), gq.quantize(w, T.TQ2_0))
    np.testing.assert_array_equal(tq1_pack(values, d), gq.quantize(w, T.TQ1_0))


def test_tq_quantize_rounds_half_away_from_zero():
    w = np.zeros((1, 256), np.float32)
    w[0, :4] = [2.0, 1.0, -1.0, 0.9999]  # /amax -> 0.5 -> 1, -0.5 -> -1, 0.49995 -> 0
    values, d = tq_quantize(w)
    assert values[0, :4].tolist() == [1, 1, -1, 0]
    assert d[0, 0] == 2.0
    zero_values, zero_d = tq_quantize(np.zeros((1, 256), np.float32))
    assert not zero_values.any() and zero_d[0, 0] == 0


@FAST
@given(ternary_matrices(block=256), st.integers(0, 2**16))
def test_tq2_round_trip_and_gguf_dequantize(values, seed):
    rows, cols = values.shape
    d = f16_scales((rows, cols // 256), seed)
    data = tq2_pack(values, d)
    assert data.shape == (rows, cols // 256 * 66)
    back, back_d = tq2_unpack(data, rows, cols)
    np.testing.assert_array_equal(back, values)
    np.testing.assert_array_equal(back_d, d)
    expected = values.astype(np.float32) * np.repeat(d, 256, axis=1)
    np.testing.assert_array_equal(gq.dequantize(data, T.TQ2_0), expected)


@FAST
@given(ternary_matrices(block=256), st.integers(0, 2**16))
def test_tq1_round_trip_and_gguf_dequantize(values, seed):
    rows, cols = values.shape
    d = f16_scales((rows, cols // 256), seed)
    data = tq1_pack(values, d)
    assert data.shape == (rows, cols // 256 * 54)
    back, back_d = tq1_unpack(data, rows, cols)
    np.testing.assert_array_equal(back, values)
    np.testing.assert_array_equal(back_d, d)
    expected = values.astype(np.float32) * np.repeat(d, 256, axis=1)
    np.testing.assert_array_equal(gq.dequantize(data, T.TQ1_0), expected)


def test_tq1_byte_by_hand():
    # elements 0, 32, 64, 96, 128 share qs[0]; trits (first most significant) 2,1,0,1,2
    values = np.zeros((1, 256), np.int8)
    values[0, [0, 32, 64, 96, 128]] = [1, 0, -1, 0, 1]
    data = tq1_pack(values, np.ones((1, 1), np.float32))
    q = 2 * 81 + 1 * 27 + 0 * 9 + 1 * 3 + 2
    assert data[0, 0] == (q * 256 + 242) // 243
    assert data[0, 52:54].view("<f2")[0] == 1.0


def test_tq2_byte_by_hand_and_code_3():
    values = np.zeros((1, 256), np.int8)
    values[0, [0, 32, 64, 96]] = [1, -1, 0, 1]  # byte 0, groups in the LOW bits first
    data = tq2_pack(values, np.ones((1, 1), np.float32))
    assert data[0, 0] == 2 | (0 << 2) | (1 << 4) | (2 << 6)
    data[0, 40] = 0xFF
    with pytest.raises(ValueError, match="code 3"):
        tq2_unpack(data, 1, 256)


def test_tq_codecs_validate_inputs():
    with pytest.raises(ValueError, match="multiple of 256"):
        tq2_pack(np.zeros((1, 128), np.int8), np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="shape"):
        tq1_pack(np.zeros((2, 256), np.int8), np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="needs 54 bytes"):
        tq1_unpack(np.zeros((1, 66), np.uint8), 1, 256)


# -- absmean ternarizer -------------------------------------------------------------------------


def test_ternarize_absmean_by_hand():
    w = np.array([[0.1, -0.3, 0.0, 0.6]], np.float32)  # mean|w| = 0.25
    values, scale = ternarize_absmean(w)
    assert scale == pytest.approx(0.25)
    assert values.tolist() == [[0, -1, 0, 1]]  # 0.4 -> 0, -1.2 -> -1, 2.4 -> clip 1
    zeros, floor = ternarize_absmean(np.zeros((2, 4), np.float32))
    assert floor == np.float32(1e-5) and not zeros.any()


def test_ternarize_absmean_is_exact_on_ternary_times_scale():
    rng = np.random.default_rng(3)
    values = rng.integers(-1, 2, (8, 256)).astype(np.int8)
    values[0, 0] = 1
    s = np.float32(0.0371)
    got, scale = ternarize_absmean(values.astype(np.float32) * s)
    np.testing.assert_array_equal(got, values)
    # the absmean of already-ternary weights counts the zeros too
    assert scale == pytest.approx(float(np.abs(values).mean() * s), rel=1e-6)
    # tq_quantize on the same weights gives the same codes with d = s per block
    tq_values, d = tq_quantize(values.astype(np.float32) * s)
    np.testing.assert_array_equal(tq_values, values)
    assert np.all(d == np.float16(s))
