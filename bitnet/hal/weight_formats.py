"""Weight formats a backend can be asked to hold, and how their bytes are sized.

The numpy codecs for these formats live in ``bitnet.formats``; this module only names them, so a
descriptor can declare what it supports without importing numpy code.
"""

from __future__ import annotations

from enum import Enum


class WeightFormat(str, Enum):
    """A weight tensor's on-disk format. Values are the names ``bitnet inspect`` prints."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    Q8_0 = "q8_0"
    Q6_K = "q6_k"
    TQ1_0 = "tq1_0"
    TQ2_0 = "tq2_0"
    I2_S = "i2_s"

    @property
    def ggml_type(self) -> int:
        return _GGML_TYPE[self]

    @property
    def block(self) -> int:
        """Elements per block along a row (K must be a multiple of it)."""
        return _LAYOUT[self][0]

    @property
    def block_bytes(self) -> int:
        return _LAYOUT[self][1]

    @classmethod
    def from_ggml_type(cls, type_id: int) -> "WeightFormat | None":
        for fmt, tid in _GGML_TYPE.items():
            if tid == type_id:
                return fmt
        return None


class ActivationMode(str, Enum):
    """How ``linear_ternary`` quantizes its input, fixed by the weight format (docs/design.md 4)."""

    PER_TOKEN_I8 = "per_token_i8"  # bitnet.cpp: one absmax int8 scale per token (I2_S)
    Q8_K = "q8_k"  # llama.cpp: one int8 scale per 256 values (TQ1_0, TQ2_0)


_GGML_TYPE = {
    WeightFormat.F32: 0,
    WeightFormat.F16: 1,
    WeightFormat.Q8_0: 8,
    WeightFormat.Q6_K: 14,
    WeightFormat.BF16: 30,
    WeightFormat.TQ1_0: 34,
    WeightFormat.TQ2_0: 35,
    WeightFormat.I2_S: 36,  # the BitNet fork's id; upstream ggml leaves 36 unused
}

# (elements per block, bytes per block). I2_S packs 4 codes per byte in 128-element groups and
# carries one f32 scale for the whole tensor in a 32-byte tail (see tensor_bytes).
_LAYOUT = {
    WeightFormat.F32: (1, 4),
    WeightFormat.F16: (1, 2),
    WeightFormat.BF16: (1, 2),
    WeightFormat.Q8_0: (32, 34),
    WeightFormat.Q6_K: (256, 210),
    WeightFormat.TQ1_0: (256, 54),
    WeightFormat.TQ2_0: (256, 66),
    WeightFormat.I2_S: (128, 32),
}

TERNARY_FORMATS = frozenset({WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0})
FLOAT_FORMATS = frozenset(
    {WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16, WeightFormat.Q8_0, WeightFormat.Q6_K}
)

I2S_TAIL_BYTES = 32  # f32 scale + 28 bytes of padding after the packed codes


def activation_mode_of(fmt: WeightFormat) -> ActivationMode:
    """The activation quantization a ternary format runs with (docs/design.md section 4)."""
    if fmt is WeightFormat.I2_S:
        return ActivationMode.PER_TOKEN_I8
    if fmt in (WeightFormat.TQ1_0, WeightFormat.TQ2_0):
        return ActivationMode.Q8_K
    raise ValueError(f"{fmt.value} is not a ternary format")


def row_bytes(fmt: WeightFormat, k: int) -> int:
    """Bytes of one row of ``k`` elements; raises if ``k`` is not a multiple of the block."""
    if k % fmt.block:
        raise ValueError(f"{fmt.value} needs rows that are a multiple of {fmt.block}, got {k}")
    return k // fmt.block * fmt.block_bytes


def tensor_bytes(fmt: WeightFormat, rows: int, k: int) -> int:
    """Bytes of a rows x k tensor as stored in a GGUF file."""
    body = rows * row_bytes(fmt, k)
    return body + I2S_TAIL_BYTES if fmt is WeightFormat.I2_S else body
