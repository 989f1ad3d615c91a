"""Load-time repacking of weights into the device layouts the kernels read (numpy, not hot).

Ternary weights of every format become one layout, the I2_S interleave (formats.md 2.3): codes
uint8 [M, K/4] where each 128-element block is 32 bytes and byte b holds elements b, b+32, b+64,
b+96 at shifts 6, 4, 2, 0; code = value + 1. Scales stay per format: one f32 per tensor (I2_S)
or f32 [M, K/256] per block (TQ1_0 / TQ2_0). Float weights keep their on-disk bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.hal import WeightFormat, WeightTensor
from bitnet.hal.formats import I2S_TAIL_BYTES

# TQ2_0 stores the four 2-bit fields of a byte in the reverse order of I2_S (formats.md 2.3).
_REVERSE_FIELDS = np.array(
    [((b & 3) << 6) | (((b >> 2) & 3) << 4) | (((b >> 4) & 3) << 2) | (b >> 6) for b in range(256)],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class TernaryHost:
    """A ternary weight in device layout, still on the host."""

    codes: np.ndarray  # uint8 [M, K/4], I2_S interleave
    tensor_scale: float  # I2_S: the f32 tensor scale; TQ: unused (1.0)
    block_scales: np.ndarray | None  # TQ: f32 [M, K/256]; I2_S: None


def ternary_to_device_layout(tensor: WeightTensor) -> TernaryHost:
    """Repack a ternary WeightTensor (I2_S, TQ2_0, TQ1_0) for linear_ternary's kernels."""
    rows = tensor.rows
    cols = tensor.cols
    if cols % 256 and tensor.format is not WeightFormat.I2_S:
        raise ValueError(f"{tensor.name}: {tensor.format.value} needs K % 256 == 0, got {cols}")
    if cols % 128:
        raise ValueError(f"{tensor.name}: ternary kernels need K % 128 == 0, got {cols}")
    data = np.asarray(tensor.data)
    if tensor.format is WeightFormat.I2_S:
        n_code_bytes = rows * cols // 4
        if data.size != n_code_bytes + I2S_TAIL_BYTES:
            raise ValueError(
                f"{tensor.name}: I2_S {rows}x{cols} needs {n_code_bytes + I2S_TAIL_BYTES} bytes, "
                f"got {data.size}"
            )
        flat = data.reshape(-1)
        codes = np.ascontiguousarray(flat[:n_code_bytes]).reshape(rows, cols // 4)
        scale = float(flat[n_code_bytes : n_code_bytes + 4].view("<f4")[0])
        return TernaryHost(codes=codes, tensor_scale=scale, block_scales=None)
    if tensor.format is WeightFormat.TQ2_0:
        blocks = data.reshape(rows, cols // 256, 66)
        codes = _REVERSE_FIELDS[blocks[:, :, :64]].reshape(rows, cols // 4)
        d = np.ascontiguousarray(blocks[:, :, 64:66]).view("<f2").astype(np.float32)
        return TernaryHost(codes=codes, tensor_scale=1.0, block_scales=d.reshape(rows, -1))
    if tensor.format is WeightFormat.TQ1_0:
        # Base-3 bytes cannot be sliced into 2-bit fields: decode with the reference codec, then
        # pack as I2_S (costs 2 bits per weight on the device instead of 1.6875).
        from bitnet.formats.ternary import i2s_pack, tq1_unpack

        values, d = tq1_unpack(data, rows, cols)
        codes = i2s_pack(values, 1.0)[: rows * cols // 4].reshape(rows, cols // 4)
        return TernaryHost(codes=codes, tensor_scale=1.0, block_scales=d.astype(np.float32))
    raise ValueError(f"{tensor.name}: {tensor.format.value} is not a ternary format")


def float_rows(tensor: WeightTensor) -> np.ndarray:
    """The on-disk bytes of a float-format weight as a contiguous uint8 [rows, row_bytes]."""
    from bitnet.hal import row_bytes

    width = row_bytes(tensor.format, tensor.cols)
    data = np.ascontiguousarray(np.asarray(tensor.data, dtype=np.uint8))
    if data.size != tensor.rows * width:
        raise ValueError(
            f"{tensor.name}: {tensor.format.value} {tensor.rows}x{tensor.cols} needs "
            f"{tensor.rows * width} bytes, got {data.size}"
        )
    return data.reshape(tensor.rows, width)
