"""Weight repacking into the device layouts, against bitnet.formats (no GPU needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.formats import dequantize, unpack_ternary
from bitnet.formats.floats import quantize_rows
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack
from bitnet.hal import WeightFormat, WeightTensor
from bitnet_cuda.layout import decode_layout, repack, ternary_values

import kernel_model as km


def _ternary_tensor(fmt: WeightFormat, rows: int, cols: int, seed: int) -> WeightTensor:
    rng = np.random.default_rng(seed)
    values = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    if fmt is WeightFormat.I2_S:
        data = i2s_pack(values, 0.0421)
    else:
        d = rng.uniform(0.01, 2.0, (rows, cols // 256)).astype(np.float16).astype(np.float32)
        data = (tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack)(values, d)
    return WeightTensor("blk.0.test.weight", fmt, rows, cols, data)


@settings(max_examples=25, deadline=None)
@given(fmt=st.sampled_from([WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0]),
       rows=st.integers(1, 9), blocks=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_ternary_layouts_hold_the_reference_values(fmt, rows, blocks, seed):
    cols = blocks * (128 if fmt is WeightFormat.I2_S else 256)
    tensor = _ternary_tensor(fmt, rows, cols, seed)
    layout = repack(tensor)
    values, _ = unpack_ternary(tensor)
    assert np.array_equal(ternary_values(layout), values)
    # the kernels' 16-byte vector walk reaches every element with the same code
    by_vectors = km.codes_by_vectors(layout.arrays["codes"], cols, layout.kind)
    assert np.array_equal(by_vectors.astype(np.int8) - 1, values)
    assert np.array_equal(decode_layout(layout), dequantize(tensor))


@pytest.mark.parametrize("fmt", [WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16,
                                 WeightFormat.Q8_0, WeightFormat.Q6_K])
def test_float_layouts_decode_bit_exactly(fmt):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((5, 512)) * rng.uniform(0.01, 3, (5, 1))).astype(np.float32)
    tensor = WeightTensor("token_embd.weight", fmt, 5, 512, quantize_rows(fmt, x))
    layout = repack(tensor)
    assert np.array_equal(decode_layout(layout), dequantize(tensor))
    for array in layout.arrays.values():
        assert array.flags.c_contiguous


def test_layout_sizes_and_alignment():
    layout = repack(_ternary_tensor(WeightFormat.TQ2_0, 3, 512, 1))
    assert layout.arrays["codes"].shape == (3, 128) and layout.arrays["d"].shape == (3, 2)
    layout = repack(_ternary_tensor(WeightFormat.I2_S, 3, 256, 1))
    assert layout.arrays["codes"].shape == (3, 64) and layout.w_scale == pytest.approx(0.0421)
    q6 = repack(WeightTensor("w", WeightFormat.Q6_K, 2, 256,
                             quantize_rows(WeightFormat.Q6_K, np.ones((2, 256), np.float32))))
    assert q6.kind == "q6k" and q6.arrays["codes"].shape == (2, 256)
    assert q6.arrays["sub"].shape == (2, 16) and q6.arrays["d"].shape == (2, 1)
    assert q6.arrays["codes"].dtype == np.int8 and q6.arrays["sub"].dtype == np.int8


def test_code_3_is_rejected():
    tensor = _ternary_tensor(WeightFormat.I2_S, 2, 128, 3)
    data = tensor.data.copy()
    data[5] |= 0b11000000
    with pytest.raises(ValueError, match="code 3"):
        repack(WeightTensor(tensor.name, tensor.format, 2, 128, data))


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="blk.0.test.weight"):
        repack(WeightTensor("blk.0.test.weight", WeightFormat.TQ2_0, 2, 256,
                            np.zeros(100, np.uint8)))
    with pytest.raises(ValueError, match="multiple of 128"):
        repack(WeightTensor("w", WeightFormat.I2_S, 1, 64, np.zeros(48, np.uint8)))
