"""Float-format codecs (F32, F16, BF16, Q8_0, Q6_K), row by row.

Decoding Q8_0 / Q6_K / BF16 and encoding Q8_0 / BF16 use ``gguf.quants``, whose numpy versions
follow ggml's reference code operation for operation (tests/formats/test_floats.py checks them
against scalar transcriptions of ggml). gguf has no Q6_K quantizer, so ``bitnet.formats.q6_k``
provides one. Layouts: ggml ``block_q8_0`` = f16 d + qs[32] (34 bytes, value ``qs * d``);
``block_q6_K`` = ql[128] + qh[64] + int8 scales[16] + f16 d (210 bytes).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

from bitnet.formats.q6_k import quantize_q6_k
from bitnet.hal.weight_formats import FLOAT_FORMATS, WeightFormat, row_bytes

_GGUF_TYPE = {
    WeightFormat.BF16: GGMLQuantizationType.BF16,
    WeightFormat.Q8_0: GGMLQuantizationType.Q8_0,
    WeightFormat.Q6_K: GGMLQuantizationType.Q6_K,
}


def _check_format(fmt: WeightFormat, who: str) -> WeightFormat:
    fmt = WeightFormat(fmt)
    if fmt not in FLOAT_FORMATS:
        raise ValueError(f"{who}: {fmt.value} is not a float format (use bitnet.formats.ternary)")
    return fmt


def dequantize_rows(fmt: WeightFormat, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Float-format bytes uint8 [rows, row_bytes] (or the same bytes flat) -> f32 [rows, cols]."""
    fmt = _check_format(fmt, "dequantize_rows")
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"dequantize_rows: data must be uint8, got {data.dtype}")
    width = row_bytes(fmt, cols)
    if data.size != rows * width:
        raise ValueError(
            f"dequantize_rows: {rows}x{cols} {fmt.value} needs {rows * width} bytes, "
            f"got {data.size}"
        )
    data = np.ascontiguousarray(data).reshape(rows, width)
    if fmt is WeightFormat.F32:
        return data.view("<f4").astype(np.float32)
    if fmt is WeightFormat.F16:
        return data.view("<f2").astype(np.float32)
    decoded = gguf_quants.dequantize(data, _GGUF_TYPE[fmt])
    return np.asarray(decoded, dtype=np.float32).reshape(rows, cols)


def quantize_rows(fmt: WeightFormat, x: np.ndarray) -> np.ndarray:
    """f32 [rows, cols] -> float-format bytes uint8 [rows, row_bytes], as ggml would write them.

    F16 and BF16 round to nearest even; Q8_0 and Q6_K follow ggml's ``quantize_row_*_ref``.
    """
    fmt = _check_format(fmt, "quantize_rows")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"quantize_rows: x must be 2-D [rows, cols], got shape {x.shape}")
    rows, cols = x.shape
    width = row_bytes(fmt, cols)  # raises when cols is not a multiple of the block
    if fmt is WeightFormat.F32:
        return x.astype("<f4").view(np.uint8).reshape(rows, width)
    if fmt is WeightFormat.F16:
        return x.astype("<f2").view(np.uint8).reshape(rows, width)
    if fmt is WeightFormat.Q6_K:
        return quantize_q6_k(x)
    encoded = gguf_quants.quantize(x, _GGUF_TYPE[fmt])
    return np.asarray(encoded, dtype=np.uint8).reshape(rows, width)
