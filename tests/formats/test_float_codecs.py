"""bitnet.formats.floats and q6_k: F32/F16/BF16/Q8_0/Q6_K rows.

The oracle for the ggml block formats is a scalar, line-by-line Python transcription of ggml's
reference C code (ggml-quants.c: quantize_row_q8_0_ref, dequantize_row_q8_0, make_qx_quants,
quantize_row_q6_K_ref, dequantize_row_q6_K) with float32 scalars. It checks both gguf.quants
(which bitnet.formats uses for Q8_0 / BF16 / Q6_K decoding) and our own Q6_K quantizer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet.formats.floats import dequantize_rows, quantize_rows
from bitnet.hal.weight_formats import WeightFormat as F

FAST = settings(max_examples=30, deadline=None)
f32 = np.float32


# -- scalar transcriptions of ggml's reference code ---------------------------------------------


def nearest_int(v: np.float32) -> int:
    return int(np.rint(f32(v)))  # ggml's 1.5 * 2**23 trick is round-half-even on float32


def roundf(v: np.float32) -> int:
    return int(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))


def f16_bits(v: np.float32) -> bytes:
    return np.array([v], "<f2").tobytes()


def ggml_quantize_q8_0(x: np.ndarray) -> bytes:
    out = b""
    for block in x.reshape(-1, 32):
        amax = f32(0)
        for v in block:
            amax = max(amax, abs(f32(v)))
        d = f32(amax / f32(127))
        inv = f32(1) / d if d else f32(0)
        out += f16_bits(d)
        out += bytes(roundf(f32(v) * inv) & 0xFF for v in block)
    return out


def ggml_dequantize_q8_0(data: bytes) -> list[np.float32]:
    out = []
    for b in range(0, len(data), 34):
        d = f32(np.frombuffer(data[b : b + 2], "<f2")[0])
        out += [f32(int(q) * d) for q in np.frombuffer(data[b + 2 : b + 34], np.int8)]
    return out


def ggml_make_qx_quants(x: np.ndarray, levels: list[int]) -> np.float32:
    """make_qx_quants(16, nmax=32, x, L, rmse_type=1, qw=NULL)."""
    nmax = 32
    amax = f32(0)
    vmax = f32(0)
    for v in x:
        if abs(v) > amax:
            amax = abs(v)
            vmax = v
    if amax < f32(1e-15):
        levels[:] = [0] * 16
        return f32(0)
    iscale = f32(-nmax) / vmax
    sumlx = f32(0)
    suml2 = f32(0)
    for i, v in enumerate(x):
        q = max(-nmax, min(nmax - 1, nearest_int(iscale * v)))
        levels[i] = q + nmax
        w = v * v
        sumlx = f32(sumlx + w * v * f32(q))
        suml2 = f32(suml2 + w * f32(q) * f32(q))
    scale = sumlx / suml2 if suml2 else f32(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(f32(nmax) + f32(0.1) * f32(step)) / vmax
        sumlx = f32(0)
        suml2 = f32(0)
        for v in x:
            q = max(-nmax, min(nmax - 1, nearest_int(iscale * v)))
            w = v * v
            sumlx = f32(sumlx + w * v * f32(q))
            suml2 = f32(suml2 + w * f32(q) * f32(q))
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i, v in enumerate(x):
                levels[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * v)))
            scale = sumlx / suml2
            best = scale * sumlx
    return f32(scale)


def ggml_quantize_q6_k(x: np.ndarray) -> bytes:
    out = b""
    for block in x.reshape(-1, 256).astype(np.float32):
        levels = [0] * 256
        scales = []
        max_scale = f32(0)
        max_abs_scale = f32(0)
        for ib in range(16):
            sub_levels = [0] * 16
            scale = ggml_make_qx_quants(block[16 * ib : 16 * ib + 16], sub_levels)
            levels[16 * ib : 16 * ib + 16] = sub_levels
            scales.append(scale)
            if abs(scale) > max_abs_scale:
                max_abs_scale = abs(scale)
                max_scale = scale
        if max_abs_scale < f32(1e-15):
            out += bytes(210)
            continue
        iscale = f32(-128) / max_scale
        d16 = np.float16(f32(1) / iscale)
        sc = [min(127, nearest_int(iscale * s)) for s in scales]
        for j in range(16):
            d = f32(d16) * f32(sc[j])
            if not d:
                continue
            for ii in range(16):
                q = nearest_int(block[16 * j + ii] / d)
                levels[16 * j + ii] = max(-32, min(31, q)) + 32
        ql = [0] * 128
        qh = [0] * 64
        for half in range(2):
            j = 128 * half
            for lane in range(32):
                q = [levels[j + lane + 32 * g] for g in range(4)]
                ql[64 * half + lane] = (q[0] & 0xF) | ((q[2] & 0xF) << 4)
                ql[64 * half + lane + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4)
                qh[32 * half + lane] = (
                    (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6)
                )
        out += bytes(ql) + bytes(qh) + bytes(s & 0xFF for s in sc) + d16.tobytes()
    return out


def ggml_dequantize_q6_k(data: bytes) -> list[np.float32]:
    out = []
    for b in range(0, len(data), 210):
        blk = data[b : b + 210]
        ql = blk[:128]
        qh = blk[128:192]
        sc = np.frombuffer(blk[192:208], np.int8)
        d = f32(np.frombuffer(blk[208:210], "<f2")[0])
        y = [f32(0)] * 256
        for half in range(2):
            for lane in range(32):
                i = lane // 16 + 8 * half
                h = qh[32 * half + lane]
                lo = ql[64 * half + lane]
                hi = ql[64 * half + lane + 32]
                q1 = ((lo & 0xF) | (((h >> 0) & 3) << 4)) - 32
                q2 = ((hi & 0xF) | (((h >> 2) & 3) << 4)) - 32
                q3 = ((lo >> 4) | (((h >> 4) & 3) << 4)) - 32
                q4 = ((hi >> 4) | (((h >> 6) & 3) << 4)) - 32
                base = 128 * half + lane
                y[base] = d * f32(sc[i]) * f32(q1)
                y[base + 32] = d * f32(sc[i + 2]) * f32(q2)
                y[base + 64] = d * f32(sc[i + 4]) * f32(q3)
                y[base + 96] = d * f32(sc[i + 6]) * f32(q4)
        out += y
    return out


def awkward_blocks(seed: int) -> np.ndarray:
    """Three 256-blocks: gaussian, one with zero and near-zero sub-blocks, and all zeros."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    x[1, :16] = 0  # an all-zero sub-block
    x[1, 16:32] *= 1e-4  # a sub-block whose int8 scale rounds to 0
    x[1, 40] = 0.5 * np.abs(x[1]).max()  # exact ties for the requantization
    x[2] = 0
    return x.reshape(1, 768)


# -- Q8_0 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_q8_0_matches_ggml_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    x[0, :32] = 0  # zero block: d = 0
    x[1, 32:40] = [127, 63.5, -63.5, 0.5, -0.5, 1.5, 2.5, -127]  # ties: roundf goes away from 0
    data = quantize_rows(F.Q8_0, x)
    assert data.shape == (2, 68)
    assert data.tobytes() == ggml_quantize_q8_0(x)
    decoded = dequantize_rows(F.Q8_0, data, 2, 64)
    assert decoded.reshape(-1).tolist() == ggml_dequantize_q8_0(data.tobytes())


@FAST
@given(hnp.arrays(np.float32, (2, 64), elements=st.floats(-100, 100, width=32)))
def test_q8_0_round_trip_error_is_half_a_step(x):
    decoded = dequantize_rows(F.Q8_0, quantize_rows(F.Q8_0, x), 2, 64)
    step = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    # half a quantization step, plus the f16 rounding of d: relative 2**-11, or absolute 2**-25
    # where d falls below f16's normal range, times up to 127 steps
    bound = step * (0.5 + 127 * 2.0**-11) + 127 * 2.0**-25
    assert np.all(np.abs(decoded.reshape(-1, 32) - x.reshape(-1, 32)) <= bound)


# -- Q6_K ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
def test_q6_k_quantize_matches_ggml_reference(seed):
    x = awkward_blocks(seed)
    data = quantize_rows(F.Q6_K, x)
    assert data.shape == (1, 3 * 210)
    assert data.tobytes() == ggml_quantize_q6_k(x)


@pytest.mark.parametrize("seed", [0, 7])
def test_q6_k_dequantize_matches_ggml_reference(seed):
    data = quantize_rows(F.Q6_K, awkward_blocks(seed))
    decoded = dequantize_rows(F.Q6_K, data, 1, 768)
    assert decoded.reshape(-1).tolist() == ggml_dequantize_q6_k(data.tobytes())


@FAST
@given(hnp.arrays(np.float32, (2, 256), elements=st.floats(-8, 8, width=32)))
def test_q6_k_round_trip_error_is_bounded(x):
    decoded = dequantize_rows(F.Q6_K, quantize_rows(F.Q6_K, x), 2, 256)
    # 64 levels per sub-block and an 8-bit sub-block scale: the error stays below amax / 16,
    # plus f16 underflow of d for tiny blocks (2**-25 times at most 128 * 32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    assert np.all(np.abs(decoded - x) <= amax / 16 + 4096 * 2.0**-25)


# -- F32 / F16 / BF16 ---------------------------------------------------------------------------


@FAST
@given(hnp.arrays(np.float32, (3, 5),
                  elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False)))
def test_plain_float_round_trips(x):
    np.testing.assert_array_equal(dequantize_rows(F.F32, quantize_rows(F.F32, x), 3, 5), x)
    as_f16 = x.astype(np.float16).astype(np.float32)
    f16_bytes = quantize_rows(F.F16, x)
    assert f16_bytes.shape == (3, 10)
    np.testing.assert_array_equal(dequantize_rows(F.F16, f16_bytes, 3, 5), as_f16)
    bf16 = dequantize_rows(F.BF16, quantize_rows(F.BF16, x), 3, 5)
    # bf16 keeps 8 significant bits: relative error at most 2**-9 (round to nearest)
    assert np.all(np.abs(bf16 - x) <= np.abs(x) * 2.0**-8)
    np.testing.assert_array_equal(dequantize_rows(F.BF16, quantize_rows(F.BF16, bf16), 3, 5), bf16)


def test_bf16_by_hand():
    x = np.array([[1.0, -2.0, 1.00390625, 1.01171875]], np.float32)  # 1 + 2**-8, 1 + 3 * 2**-8
    data = quantize_rows(F.BF16, x)
    # bf16 is the high half of the f32 bits, rounded to nearest even
    assert data.view("<u2").tolist() == [[0x3F80, 0xC000, 0x3F80, 0x3F82]]


def test_float_codecs_validate_inputs():
    with pytest.raises(ValueError, match="not a float format"):
        dequantize_rows(F.TQ2_0, np.zeros((1, 66), np.uint8), 1, 256)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_rows(F.Q8_0, np.zeros((1, 48), np.float32))
    with pytest.raises(ValueError, match="needs 420 bytes"):
        dequantize_rows(F.Q6_K, np.zeros((1, 210), np.uint8), 2, 256)
