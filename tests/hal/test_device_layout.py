"""bitnet.hal.device_layout: the GPU plugins' shared weight splits, against the codecs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.formats import dequantize, unpack_ternary
from bitnet.hal.device_layout import (
    float_rows,
    group_values,
    has_code_3,
    split_i2s,
    split_q6_k,
    split_q8_0,
    split_tq2,
    ternary_as_i2s,
    tq1_as_tq2,
    tq2_to_i2s_order,
    weight_bytes,
)
from bitnet.formats.floats import quantize_rows
from bitnet.formats.ternary import (
    i2s_code_values,
    i2s_pack,
    i2s_unpack,
    tq1_pack,
    tq2_code_values,
    tq2_pack,
)
from bitnet.hal import WeightFormat, WeightTensor

TERNARY = [WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0]


def _values(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1, 2, (rows, cols)).astype(np.int8)


def _ternary(fmt: WeightFormat, values: np.ndarray, seed: int) -> WeightTensor:
    rows, cols = values.shape
    if fmt is WeightFormat.I2_S:
        data = i2s_pack(values, 0.0421)
    else:
        rng = np.random.default_rng(seed)
        d = rng.uniform(0.01, 2.0, (rows, cols // 256)).astype(np.float16).astype(np.float32)
        data = (tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack)(values, d)
    return WeightTensor("blk.0.ffn_up.weight", fmt, rows, cols, data)


@settings(max_examples=30, deadline=None)
@given(fmt=st.sampled_from(TERNARY), rows=st.integers(1, 6), blocks=st.integers(1, 3),
       seed=st.integers(0, 2**31))
def test_ternary_as_i2s_holds_the_codec_values_and_scales(fmt, rows, blocks, seed):
    values = _values(rows, blocks * 256, seed)
    tensor = _ternary(fmt, values, seed)
    layout = ternary_as_i2s(tensor)
    assert layout.codes.dtype == np.uint8 and layout.codes.shape == (rows, blocks * 64)
    assert layout.codes.flags.c_contiguous
    # the I2_S interleave: the codes are exactly what i2s_pack writes for these values
    assert np.array_equal(layout.codes.reshape(-1), i2s_pack(values, 1.0)[: rows * blocks * 64])
    assert np.array_equal(i2s_code_values(layout.codes), values)
    _, scales = unpack_ternary(tensor)
    if fmt is WeightFormat.I2_S:
        assert layout.block_scales is None
        assert layout.tensor_scale == pytest.approx(0.0421)
    else:
        assert layout.tensor_scale == 1.0
        assert layout.block_scales.dtype == np.float32
        assert np.array_equal(layout.block_scales, scales)


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 5), blocks=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_tq1_and_tq2_split_to_the_same_codes(rows, blocks, seed):
    values = _values(rows, blocks * 256, seed)
    qs2, d2 = split_tq2(_ternary(WeightFormat.TQ2_0, values, seed))
    qs1, d1 = tq1_as_tq2(_ternary(WeightFormat.TQ1_0, values, seed))
    assert np.array_equal(qs1, qs2) and np.array_equal(d1, d2)
    assert np.array_equal(tq2_code_values(qs2), values)
    assert np.array_equal(tq2_to_i2s_order(tq2_to_i2s_order(qs2)), qs2)  # an involution


def test_split_i2s_keeps_the_disk_codes():
    values = _values(3, 384, 5)
    tensor = _ternary(WeightFormat.I2_S, values, 5)
    codes, scale = split_i2s(tensor)
    assert codes.shape == (3, 96)
    assert np.array_equal(codes.reshape(-1), tensor.data[: 3 * 96])
    assert scale == float(i2s_unpack(tensor.data, 3, 384)[1])


@pytest.mark.parametrize("fmt", [WeightFormat.Q8_0, WeightFormat.Q6_K])
def test_int8_groups_decode_bit_exactly(fmt):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((4, 512)) * rng.uniform(0.01, 3, (4, 1))).astype(np.float32)
    tensor = WeightTensor("output.weight", fmt, 4, 512, quantize_rows(fmt, x))
    codes, scale = (split_q8_0 if fmt is WeightFormat.Q8_0 else split_q6_k)(tensor)
    group = 32 if fmt is WeightFormat.Q8_0 else 16
    assert codes.dtype == np.int8 and codes.shape == (4, 512)
    assert scale.dtype == np.float32 and scale.shape == (4, 512 // group)
    if fmt is WeightFormat.Q6_K:
        assert codes.min() >= -32 and codes.max() <= 31
    assert np.array_equal(group_values(codes, scale), dequantize(tensor))


@pytest.mark.parametrize("fmt", [WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16])
def test_float_rows_are_the_disk_bytes(fmt):
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    data = quantize_rows(fmt, x)
    rows = float_rows(WeightTensor("token_embd.weight", fmt, 3, 64, data.reshape(-1)))
    assert np.array_equal(rows, data) and rows.flags.c_contiguous


def test_code_3_is_found_and_rejected():
    assert has_code_3(np.array([0b00000011], np.uint8))
    assert has_code_3(np.array([0b00110000], np.uint8))
    assert not has_code_3(np.array([0b10011001, 0b01100110, 0], np.uint8))
    tensor = _ternary(WeightFormat.I2_S, _values(2, 128, 3), 3)
    data = tensor.data.copy()
    data[5] |= 0b11000000
    with pytest.raises(ValueError, match="blk.0.ffn_up.weight: invalid I2_S code 3"):
        ternary_as_i2s(WeightTensor(tensor.name, tensor.format, 2, 128, data))
    tensor = _ternary(WeightFormat.TQ2_0, _values(1, 256, 3), 3)
    data = tensor.data.copy()
    data[0, 7] = 0b00001100
    with pytest.raises(ValueError, match="invalid TQ2_0 code 3"):
        split_tq2(WeightTensor(tensor.name, tensor.format, 1, 256, data))
    with pytest.raises(ValueError, match="i2s_code_values: invalid I2_S code 3"):
        i2s_code_values(np.full((1, 32), 0b11, np.uint8))


def test_bad_inputs_name_the_tensor_and_the_cause():
    with pytest.raises(ValueError, match="blk.1.attn_q.weight: 2x256 tq2_0 needs 132 bytes"):
        weight_bytes(WeightTensor("blk.1.attn_q.weight", WeightFormat.TQ2_0, 2, 256,
                                  np.zeros(100, np.uint8)))
    with pytest.raises(ValueError, match="w: .*multiple of 128"):
        ternary_as_i2s(WeightTensor("w", WeightFormat.I2_S, 1, 64, np.zeros(48, np.uint8)))
    with pytest.raises(ValueError, match="must be uint8"):
        float_rows(WeightTensor("w", WeightFormat.F32, 1, 4, np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="f16 is not a ternary format"):
        ternary_as_i2s(WeightTensor("w", WeightFormat.F16, 1, 256, np.zeros(512, np.uint8)))
    with pytest.raises(ValueError, match="expected q8_0, got q6_k"):
        split_q8_0(WeightTensor("w", WeightFormat.Q6_K, 1, 256, np.zeros(210, np.uint8)))
    with pytest.raises(ValueError, match="tq2_code_values: qs must be uint8"):
        tq2_code_values(np.zeros(64, np.uint8))
