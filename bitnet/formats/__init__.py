"""bitnet.formats: numpy codecs for every weight format bitnet reads, and activation quantizers.

- ``ternary``: I2_S, TQ2_0, TQ1_0 pack/unpack; absmean and llama.cpp ternarizers.
- ``floats``: F32, F16, BF16, Q8_0, Q6_K rows (``dequantize_rows`` / ``quantize_rows``).
- ``activations``: per-token int8 (bitnet.cpp) and Q8_K (llama.cpp) activation quantizers.

These are the bit-level reference (docs/formats.md sections 1, 2 and 7); they are written to be
read, not to be fast.
"""

from __future__ import annotations

import numpy as np

from bitnet.formats.floats import dequantize_rows, quantize_rows
from bitnet.formats.ternary import i2s_unpack, tq1_unpack, tq2_unpack
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import FLOAT_FORMATS, WeightFormat

__all__ = ["dequantize", "dequantize_rows", "quantize_rows", "unpack_ternary"]

_TERNARY_UNPACK = {
    WeightFormat.I2_S: i2s_unpack,
    WeightFormat.TQ2_0: tq2_unpack,
    WeightFormat.TQ1_0: tq1_unpack,
}


def unpack_ternary(tensor: WeightTensor) -> tuple[np.ndarray, np.ndarray]:
    """A ternary WeightTensor -> (int8 values [M, K], f32 scales).

    Scales are [1, 1] for I2_S (one per tensor) and [M, K//256] for TQ1_0 / TQ2_0.
    """
    unpack = _TERNARY_UNPACK.get(tensor.format)
    if unpack is None:
        raise ValueError(f"{tensor.name}: {tensor.format.value} is not a ternary format")
    values, scales = unpack(tensor.data, tensor.rows, tensor.cols)
    return values, np.asarray(scales, dtype=np.float32).reshape(
        (1, 1) if tensor.format is WeightFormat.I2_S else (tensor.rows, -1)
    )


def dequantize(tensor: WeightTensor) -> np.ndarray:
    """Any WeightTensor -> f32 [rows, cols], exactly as its home engine dequantizes it.

    Ternary: ``value * scale`` (per tensor for I2_S, per 256-block for TQ). ``out_scale`` is NOT
    applied: it multiplies the matmul output, not the weight.
    """
    if tensor.format in FLOAT_FORMATS:
        return dequantize_rows(tensor.format, tensor.data, tensor.rows, tensor.cols)
    values, scales = unpack_ternary(tensor)
    blocks = scales.shape[1]
    per_block = values.reshape(tensor.rows, blocks, -1).astype(np.float32)
    return (per_block * scales[:, :, None]).reshape(tensor.rows, tensor.cols)
