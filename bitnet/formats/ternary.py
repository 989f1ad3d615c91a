"""Ternary weight codecs: I2_S (bitnet.cpp), TQ2_0 and TQ1_0 (llama.cpp), and the ternarizers.

Every codec works on ternary values ``v`` in {-1, 0, +1} (int8) plus scales; bit-level facts are
in docs/formats.md sections 1.2, 1.3, 2.2 and 2.3:

- I2_S: 2-bit codes ``v + 1`` over the flattened tensor in 128-element groups of 32 bytes; byte
  ``32*(e >> 7) + (e & 31)`` holds element e at shift ``6 - 2*((e >> 5) & 3)`` (first 32-group in
  bits 7:6). After the codes: one f32 scale for the whole tensor, then 28 bytes of padding.
- TQ2_0: per 256-element block, ``qs[64]`` then f16 ``d``; same grouping as I2_S but the first
  32-group sits in the LOW bits.
- TQ1_0: per 256-element block, ``qs[48]`` (5 trits per byte) + ``qh[4]`` (4 trits per byte) +
  f16 ``d``; a byte is the base-3 number of its trits scaled to 0..255 (ceil(q * 256 / 243)).
"""

from __future__ import annotations

import numpy as np

QK_K = 256  # elements per TQ1_0 / TQ2_0 block
I2S_GROUP = 128  # elements per I2_S group (32 bytes)
I2S_TAIL_BYTES = 32  # f32 scale + 28 bytes of padding
TQ2_BLOCK_BYTES = 66  # qs[64] + f16 d
TQ1_BLOCK_BYTES = 54  # qs[48] + qh[4] + f16 d

# Shift of each 32-element group inside a byte: I2_S puts group 0 in the high bits, TQ2_0 in the
# low bits.
_I2S_SHIFTS = np.array([6, 4, 2, 0], dtype=np.uint8)
_TQ2_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)
# TQ1_0 place values: the first trit of a byte is the most significant base-3 digit.
_TQ1_WEIGHTS_5 = np.array([81, 27, 9, 3, 1], dtype=np.int32)
_TQ1_WEIGHTS_4 = np.array([81, 27, 9, 3], dtype=np.int32)  # qh: 4 trits shifted up (5th = 0)
_TQ1_POWERS_5 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)  # decode multipliers 3**n


# ---------------------------------------------------------------------------------------------
# input checks


def _check_ternary(values: np.ndarray, who: str) -> np.ndarray:
    """Validate a 2-D array of ternary values; returns it as int8."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"{who}: values must be 2-D [rows, cols], got shape {values.shape}")
    if values.size and (values.min() < -1 or values.max() > 1):
        raise ValueError(
            f"{who}: values must be in {{-1, 0, 1}}, got {values.min()}..{values.max()}"
        )
    return values.astype(np.int8, copy=False)


def _check_cols(cols: int, block: int, who: str) -> None:
    if cols <= 0 or cols % block:
        raise ValueError(f"{who}: cols (K) must be a positive multiple of {block}, got {cols}")


def _check_block_scales(d: np.ndarray, rows: int, cols: int, who: str) -> np.ndarray:
    d = np.asarray(d, dtype=np.float32)
    expected = (rows, cols // QK_K)
    if d.shape != expected:
        raise ValueError(
            f"{who}: d must have shape {expected} (one scale per 256 values), got {d.shape}"
        )
    return d


def _check_row_data(
    data: np.ndarray, rows: int, cols: int, block_bytes: int, who: str
) -> np.ndarray:
    """Accept [rows, row_bytes] or the same bytes flat -> uint8 [rows, cols//256, block_bytes]."""
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"{who}: data must be uint8, got {data.dtype}")
    _check_cols(cols, QK_K, who)
    n_blocks = cols // QK_K
    if data.size != rows * n_blocks * block_bytes:
        raise ValueError(
            f"{who}: {rows}x{cols} needs {rows * n_blocks * block_bytes} bytes, got {data.size}"
        )
    return data.reshape(rows, n_blocks, block_bytes)


# ---------------------------------------------------------------------------------------------
# I2_S (bitnet.cpp): one f32 scale per tensor


def i2s_pack(values: np.ndarray, scale: float) -> np.ndarray:
    """Ternary int8 [M, K] and a tensor scale -> I2_S bytes uint8 [M*K//4 + 32].

    K must be a multiple of 128 so that every row starts on a group boundary (docs/formats.md 2.3).
    """
    values = _check_ternary(values, "i2s_pack")
    _check_cols(values.shape[1], I2S_GROUP, "i2s_pack")
    codes = (values + 1).astype(np.uint8).reshape(-1, 4, 32)  # [groups, 32-group, lane]
    shifted = codes << _I2S_SHIFTS.reshape(1, 4, 1)
    packed = np.bitwise_or.reduce(shifted, axis=1)  # [groups, 32]
    tail = np.zeros(I2S_TAIL_BYTES, dtype=np.uint8)
    tail[:4] = np.array([scale], dtype="<f4").view(np.uint8)
    return np.concatenate([packed.reshape(-1), tail])


def i2s_unpack(data: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.float32]:
    """I2_S bytes uint8 [M*K//4 + 32] -> (int8 [M, K] in {-1, 0, 1}, f32 tensor scale).

    Raises ValueError on a wrong size or on code 3, which no quantizer writes (bitnet.cpp's kernels
    would read it as +2 and its dequantizer as 0, so a file holding it is corrupt).
    """
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"i2s_unpack: data must be uint8, got {data.dtype}")
    _check_cols(cols, I2S_GROUP, "i2s_unpack")
    n_codes_bytes = rows * cols // 4
    if data.size != n_codes_bytes + I2S_TAIL_BYTES:
        raise ValueError(
            f"i2s_unpack: {rows}x{cols} I2_S needs {n_codes_bytes + I2S_TAIL_BYTES} bytes "
            f"(codes + 32-byte scale tail), got {data.size}"
        )
    flat = data.reshape(-1)
    values = _i2s_values(flat[:n_codes_bytes], rows, cols, "i2s_unpack")
    scale = flat[n_codes_bytes : n_codes_bytes + 4].view("<f4")[0]
    return values, np.float32(scale)


def i2s_code_values(codes: np.ndarray) -> np.ndarray:
    """I2_S code bytes without the scale tail, uint8 [M, K//4] -> int8 [M, K] in {-1, 0, 1}.

    For layouts that keep the on-disk I2_S interleave but store the scale elsewhere (GPU
    plugins, bitnet.hal.device_layout). Raises ValueError on code 3, as ``i2s_unpack``.
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(
            f"i2s_code_values: codes must be uint8 [M, K//4], got {codes.dtype} {codes.shape}"
        )
    rows, cols = codes.shape[0], codes.shape[1] * 4
    _check_cols(cols, I2S_GROUP, "i2s_code_values")
    return _i2s_values(codes.reshape(-1), rows, cols, "i2s_code_values")


def _i2s_values(packed: np.ndarray, rows: int, cols: int, who: str) -> np.ndarray:
    """I2_S code bytes uint8 [M*K//4] -> int8 [M, K]; ``who`` names the caller in errors."""
    lanes = packed.reshape(-1, 1, 32)  # [groups, 1, lane]
    codes = (lanes >> _I2S_SHIFTS.reshape(1, 4, 1)) & 3  # [groups, 32-group, lane]
    if np.any(codes == 3):
        first = int(np.flatnonzero(codes.reshape(-1) == 3)[0])
        raise ValueError(f"{who}: invalid I2_S code 3 at element {first} (file is corrupt)")
    return codes.astype(np.int8).reshape(rows, cols) - np.int8(1)


# ---------------------------------------------------------------------------------------------
# TQ2_0 (llama.cpp): 2 bits per value, f16 scale per 256-block


def tq2_pack(values: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ternary int8 [M, K] and block scales f32 [M, K//256] -> uint8 [M, K//256*66].

    ``d`` is stored as f16 (round to nearest even), as ggml does.
    """
    values = _check_ternary(values, "tq2_pack")
    rows, cols = values.shape
    _check_cols(cols, QK_K, "tq2_pack")
    d = _check_block_scales(d, rows, cols, "tq2_pack")
    n_blocks = cols // QK_K
    # element e of a block = 128*half + 32*group + lane -> byte 32*half + lane, shift 2*group
    codes = (values + 1).astype(np.uint8).reshape(rows, n_blocks, 2, 4, 32)
    shifted = codes << _TQ2_SHIFTS.reshape(1, 1, 1, 4, 1)
    qs = np.bitwise_or.reduce(shifted, axis=3).reshape(rows, n_blocks, 64)
    d_bytes = d.astype("<f2").view(np.uint8).reshape(rows, n_blocks, 2)
    return np.concatenate([qs, d_bytes], axis=2).reshape(rows, n_blocks * TQ2_BLOCK_BYTES)


def tq2_unpack(data: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 bytes [M, K//256*66] -> (int8 [M, K] in {-1, 0, 1}, f32 d [M, K//256]).

    Raises ValueError on code 3 (ggml would decode it as +2; no quantizer writes it).
    """
    blocks = _check_row_data(data, rows, cols, TQ2_BLOCK_BYTES, "tq2_unpack")
    n_blocks = cols // QK_K
    values = _tq2_values(blocks[:, :, :64], rows, cols, "tq2_unpack")
    d = np.ascontiguousarray(blocks[:, :, 64:66]).view("<f2").reshape(rows, n_blocks)
    return values, d.astype(np.float32)


def tq2_code_values(qs: np.ndarray) -> np.ndarray:
    """TQ2_0 code bytes without the f16 scales, uint8 [M, K//4] (64 per 256-block, blocks in
    order) -> int8 [M, K] in {-1, 0, 1}.

    For layouts that split the 66-byte blocks into codes and scales (GPU plugins,
    bitnet.hal.device_layout). Raises ValueError on code 3, as ``tq2_unpack``.
    """
    qs = np.asarray(qs)
    if qs.dtype != np.uint8 or qs.ndim != 2:
        raise ValueError(f"tq2_code_values: qs must be uint8 [M, K//4], got {qs.dtype} {qs.shape}")
    rows, cols = qs.shape[0], qs.shape[1] * 4
    _check_cols(cols, QK_K, "tq2_code_values")
    return _tq2_values(qs, rows, cols, "tq2_code_values")


def _tq2_values(qs: np.ndarray, rows: int, cols: int, who: str) -> np.ndarray:
    """TQ2_0 code bytes (64 per block, any shape holding M*K//4) -> int8 [M, K]."""
    lanes = qs.reshape(rows, cols // QK_K, 2, 1, 32)  # [.., half, 1, lane]
    codes = (lanes >> _TQ2_SHIFTS.reshape(1, 1, 1, 4, 1)) & 3  # [.., half, group, lane]
    if np.any(codes == 3):
        raise ValueError(f"{who}: invalid TQ2_0 code 3 in a {rows}x{cols} tensor")
    return codes.astype(np.int8).reshape(rows, cols) - np.int8(1)


# ---------------------------------------------------------------------------------------------
# TQ1_0 (llama.cpp): 5 trits per byte, f16 scale per 256-block


def _tq1_encode(trits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """trits int32 [..., n, lanes] (0..2) -> bytes [..., lanes]: base-3 value scaled to 0..255."""
    q = (trits * weights.reshape(-1, 1)).sum(axis=-2)  # 0..242
    return ((q * 256 + 242) // 243).astype(np.uint8)  # ceil(q * 256 / 243)


def tq1_pack(values: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ternary int8 [M, K] and block scales f32 [M, K//256] -> uint8 [M, K//256*54]."""
    values = _check_ternary(values, "tq1_pack")
    rows, cols = values.shape
    _check_cols(cols, QK_K, "tq1_pack")
    d = _check_block_scales(d, rows, cols, "tq1_pack")
    n_blocks = cols // QK_K
    trits = (values.astype(np.int32) + 1).reshape(rows, n_blocks, QK_K)
    qs0 = _tq1_encode(trits[..., :160].reshape(rows, n_blocks, 5, 32), _TQ1_WEIGHTS_5)
    qs1 = _tq1_encode(trits[..., 160:240].reshape(rows, n_blocks, 5, 16), _TQ1_WEIGHTS_5)
    qh = _tq1_encode(trits[..., 240:].reshape(rows, n_blocks, 4, 4), _TQ1_WEIGHTS_4)
    d_bytes = d.astype("<f2").view(np.uint8).reshape(rows, n_blocks, 2)
    blocks = np.concatenate([qs0, qs1, qh, d_bytes], axis=2)  # [M, blocks, 54]
    return blocks.reshape(rows, n_blocks * TQ1_BLOCK_BYTES)


def _tq1_decode(packed: np.ndarray, n_trits: int) -> np.ndarray:
    """bytes uint8 [..., lanes] -> trits uint8 [..., n_trits, lanes] (0..2).

    Trit n is the top base-3 digit of ``byte * 3**n mod 256`` (uint8 wrap-around multiply)."""
    powers = _TQ1_POWERS_5[:n_trits].reshape(-1, 1)
    p = packed[..., None, :] * powers  # uint8 multiply wraps mod 256, as in ggml
    return ((p.astype(np.uint16) * 3) >> 8).astype(np.uint8)


def tq1_unpack(data: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 bytes [M, K//256*54] -> (int8 [M, K] in {-1, 0, 1}, f32 d [M, K//256])."""
    blocks = _check_row_data(data, rows, cols, TQ1_BLOCK_BYTES, "tq1_unpack")
    n_blocks = cols // QK_K
    part0 = _tq1_decode(blocks[..., 0:32], 5).reshape(rows, n_blocks, 160)  # e = 32*n + m
    part1 = _tq1_decode(blocks[..., 32:48], 5).reshape(rows, n_blocks, 80)  # e = 160 + 16*n + m
    part2 = _tq1_decode(blocks[..., 48:52], 4).reshape(rows, n_blocks, 16)  # e = 240 + 4*n + j
    trits = np.concatenate([part0, part1, part2], axis=2)
    values = trits.astype(np.int8).reshape(rows, cols) - np.int8(1)
    d = np.ascontiguousarray(blocks[:, :, 52:54]).view("<f2").reshape(rows, n_blocks)
    return values, d.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# ternarizers


def ternarize_absmean(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-tensor absmean ternarization, the converters' rule (docs/formats.md 1.4).

    w f32 [M, K] -> (int8 [M, K] in {-1, 0, 1}, scale) with ``scale = max(mean|w|, 1e-5)`` (f32)
    and ``v = clip(rint(w * (1/scale)), -1, 1)``: the converter multiplies by the reciprocal.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"ternarize_absmean: w must be 2-D, got shape {w.shape}")
    mean_abs = np.abs(w).mean(dtype=np.float64)
    scale = np.float32(max(mean_abs, 1e-5))
    inv = np.float32(1.0) / scale
    values = np.clip(np.rint(w * inv), -1, 1).astype(np.int8)
    return values, float(scale)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C ``lroundf``: round to nearest, ties away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def tq_quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's TQ1_0/TQ2_0 quantizer: w f32 [M, K] -> (int8 [M, K], f32 d [M, K//256]).

    Per 256-block: ``amax = max|w|``, ``v = lroundf(w * (1/amax))`` (0 when amax is 0), and the
    returned ``d`` is amax rounded through f16, i.e. exactly what the block stores.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"tq_quantize: w must be 2-D, got shape {w.shape}")
    rows, cols = w.shape
    _check_cols(cols, QK_K, "tq_quantize")
    blocks = w.reshape(rows, cols // QK_K, QK_K)
    amax = np.abs(blocks).max(axis=2)  # [M, blocks]
    with np.errstate(divide="ignore"):
        inv = np.where(amax == 0, np.float32(0), np.float32(1) / amax).astype(np.float32)
    values = _round_half_away(blocks * inv[..., None]).astype(np.int8).reshape(rows, cols)
    d = amax.astype(np.float16).astype(np.float32)
    return values, d
