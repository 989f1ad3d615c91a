"""Host-side repacking of a WeightTensor into the arrays the CUDA kernels read (numpy, load time).

Nothing here touches the GPU, so every layout is unit-tested on hosts without one. Layouts:

- ``i2s``: the on-disk I2_S codes unchanged (row r at byte r*K/4, four 2-bit codes per byte, 128-
  element groups, first 32 elements in bits 7:6) and the f32 tensor scale from the tail. The
  kernel reads 16-byte vectors straight from it, so no repacking is needed.
- ``tq``: TQ2_0 code bytes (``qs``, 64 per 256-block) with the f16 block scales split off into f32
  ``d`` [M, K/256]: the 66-byte blocks are not 4-byte aligned, the split arrays are. TQ1_0 is
  decoded once (bitnet.formats.ternary) and re-encoded as TQ2_0 codes: 2 bits per weight instead
  of 1.6875 (+18.5 % weight bytes) buys one simple kernel for both formats, with identical
  numbers (the integer codes and the scales are the same).
- ``f32`` / ``f16`` / ``bf16``: the on-disk elements (f16 / bf16 kept as 16-bit words).
- ``i8g``: int8 codes plus one f32 scale per group of ``group`` elements, for Q8_0 (group 32,
  scale d) and Q6_K (group 16, scale d * sub-scale, exact in f32). 1.25 bytes per weight for
  Q6_K instead of 0.82, in exchange for aligned loads and a one-multiply decode; the decoded
  value ``scale * code`` is bit-identical to bitnet.formats.dequantize.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitnet.hal.backend import WeightTensor
from bitnet.hal.formats import WeightFormat, tensor_bytes

QK_K = 256
I2S_GROUP = 128  # elements per 32-byte I2_S group; rows must be whole groups
TQ2_BLOCK_BYTES = 66
Q8_0_BLOCK_BYTES = 34
Q6_K_BLOCK_BYTES = 210


@dataclass(frozen=True)
class DeviceLayout:
    """A weight in the device's own layout, still on the host: named arrays to upload."""

    kind: str  # "i2s", "tq", "f32", "f16", "bf16" or "i8g": picks the kernel family
    rows: int  # M
    cols: int  # K
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # contiguous, little-endian
    w_scale: float = 1.0  # i2s: the f32 tensor scale
    group: int = 0  # i8g: elements per scale

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def repack(tensor: WeightTensor) -> DeviceLayout:
    """Any supported WeightTensor -> its DeviceLayout. Raises ValueError naming the tensor."""
    rows = tensor.rows
    cols = tensor.cols
    data = np.asarray(tensor.data)
    if data.dtype != np.uint8:
        raise ValueError(f"{tensor.name}: weight data must be uint8, got {data.dtype}")
    expected = tensor_bytes(tensor.format, rows, cols)  # raises on a partial block
    if data.size != expected:
        raise ValueError(f"{tensor.name}: {rows}x{cols} {tensor.format.value} needs {expected} "
                         f"bytes, got {data.size}")
    flat = np.ascontiguousarray(data).reshape(-1)
    fmt = tensor.format
    if fmt is WeightFormat.I2_S:
        return repack_i2s(flat, rows, cols, tensor.name)
    if fmt is WeightFormat.TQ2_0:
        return repack_tq2(flat, rows, cols, tensor.name)
    if fmt is WeightFormat.TQ1_0:
        return repack_tq1(flat, rows, cols, tensor.name)
    if fmt is WeightFormat.F32:
        return DeviceLayout("f32", rows, cols, {"w": flat.view("<f4").reshape(rows, cols)})
    if fmt in (WeightFormat.F16, WeightFormat.BF16):
        words = flat.view("<u2").reshape(rows, cols)
        return DeviceLayout(fmt.value, rows, cols, {"w": words})
    if fmt is WeightFormat.Q8_0:
        return repack_q8_0(flat, rows, cols)
    if fmt is WeightFormat.Q6_K:
        return repack_q6_k(flat, rows, cols)
    raise ValueError(f"{tensor.name}: bitnet-cuda has no layout for {fmt.value}")


def has_code_3(codes: np.ndarray) -> bool:
    """True when any 2-bit field of the uint8 array is 3 (a corrupt ternary code)."""
    both_bits = codes & (codes >> 1) & np.uint8(0x55)  # bit 2i set <=> field i == 3
    return bool(both_bits.any())


def repack_i2s(flat: np.ndarray, rows: int, cols: int, name: str = "i2_s") -> DeviceLayout:
    """I2_S bytes [M*K/4 + 32] -> codes uint8 [M, K/4] (unchanged) + the f32 tensor scale."""
    if cols % I2S_GROUP:
        raise ValueError(f"{name}: I2_S rows must be a multiple of {I2S_GROUP}, got K={cols}")
    n_code_bytes = rows * cols // 4
    codes = flat[:n_code_bytes].reshape(rows, cols // 4)
    if has_code_3(codes):
        raise ValueError(f"{name}: invalid I2_S code 3 (the file is corrupt)")
    scale = float(flat[n_code_bytes:n_code_bytes + 4].view("<f4")[0])
    return DeviceLayout("i2s", rows, cols, {"codes": codes}, w_scale=scale)


def repack_tq2(flat: np.ndarray, rows: int, cols: int, name: str = "tq2_0") -> DeviceLayout:
    """TQ2_0 bytes [M, K/256*66] -> codes uint8 [M, K/256*64] + d f32 [M, K/256]."""
    n_blocks = cols // QK_K
    blocks = flat.reshape(rows, n_blocks, TQ2_BLOCK_BYTES)
    codes = np.ascontiguousarray(blocks[:, :, :64]).reshape(rows, n_blocks * 64)
    if has_code_3(codes):
        raise ValueError(f"{name}: invalid TQ2_0 code 3 (the file is corrupt)")
    d = np.ascontiguousarray(blocks[:, :, 64:66]).view("<f2").reshape(rows, n_blocks)
    return DeviceLayout("tq", rows, cols, {"codes": codes, "d": d.astype(np.float32)})


def repack_tq1(flat: np.ndarray, rows: int, cols: int, name: str = "tq1_0") -> DeviceLayout:
    """TQ1_0 -> the ``tq`` layout: decode with the shared codec, re-encode as TQ2_0 codes."""
    from bitnet.formats.ternary import tq1_unpack, tq2_pack

    values, d = tq1_unpack(flat, rows, cols)  # int8 [M, K], f32 [M, K/256] (exact f16 values)
    as_tq2 = tq2_pack(values, d)  # d round-trips through f16 exactly
    return repack_tq2(as_tq2.reshape(-1), rows, cols, name)


def repack_q8_0(flat: np.ndarray, rows: int, cols: int) -> DeviceLayout:
    """Q8_0 blocks (f16 d + 32 int8) -> codes int8 [M, K] + scale f32 [M, K/32]."""
    n_blocks = cols // 32
    blocks = flat.reshape(rows, n_blocks, Q8_0_BLOCK_BYTES)
    d = np.ascontiguousarray(blocks[:, :, 0:2]).view("<f2").reshape(rows, n_blocks)
    codes = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(rows, cols)
    return DeviceLayout("i8g", rows, cols, {"codes": codes, "scale": d.astype(np.float32)},
                        group=32)


def repack_q6_k(flat: np.ndarray, rows: int, cols: int) -> DeviceLayout:
    """Q6_K blocks (ql[128] qh[64] scales[16] d) -> codes int8 [M, K] in -32..31 + scale f32
    [M, K/16] = d * scales[j] (an f16 times an int8: exact in f32).

    Per 128-element half h of a block (ql bytes 64h.., qh bytes 32h..), for l = 0..31, element
    128h + 32j + l takes its low 4 bits from ql[l] (j = 0, 2: low / high nibble) or ql[l + 32]
    (j = 1, 3), and its high 2 bits from qh[l] bits 2j+1..2j."""
    n_blocks = cols // QK_K
    blocks = flat.reshape(rows, n_blocks, Q6_K_BLOCK_BYTES)
    ql = blocks[:, :, 0:128].reshape(rows, n_blocks, 2, 2, 32)  # [.., half, l // 32, l % 32]
    qh = blocks[:, :, 128:192].reshape(rows, n_blocks, 2, 1, 32)  # [.., half, 1, l]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=3)  # [.., half, j = 0..3, l]: j = 0, 1, 2, 3
    high = (qh >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 1, 4, 1)) & 3
    codes = (low | (high << 4)).astype(np.int16) - 32  # [rows, blocks, half, j, l]
    sub = np.ascontiguousarray(blocks[:, :, 192:208]).view(np.int8).astype(np.float32)
    d = np.ascontiguousarray(blocks[:, :, 208:210]).view("<f2").astype(np.float32)  # [.., 1]
    scale = (d * sub).reshape(rows, n_blocks * 16)  # [rows, K/16]
    arrays = {"codes": codes.astype(np.int8).reshape(rows, cols), "scale": scale}
    return DeviceLayout("i8g", rows, cols, arrays, group=16)


def decode_layout(layout: DeviceLayout) -> np.ndarray:
    """The f32 [M, K] values a layout stands for, computed the way the kernels do (tests use it
    to compare with bitnet.formats.dequantize; ternary layouts give the codes - 1 times scales)."""
    rows, cols = layout.rows, layout.cols
    if layout.kind == "f32":
        return layout.arrays["w"].astype(np.float32)
    if layout.kind == "f16":
        return layout.arrays["w"].view("<f2").astype(np.float32)
    if layout.kind == "bf16":
        return (layout.arrays["w"].astype(np.uint32) << 16).view(np.float32)
    if layout.kind == "i8g":
        codes = layout.arrays["codes"].astype(np.float32).reshape(rows, -1, layout.group)
        scale = layout.arrays["scale"].reshape(rows, -1, 1)
        return (codes * scale).reshape(rows, cols)  # one f32 rounding, as the kernel
    values = ternary_values(layout).astype(np.float32)
    if layout.kind == "i2s":
        return values * np.float32(layout.w_scale)
    d = layout.arrays["d"]
    return (values.reshape(rows, -1, QK_K) * d[:, :, None]).reshape(rows, cols)


def ternary_values(layout: DeviceLayout) -> np.ndarray:
    """int8 [M, K] in {-1, 0, 1} from an ``i2s`` or ``tq`` layout, by the kernels' bit positions."""
    rows, cols = layout.rows, layout.cols
    codes = layout.arrays["codes"]
    if layout.kind == "i2s":
        groups = codes.reshape(rows, cols // 128, 1, 32)  # [.., 32-byte group, 1, byte]
        shifts = (6 - 2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)
    elif layout.kind == "tq":
        groups = codes.reshape(rows, cols // 128, 1, 32)  # two 32-byte halves per 256-block
        shifts = (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)
    else:
        raise ValueError(f"ternary_values: {layout.kind} is not a ternary layout")
    fields = (groups >> shifts) & 3  # [rows, groups, g, byte]: element 32*g + byte of the group
    return fields.astype(np.int8).reshape(rows, cols) - np.int8(1)
