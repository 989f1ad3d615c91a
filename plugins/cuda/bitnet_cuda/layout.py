"""Host-side repacking of a WeightTensor into the arrays the CUDA kernels read (numpy, load time).

Nothing here touches the GPU, so every layout is unit-tested on hosts without one. The splitting
itself is shared with the other GPU plugins (bitnet.hal.device_layout); what is CUDA's own is
which split each format gets and ``decode_layout``, the kernels' arithmetic. Layouts:

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
  scale d); the decoded value ``scale * code`` is bit-identical to bitnet.formats.dequantize.
- ``q6k``: Q6_K split into its integer parts (``split_q6_k_ints``): int8 ``codes`` [M, K] in
  -32..31, int8 ``sub`` [M, K/16] sub-block scales, f32 ``d`` [M, K/256], what llama.cpp's
  Q6_K x Q8_K dot reads (hal ``linear_float``). 1.08 bytes per weight instead of 0.82, in
  exchange for aligned 16-byte loads (one vector = one sub-block) and no bit unpacking; embed
  decodes ``(d * sub) * code``, bit-identical to bitnet.formats.dequantize.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitnet.hal.device_layout import (
    float_rows,
    group_values,
    split_i2s,
    split_q6_k_ints,
    split_q8_0,
    split_tq2,
    tq1_as_tq2,
)
from bitnet.formats.ternary import QK_K, i2s_code_values, tq2_code_values
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import WeightFormat


@dataclass(frozen=True)
class DeviceLayout:
    """A weight in the device's own layout, still on the host: named arrays to upload."""

    kind: str  # "i2s", "tq", "f32", "f16", "bf16", "i8g" or "q6k": picks the kernel family
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
    fmt = tensor.format
    if fmt is WeightFormat.I2_S:
        codes, scale = split_i2s(tensor)
        return DeviceLayout("i2s", rows, cols, {"codes": codes}, w_scale=scale)
    if fmt in (WeightFormat.TQ2_0, WeightFormat.TQ1_0):
        codes, d = split_tq2(tensor) if fmt is WeightFormat.TQ2_0 else tq1_as_tq2(tensor)
        return DeviceLayout("tq", rows, cols, {"codes": codes, "d": d})
    if fmt is WeightFormat.F32:
        return DeviceLayout("f32", rows, cols, {"w": float_rows(tensor).view("<f4")})
    if fmt in (WeightFormat.F16, WeightFormat.BF16):
        return DeviceLayout(fmt.value, rows, cols, {"w": float_rows(tensor).view("<u2")})
    if fmt is WeightFormat.Q8_0:
        codes, scale = split_q8_0(tensor)
        return DeviceLayout("i8g", rows, cols, {"codes": codes, "scale": scale}, group=32)
    if fmt is WeightFormat.Q6_K:
        codes, sub, d = split_q6_k_ints(tensor)
        return DeviceLayout("q6k", rows, cols, {"codes": codes, "sub": sub, "d": d})
    raise ValueError(f"{tensor.name}: bitnet-cuda has no layout for {fmt.value}")


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
        return group_values(layout.arrays["codes"], layout.arrays["scale"])
    if layout.kind == "q6k":
        groups = QK_K // 16
        d_sub = layout.arrays["sub"].astype(np.float32) * np.repeat(layout.arrays["d"], groups,
                                                                    axis=1)  # exact
        return group_values(layout.arrays["codes"], d_sub)
    values = ternary_values(layout).astype(np.float32)
    if layout.kind == "i2s":
        return values * np.float32(layout.w_scale)
    d = layout.arrays["d"]
    return (values.reshape(rows, -1, QK_K) * d[:, :, None]).reshape(rows, cols)


def ternary_values(layout: DeviceLayout) -> np.ndarray:
    """int8 [M, K] in {-1, 0, 1} from an ``i2s`` or ``tq`` layout's codes."""
    if layout.kind == "i2s":
        return i2s_code_values(layout.arrays["codes"])
    if layout.kind == "tq":
        return tq2_code_values(layout.arrays["codes"])
    raise ValueError(f"ternary_values: {layout.kind} is not a ternary layout")
