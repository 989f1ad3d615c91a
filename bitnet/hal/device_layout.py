"""GGUF weight bytes split into the aligned arrays GPU kernels read (numpy, load time, not hot).

GGUF blocks interleave codes with f16 scales in blocks whose size is not a multiple of four
bytes (TQ2_0 66, Q8_0 34, Q6_K 210), so a GPU kernel cannot load them as aligned words. Every
GPU plugin therefore splits a weight once, at load, into contiguous code and f32 scale arrays.
The splits live here, once, on top of the codecs in ``bitnet.formats.ternary``; each plugin picks
the ones its kernels read (docs/formats.md 1.2, 1.3, 1.8 and 2.3 have the bit layouts):

- ``split_i2s``: I2_S codes uint8 [M, K/4] exactly as on disk + the f32 tensor scale.
- ``split_tq2`` / ``tq1_as_tq2``: TQ2_0 codes uint8 [M, K/4] (64 bytes per 256-block, first
  32-group in the LOW bits) + f32 block scales [M, K/256]. TQ1_0's base-3 bytes cannot be sliced
  into 2-bit fields, so it is decoded and re-encoded as TQ2_0 codes: 2 bits per weight on the
  device instead of 1.6875, with the same integer codes and scales.
- ``tq2_to_i2s_order``: TQ2_0 code bytes with their four 2-bit fields reversed, which is the
  I2_S interleave (same bytes, first 32-group in the HIGH bits).
- ``ternary_as_i2s``: any ternary format as I2_S-interleaved codes + its scales, the single
  ternary layout of the OpenCL and Vulkan kernels.
- ``float_rows``: the on-disk bytes of a float-format weight, uint8 [M, row_bytes].
- ``split_q8_0`` / ``split_q6_k``: int8 codes [M, K] + one f32 scale per group of 32 (Q8_0: d)
  or 16 (Q6_K: d * sub-scale, an f16 times an int8, exact in f32) elements, so that
  ``codes * scale`` is bit-identical to ``bitnet.formats.dequantize``.

Every function takes a WeightTensor, checks its bytes and raises ValueError naming the tensor.
Code 3 in a ternary weight (written by no quantizer) is rejected as a corrupt file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.formats.ternary import QK_K, TQ2_BLOCK_BYTES, tq1_unpack, tq2_pack
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import WeightFormat, row_bytes, tensor_bytes

Q8_0_BLOCK = 32  # elements per Q8_0 block
Q8_0_BLOCK_BYTES = 34  # f16 d + qs[32]
Q6_K_GROUP = 16  # elements per Q6_K sub-scale
Q6_K_BLOCK_BYTES = 210  # ql[128] + qh[64] + int8 scales[16] + f16 d

# Byte b with its four 2-bit fields in reverse order: TQ2_0 <-> I2_S code bytes.
_REVERSE_FIELDS = np.array(
    [((b & 3) << 6) | (((b >> 2) & 3) << 4) | (((b >> 4) & 3) << 2) | (b >> 6) for b in range(256)],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class TernaryI2S:
    """A ternary weight as I2_S-interleaved codes plus its scales, still on the host."""

    codes: np.ndarray  # uint8 [M, K/4], I2_S interleave, code = value + 1
    tensor_scale: float  # I2_S: the f32 tensor scale; TQ1_0 / TQ2_0: 1.0
    block_scales: np.ndarray | None  # TQ1_0 / TQ2_0: f32 [M, K/256]; I2_S: None


def weight_bytes(tensor: WeightTensor) -> np.ndarray:
    """The tensor's bytes as a contiguous flat uint8 array, checked against its format's size."""
    data = np.asarray(tensor.data)
    if data.dtype != np.uint8:
        raise ValueError(f"{tensor.name}: weight data must be uint8, got {data.dtype}")
    try:
        expected = tensor_bytes(tensor.format, tensor.rows, tensor.cols)
    except ValueError as err:  # a partial block: name the tensor
        raise ValueError(f"{tensor.name}: {err}") from err
    if data.size != expected:
        raise ValueError(
            f"{tensor.name}: {tensor.rows}x{tensor.cols} {tensor.format.value} needs {expected} "
            f"bytes, got {data.size}"
        )
    return np.ascontiguousarray(data).reshape(-1)


def has_code_3(codes: np.ndarray) -> bool:
    """True when any 2-bit field of the uint8 array is 3 (a corrupt ternary code)."""
    flat = np.ascontiguousarray(codes).reshape(-1)
    head = flat[: flat.size - flat.size % 8]
    # 8 bytes at a time: the same bit test on uint64 words is ~10x faster on a 500 MB model
    words = head.view(np.uint64)
    if np.any(words & (words >> np.uint64(1)) & np.uint64(0x5555555555555555)):
        return True
    tail = flat[head.size:]
    return bool(np.any(tail & (tail >> 1) & np.uint8(0x55)))  # bit 2i set <=> field i == 3


def _require(tensor: WeightTensor, fmt: WeightFormat) -> None:
    if tensor.format is not fmt:
        raise ValueError(f"{tensor.name}: expected {fmt.value}, got {tensor.format.value}")


def split_i2s(tensor: WeightTensor) -> tuple[np.ndarray, float]:
    """I2_S bytes [M*K/4 + 32] -> (codes uint8 [M, K/4] as on disk, the f32 tensor scale)."""
    _require(tensor, WeightFormat.I2_S)
    flat = weight_bytes(tensor)
    n_code_bytes = tensor.rows * tensor.cols // 4
    codes = flat[:n_code_bytes].reshape(tensor.rows, tensor.cols // 4)
    if has_code_3(codes):
        raise ValueError(f"{tensor.name}: invalid I2_S code 3 (the file is corrupt)")
    scale = float(flat[n_code_bytes : n_code_bytes + 4].view("<f4")[0])
    return codes, scale


def split_tq2(tensor: WeightTensor) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 bytes [M, K/256*66] -> (codes uint8 [M, K/4], d f32 [M, K/256])."""
    _require(tensor, WeightFormat.TQ2_0)
    rows = tensor.rows
    n_blocks = tensor.cols // QK_K
    blocks = weight_bytes(tensor).reshape(rows, n_blocks, TQ2_BLOCK_BYTES)
    codes = np.ascontiguousarray(blocks[:, :, :64]).reshape(rows, n_blocks * 64)
    if has_code_3(codes):
        raise ValueError(f"{tensor.name}: invalid TQ2_0 code 3 (the file is corrupt)")
    d = np.ascontiguousarray(blocks[:, :, 64:66]).view("<f2").reshape(rows, n_blocks)
    return codes, d.astype(np.float32)


def tq1_as_tq2(tensor: WeightTensor) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 bytes [M, K/256*54] -> the ``split_tq2`` arrays of the same values and scales."""
    _require(tensor, WeightFormat.TQ1_0)
    values, d = tq1_unpack(weight_bytes(tensor), tensor.rows, tensor.cols)
    as_tq2 = tq2_pack(values, d)  # d is an f16 value already: it round-trips exactly
    return split_tq2(WeightTensor(tensor.name, WeightFormat.TQ2_0, tensor.rows, tensor.cols,
                                  as_tq2))


def tq2_to_i2s_order(codes: np.ndarray) -> np.ndarray:
    """TQ2_0 code bytes uint8 [...] -> the same codes in I2_S order (fields reversed), same shape.

    Both formats put element 32*g + lane of a 128-element group in byte ``lane``; TQ2_0 at shift
    2*g, I2_S at shift 6 - 2*g.
    """
    return _REVERSE_FIELDS[codes]


def ternary_as_i2s(tensor: WeightTensor) -> TernaryI2S:
    """Any ternary WeightTensor (I2_S, TQ2_0, TQ1_0) -> I2_S-interleaved codes + its scales."""
    if tensor.format is WeightFormat.I2_S:
        codes, scale = split_i2s(tensor)
        return TernaryI2S(codes=codes, tensor_scale=scale, block_scales=None)
    if tensor.format is WeightFormat.TQ2_0:
        codes, d = split_tq2(tensor)
    elif tensor.format is WeightFormat.TQ1_0:
        codes, d = tq1_as_tq2(tensor)
    else:
        raise ValueError(f"{tensor.name}: {tensor.format.value} is not a ternary format")
    return TernaryI2S(codes=tq2_to_i2s_order(codes), tensor_scale=1.0, block_scales=d)


def float_rows(tensor: WeightTensor) -> np.ndarray:
    """The on-disk bytes of a float-format weight as a contiguous uint8 [rows, row_bytes]."""
    width = row_bytes(tensor.format, tensor.cols)
    return weight_bytes(tensor).reshape(tensor.rows, width)


def split_q8_0(tensor: WeightTensor) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 blocks (f16 d + int8 qs[32]) -> (codes int8 [M, K], scale f32 [M, K/32])."""
    _require(tensor, WeightFormat.Q8_0)
    rows, cols = tensor.rows, tensor.cols
    n_blocks = cols // Q8_0_BLOCK
    blocks = weight_bytes(tensor).reshape(rows, n_blocks, Q8_0_BLOCK_BYTES)
    d = np.ascontiguousarray(blocks[:, :, 0:2]).view("<f2").reshape(rows, n_blocks)
    codes = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(rows, cols)
    return codes, d.astype(np.float32)


def split_q6_k_ints(tensor: WeightTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q6_K blocks (ql[128] qh[64] scales[16] d) -> (codes int8 [M, K] in -32..31, sub-block
    scales int8 [M, K/16], d f32 [M, K/256]): the integer parts of llama.cpp's Q6_K x Q8_K dot.

    Per 128-element half h of a block (ql bytes 64h.., qh bytes 32h..), for l = 0..31, element
    128h + 32j + l takes its low 4 bits from ql[l] (j = 0, 2: low / high nibble) or ql[l + 32]
    (j = 1, 3), and its high 2 bits from qh[l] bits 2j+1..2j.
    """
    _require(tensor, WeightFormat.Q6_K)
    rows, cols = tensor.rows, tensor.cols
    n_blocks = cols // QK_K
    blocks = weight_bytes(tensor).reshape(rows, n_blocks, Q6_K_BLOCK_BYTES)
    ql = blocks[:, :, 0:128].reshape(rows, n_blocks, 2, 2, 32)  # [.., half, l // 32, l % 32]
    qh = blocks[:, :, 128:192].reshape(rows, n_blocks, 2, 1, 32)  # [.., half, 1, l]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=3)  # [.., half, j = 0..3, l]
    high = (qh >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 1, 4, 1)) & 3
    codes = (low | (high << 4)).astype(np.int16) - 32  # [rows, blocks, half, j, l]
    sub = np.ascontiguousarray(blocks[:, :, 192:208]).view(np.int8)  # [rows, blocks, 16]
    d = np.ascontiguousarray(blocks[:, :, 208:210]).view("<f2").astype(np.float32)  # [.., 1]
    return (codes.astype(np.int8).reshape(rows, cols),
            sub.reshape(rows, n_blocks * (QK_K // Q6_K_GROUP)), d.reshape(rows, n_blocks))


def split_q6_k(tensor: WeightTensor) -> tuple[np.ndarray, np.ndarray]:
    """Q6_K -> (codes int8 [M, K] in -32..31, scale f32 [M, K/16] = d * scales[j]); the
    product is exact in f32 (an f16 times an int8)."""
    codes, sub, d = split_q6_k_ints(tensor)
    groups = QK_K // Q6_K_GROUP
    scale = sub.astype(np.float32) * np.repeat(d, groups, axis=1)
    return codes, scale


def group_values(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 codes [M, K] and f32 scales [M, K/group] -> f32 [M, K] = code * scale, one f32
    rounding per element (what ``split_q8_0`` / ``split_q6_k`` arrays stand for)."""
    rows, cols = codes.shape
    group = cols // scale.shape[1]
    grouped = codes.astype(np.float32).reshape(rows, -1, group)
    return (grouped * scale.reshape(rows, -1, 1)).reshape(rows, cols)
