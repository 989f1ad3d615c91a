"""Activation quantizers of the two home engines, bit for bit.

- ``quantize_per_token_i8``: bitnet.cpp's ``quantize_row_i8_s`` (docs/formats.md 2.5), used with
  I2_S.
- ``quantize_q8_k``: ggml's ``quantize_row_q8_K_ref`` (docs/formats.md 1.5), used with TQ1_0 /
  TQ2_0.

Both round half to even: ggml's ``nearest_int`` (the 1.5 * 2**23 trick) equals ``np.rint`` on
float32 for every value these quantizers can produce (|v| <= 128).
"""

from __future__ import annotations

import numpy as np

QK_K = 256  # Q8_K block


def _check_2d(x: np.ndarray, who: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{who}: x must be 2-D [n_tokens, K], got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def quantize_per_token_i8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token absmax int8: x f32 [n, K] -> (int8 q [n, K], f32 s [n]).

    ``m = max(1e-5, max|x|)`` (float64), ``s = float32(127 / m)`` (the RECIPROCAL of the usual
    scale), ``q = clip(rint(float32(x * s)), -128, 127)``. Dequantize with ``q / s``.
    """
    x = _check_2d(x, "quantize_per_token_i8")
    m = np.maximum(np.abs(x).max(axis=1, initial=0.0).astype(np.float64), 1e-5)
    s = (127.0 / m).astype(np.float32)  # [n]
    scaled = x * s[:, None]  # f32 * f32 -> f32, as the C code computes it
    q = np.clip(np.rint(scaled), -128, 127).astype(np.int8)
    return q, s


def quantize_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml Q8_K: x f32 [n, K] -> (int8 q [n, K], f32 d [n, K//256]); K a multiple of 256.

    Per 256-block: ``amax`` = the signed element of largest |x| (first one on ties),
    ``iscale = -127 / amax`` (f32), ``q = min(127, rint(iscale * x))``, ``d = 1 / iscale`` (so d
    may be negative). An all-zero block gets d = 0 and q = 0. Dequantize with ``q * d``.
    """
    x = _check_2d(x, "quantize_q8_k")
    n, k = x.shape
    if k % QK_K:
        raise ValueError(f"quantize_q8_k: K must be a multiple of {QK_K}, got {k}")
    blocks = x.reshape(n, k // QK_K, QK_K)
    first_max = np.abs(blocks).argmax(axis=2)  # argmax returns the first of equal maxima
    amax = np.take_along_axis(blocks, first_max[..., None], axis=2)[..., 0]  # [n, blocks], signed
    zero = amax == 0
    safe = np.where(zero, np.float32(1), amax).astype(np.float32)
    iscale = np.float32(-127.0) / safe  # f32 division, as ggml
    q = np.minimum(np.rint(blocks * iscale[..., None]), 127)
    q = np.where(zero[..., None], 0, q).astype(np.int8).reshape(n, k)
    d = np.where(zero, np.float32(0), np.float32(1.0) / iscale).astype(np.float32)
    return q, d
