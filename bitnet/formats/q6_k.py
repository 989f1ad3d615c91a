"""Q6_K quantizer: a vectorized transcription of ggml's ``quantize_row_q6_K_ref``.

A Q6_K block holds 256 values in 210 bytes (ggml ``block_q6_K``):
``ql[128]`` (low 4 bits), ``qh[64]`` (high 2 bits), ``scales[16]`` (int8, one per 16 values),
``d`` (f16 super-block scale); value = ``d * scales[j] * (q - 32)`` with q in 0..63.

ggml picks each 16-value sub-block's scale with ``make_qx_quants(16, 32, x, L, rmse_type=1)``:
a weighted (w = x**2) least-squares fit tried at 19 candidate inverse scales. Every float step
below is float32 in ggml's order (its sums are sequential), so files written here decode to the
same values as llama-quantize's. The numpy is laid out [16 values, sub-blocks] so that each sum
over a sub-block is a sequential loop of 16 vector adds, one lane per sub-block.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
Q6_K_BLOCK_BYTES = 210
_GROUP_MAX_EPS = np.float32(1e-15)  # ggml: a group with max|x| below this is all zero
_NMAX = 32  # make_qx_quants(nmax=32): levels -32..31
_CHUNK_SUPERBLOCKS = 1024  # 256 Ki values per chunk: 1 MiB scratch arrays, few numpy calls


def _sequential_sum(terms: np.ndarray, out: np.ndarray) -> np.ndarray:
    """terms f32 [16, S] -> out f32 [S], summed in index order like ggml's scalar loop."""
    np.copyto(out, terms[0])
    for i in range(1, terms.shape[0]):
        out += terms[i]
    return out


class _Trial:
    """Scratch buffers for one candidate inverse scale (in-place numpy keeps this fast)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x  # [16, S]
        self.w = x * x  # rmse_type 1: weight = x**2
        self.wx = self.w * x  # ggml computes w*x[i]*l as (w*x)*l
        self.levels = np.empty_like(x)
        self.terms = np.empty_like(x)
        self.sumlx = np.empty(x.shape[1], dtype=np.float32)
        self.suml2 = np.empty(x.shape[1], dtype=np.float32)

    def run(self, iscale: np.ndarray) -> None:
        """levels = clamp(nearest_int(iscale * x), -32, 31), then the sequential sums
        sumlx = sum(w*x*l) and suml2 = sum(w*l*l)."""
        levels = self.levels
        np.multiply(self.x, iscale, out=levels)
        np.rint(levels, out=levels)
        np.clip(levels, np.float32(-_NMAX), np.float32(_NMAX - 1), out=levels)
        np.multiply(self.wx, levels, out=self.terms)
        _sequential_sum(self.terms, self.sumlx)
        np.multiply(self.w, levels, out=self.terms)
        self.terms *= levels
        _sequential_sum(self.terms, self.suml2)


def _make_qx_quants(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``make_qx_quants(16, 32, x, L, 1, NULL)`` for many sub-blocks at once.

    x f32 [16, S] -> (scale f32 [S], L uint8 [16, S] in 0..63). All-zero sub-blocks: 0 and L = 0.
    """
    first_max = np.abs(x).argmax(axis=0)  # first index of the largest |x|, as ggml's strict '>'
    signed_max = np.take_along_axis(x, first_max[None, :], axis=0)[0]  # [S]
    zero = np.abs(signed_max) < _GROUP_MAX_EPS
    safe_max = np.where(zero, np.float32(1), signed_max).astype(np.float32)

    trial = _Trial(x)
    iscale = np.float32(-_NMAX) / safe_max
    trial.run(iscale)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(trial.suml2 != 0, trial.sumlx / trial.suml2, np.float32(0))
    best = scale * trial.sumlx
    best_iscale = iscale

    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(np.float32(_NMAX) + np.float32(0.1) * np.float32(step)) / safe_max
        trial.run(iscale)
        sumlx = trial.sumlx
        suml2 = trial.suml2
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        if not better.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            new_scale = sumlx / suml2
        scale = np.where(better, new_scale, scale)
        best = np.where(better, new_scale * sumlx, best)
        best_iscale = np.where(better, iscale, best_iscale)

    # ggml re-derives L from the winning inverse scale; do the same once at the end
    trial.run(best_iscale)
    codes = (trial.levels + _NMAX).astype(np.uint8)
    codes[:, zero] = 0
    scale = np.where(zero, np.float32(0), scale).astype(np.float32)
    return scale, codes


def _quantize_superblocks(x: np.ndarray) -> np.ndarray:
    """x f32 [B, 256] -> Q6_K blocks uint8 [B, 210]."""
    n_blocks = x.shape[0]
    sub = x.reshape(n_blocks * 16, 16).T.copy()  # [16 values, S sub-blocks], S = 16 * B
    sub_scales, codes = _make_qx_quants(sub)
    sub_scales = sub_scales.reshape(n_blocks, 16)

    first_max = np.abs(sub_scales).argmax(axis=1)
    max_scale = np.take_along_axis(sub_scales, first_max[:, None], axis=1)[:, 0]  # [B], signed
    block_zero = np.abs(max_scale) < _GROUP_MAX_EPS
    safe_max = np.where(block_zero, np.float32(1), max_scale).astype(np.float32)
    iscale = np.float32(-128) / safe_max
    d16 = (np.float32(1) / iscale).astype(np.float16)  # [B]
    scales_i8 = np.minimum(np.rint(iscale[:, None] * sub_scales), 127).astype(np.int8)

    # requantize every sub-block against the stored (f16 d, int8 scale); a sub-block whose
    # effective scale is 0 keeps make_qx_quants' levels, as in ggml
    d_sub = d16.astype(np.float32)[:, None] * scales_i8.astype(np.float32)  # [B, 16]
    d_lanes = d_sub.reshape(1, n_blocks * 16)  # [1, S]
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(np.rint(sub / d_lanes), -32, 31) + 32
    codes = np.where(d_lanes != 0, requant, codes).astype(np.uint8)
    values = codes.T.reshape(n_blocks, 2, 4, 32)  # [B, half, quarter, lane], back in row order

    low = values & 0x0F
    high = values >> 4
    ql = np.concatenate(
        [low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2
    )  # [B, half, 64]
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    out = np.concatenate(
        [
            ql.reshape(n_blocks, 128),
            qh.reshape(n_blocks, 64),
            scales_i8.view(np.uint8),
            d16.astype("<f2").view(np.uint8).reshape(n_blocks, 2),
        ],
        axis=1,
    )
    out[block_zero] = 0  # ggml memsets an all-zero block (d = +0.0)
    return out


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """x f32 [rows, cols] (cols a multiple of 256) -> Q6_K bytes uint8 [rows, cols//256*210]."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % QK_K:
        raise ValueError(f"quantize_q6_k: x must be [rows, multiple of {QK_K}], got {x.shape}")
    rows, cols = x.shape
    blocks = x.reshape(-1, QK_K)
    out = np.empty((blocks.shape[0], Q6_K_BLOCK_BYTES), dtype=np.uint8)
    for start in range(0, blocks.shape[0], _CHUNK_SUPERBLOCKS):
        stop = start + _CHUNK_SUPERBLOCKS
        out[start:stop] = _quantize_superblocks(blocks[start:stop])
    return out.reshape(rows, cols // QK_K * Q6_K_BLOCK_BYTES)
