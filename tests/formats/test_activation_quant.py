"""bitnet.formats.activations: bitnet.cpp's per-token int8 and ggml's Q8_K, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet.formats.activations import quantize_per_token_i8, quantize_q8_k

FAST = settings(max_examples=40, deadline=None)


# -- per-token int8 (I2_S) ----------------------------------------------------------------------


def test_per_token_by_hand_with_ties():
    # max|x| = 127 gives s = 1, so x * s lands exactly on .5 ties: round half to EVEN
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -126.5, 3.0]], np.float32)
    q, s = quantize_per_token_i8(x)
    assert s.dtype == np.float32 and s.tolist() == [1.0]
    assert q.dtype == np.int8
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, -126, 3]]


def test_per_token_negative_max_and_rows_are_independent():
    x = np.array([[-2.0, 1.0, 0.5, 0.0], [0.25, 0.0, 0.0, -0.125]], np.float32)
    q, s = quantize_per_token_i8(x)
    assert s.tolist() == [np.float32(63.5), np.float32(508.0)]
    # row 0: -2 * 63.5 = -127, 63.5 -> 64 (even), 31.75 -> 32; row 1: 127, -63.5 -> -64
    assert q.tolist() == [[-127, 64, 32, 0], [127, 0, 0, -64]]


def test_per_token_floor_on_tiny_and_zero_rows():
    x = np.array([[0.0, 0.0], [1e-6, -2e-6]], np.float32)
    q, s = quantize_per_token_i8(x)
    assert s[0] == s[1] == np.float32(127 / 1e-5)  # max|x| below 1e-5 uses 1e-5
    assert q[0].tolist() == [0, 0]
    assert q[1].tolist() == [13, -25]  # 12.7 -> 13, -25.4 -> -25


@FAST
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 300)),
                  elements=st.floats(-1e3, 1e3, width=32)))
def test_per_token_error_is_half_a_step(x):
    q, s = quantize_per_token_i8(x)
    assert np.abs(q.astype(np.int32)).max() <= 127
    err = np.abs(q / s[:, None].astype(np.float64) - x)
    assert np.all(err <= 0.5 / s[:, None] * (1 + 1e-6) + 1e-12)


def test_per_token_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        quantize_per_token_i8(np.zeros(8, np.float32))


# -- Q8_K (TQ1_0 / TQ2_0) -----------------------------------------------------------------------


def test_q8_k_negative_max_by_hand():
    x = np.zeros((1, 256), np.float32)
    x[0, :4] = [-2.0, 1.0, 0.5, -0.25]
    q, d = quantize_q8_k(x)
    # amax = -2 (signed): iscale = -127 / -2 = 63.5, d = 1 / 63.5
    assert d.tolist() == [[np.float32(1) / np.float32(63.5)]]
    assert q[0, :4].tolist() == [-127, 64, 32, -16]  # 63.5 -> 64 (half to even), 31.75 -> 32


def test_q8_k_first_of_tied_maxima_sets_the_sign():
    x = np.zeros((2, 256), np.float32)
    x[0, :2] = [1.0, -1.0]  # first max is +1: iscale = -127, d = -1/127
    x[1, :2] = [-1.0, 1.0]  # first max is -1: iscale = +127, d = +1/127
    q, d = quantize_q8_k(x)
    assert d[0, 0] == np.float32(1) / np.float32(-127) and d[1, 0] == -d[0, 0]
    assert q[0, :2].tolist() == [-127, 127]
    assert q[1, :2].tolist() == [-127, 127]
    np.testing.assert_array_equal(q[:, :2] * d, x[:, :2])


def test_q8_k_zero_block_next_to_a_live_one():
    x = np.zeros((1, 512), np.float32)
    x[0, 300] = 3.0
    q, d = quantize_q8_k(x)
    assert d[0, 0] == 0 and not q[0, :256].any()
    assert d[0, 1] == np.float32(1) / (np.float32(-127) / np.float32(3))
    assert q[0, 300] == -127


@FAST
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([256, 512])),
                  elements=st.floats(-50, 50, width=32, allow_subnormal=False)))
def test_q8_k_error_is_half_a_step(x):
    # ggml's -127 / amax overflows for amax < 4e-37; no activation is that small
    x = np.where(np.abs(x) < 1e-30, np.float32(0), x)
    q, d = quantize_q8_k(x)
    assert q.max(initial=0) <= 127 and q.min(initial=0) >= -127
    step = np.abs(np.repeat(d, 256, axis=1)).astype(np.float64)
    err = np.abs(q * np.repeat(d, 256, axis=1).astype(np.float64) - x)
    assert np.all(err <= 0.5 * step * (1 + 1e-5) + 1e-30)


def test_q8_k_rejects_partial_blocks():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_q8_k(np.zeros((1, 200), np.float32))
