"""Random weight tensors for backend tests: ternary (I2_S / TQ2_0 / TQ1_0) and Q6_K.

Shared by the conformance op checks (``bitnet.testing.op_parity``) and backend packages' own
tests, so each backend's tests build the same inputs the same way.
"""

from __future__ import annotations

import numpy as np

from bitnet.formats.floats import quantize_rows
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack
from bitnet.hal import WeightFormat, WeightTensor


def ternary_tensor(fmt: WeightFormat, values: np.ndarray, rng: np.random.Generator,
                   out_scale: float = 1.0) -> WeightTensor:
    """``values`` int8 [M, K] in {-1, 0, 1} packed as ``fmt`` with random positive scales (TQ
    block scales rounded through f16, as GGUF stores them)."""
    rows, cols = values.shape
    if fmt is WeightFormat.I2_S:
        data = i2s_pack(values, float(rng.uniform(0.01, 2.0)))
    else:
        d = rng.uniform(0.01, 2.0, (rows, cols // 256)).astype(np.float16).astype(np.float32)
        data = (tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack)(values, d)
    return WeightTensor("w", fmt, rows, cols, data, out_scale=out_scale)


def q6_k_tensor(rows: int, cols: int, rng: np.random.Generator,
                out_scale: float = 1.0) -> WeightTensor:
    """A Q6_K [rows, cols] head weight (cols a multiple of 256) with per-row magnitudes."""
    w = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 3, (rows, 1))).astype(np.float32)
    return WeightTensor("output.weight", WeightFormat.Q6_K, rows, cols,
                        quantize_rows(WeightFormat.Q6_K, w), out_scale=out_scale)
