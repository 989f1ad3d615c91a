"""Linear weights: HF storage -> ternary values and scales -> the bytes of a GGUF weight type.

Decoding (docs/model-facts.md 2.1, 2.7, 3):
- packed: uint8 [M/4, K], bits 2i+1:2i of row r hold output row i*M/4 + r as code v + 1; the
  real weight is ``v * weight_scale`` (autobitlinear) or ``v / weight_scale`` (bitlinear);
- latent: absmean per tensor (``ternarize_absmean``), BitNet b1.58's own quantizer;
- ternary: floats that already are ternary x scales (TriLM: one scale per model-parallel shard).

Encoding reuses ``bitnet.formats.ternary``: I2_S holds one scale per tensor and needs K % 128;
TQ1_0 / TQ2_0 hold one f16 scale per 256-block and need K % 256; F16 holds anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.convert.errors import ConvertError
from bitnet.formats import ternary
from bitnet.hal.weight_formats import WeightFormat

__all__ = ["FloatWeight", "TernaryWeight", "check_row_length", "encode_linear", "llama_permute",
           "unpack_hf", "weight_scale"]

# relative gap between nonzero magnitudes that still counts as "one scale": f16 rounding
_SAME_SCALE = 1e-3


@dataclass(frozen=True)
class TernaryWeight:
    values: np.ndarray  # int8 [M, K] in {-1, 0, 1}
    scale: float  # the real weight is values * scale


@dataclass(frozen=True)
class FloatWeight:
    w: np.ndarray  # f32 [M, K]
    ternary: bool  # claimed ternary x scales (TriLM); False: a float linear, written F16


Weight = TernaryWeight | FloatWeight


def unpack_hf(name: str, packed: np.ndarray) -> np.ndarray:
    """HF packed uint8 [M/4, K] -> int8 [M, K]: row-block bit planes (transformers'
    ``unpack_weights``). Code 3 is never written; a tensor holding it is corrupt."""
    # a code is 3 when both of its bits are set: checked on the packed bytes (a quarter of
    # the memory of checking the unpacked codes)
    if np.any(packed & (packed >> 1) & 0x55):
        raise ConvertError(f"tensor {name!r}: packed code 3 (no BitNet packer writes it; the "
                           "checkpoint is corrupt)")
    planes = [((packed >> (2 * i)) & 3).view(np.int8) for i in range(4)]  # each [M/4, K]
    codes = np.concatenate(planes, axis=0)  # int8 [M, K]: plane i holds rows i*M/4 ..
    codes -= 1
    return codes


def weight_scale(name: str, stored: np.ndarray, multiplies: bool) -> float:
    """A packed tensor's ``weight_scale`` (one value) -> the factor its ternary values take."""
    if stored.size != 1:
        raise ConvertError(f"tensor {name!r} has {stored.size} values; bitnet converts one "
                           "scale per tensor (per-channel scales are not supported)")
    value = float(stored.reshape(-1)[0])
    if not np.isfinite(value) or value <= 0:
        raise ConvertError(f"tensor {name!r} is {value}; a weight scale must be positive")
    return value if multiplies else 1.0 / value


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` of Q/K rows: HF's rotate-half order within each head
    (first half, second half) -> interleaved pairs, for "normal" RoPE. [M, K] -> [M, K]."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])  # [H, 2, D/2, K]
            .swapaxes(1, 2)  # [H, D/2, 2, K]
            .reshape(w.shape))


def check_row_length(gguf_name: str, hf_name: str, cols: int, fmt: WeightFormat) -> None:
    """Fail before writing anything when a type cannot hold a tensor's rows."""
    if fmt is WeightFormat.F16 or cols % fmt.block == 0:
        return
    other = [f.value for f in (WeightFormat.I2_S, WeightFormat.TQ2_0) if cols % f.block == 0]
    hint = f"--type {' or --type '.join(other + ['f16'])}"
    raise ConvertError(f"tensor {gguf_name} ({hf_name}): row length {cols} is not a multiple "
                       f"of {fmt.block}, which {fmt.value.upper()} needs; use {hint}")


def encode_linear(name: str, weight: Weight, fmt: WeightFormat) -> tuple[WeightFormat, np.ndarray]:
    """One linear weight in the asked type -> (the type written, its on-disk bytes).

    A float linear that is not ternary (``modules_to_not_convert``) is written F16 whatever the
    type; ternary x several scales cannot be I2_S and is an error suggesting TQ2_0."""
    if isinstance(weight, FloatWeight) and not weight.ternary:
        fmt = WeightFormat.F16
    if fmt is WeightFormat.F16:
        return fmt, _dequantized(weight).astype("<f2").view(np.uint8)
    if fmt is WeightFormat.I2_S:
        t = weight if isinstance(weight, TernaryWeight) else _one_scale(name, weight.w)
        return fmt, ternary.i2s_pack(t.values, t.scale)
    values, d = _block_scales(name, weight, fmt)
    pack = ternary.tq2_pack if fmt is WeightFormat.TQ2_0 else ternary.tq1_pack
    return fmt, pack(values, d)


def _dequantized(weight: Weight) -> np.ndarray:
    if isinstance(weight, TernaryWeight):
        return weight.values.astype(np.float32) * np.float32(weight.scale)
    return weight.w


def _one_scale(name: str, w: np.ndarray) -> TernaryWeight:
    """Ternary-valued floats with one magnitude -> values and that magnitude (for I2_S)."""
    magnitude = np.abs(w)
    nonzero = magnitude[magnitude != 0]
    top = float(nonzero.max()) if nonzero.size else 1.0
    if nonzero.size and float(nonzero.min()) < top * (1 - _SAME_SCALE):
        raise ConvertError(f"tensor {name}: its values have more than one scale "
                           f"({float(nonzero.min()):.4g} .. {top:.4g}); I2_S stores one scale "
                           "per tensor: use --type tq2_0 (one scale per 256 values)")
    return TernaryWeight(np.sign(w).astype(np.int8), top)


def _block_scales(name: str, weight: Weight,
                  fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray]:
    """-> (int8 values [M, K], f32 scales [M, K/256]) for TQ1_0 / TQ2_0. Floats go through
    llama.cpp's quantizer (per-block absmax), checked to reproduce them to f16 rounding."""
    if isinstance(weight, TernaryWeight):
        rows, cols = weight.values.shape
        d = np.full((rows, cols // ternary.QK_K), weight.scale, dtype=np.float32)
        return weight.values, d
    w = weight.w
    values, d = ternary.tq_quantize(w)
    rows, cols = w.shape
    back = (values.reshape(rows, -1, ternary.QK_K) * d[:, :, None]).reshape(rows, cols)
    if np.any(np.abs(back - w) > np.abs(w) * _SAME_SCALE):
        raise ConvertError(f"tensor {name}: not ternary within each 256-value block (a block "
                           f"holds more than one magnitude); {fmt.value.upper()} would change "
                           "it: use --type f16")
    return values, d
