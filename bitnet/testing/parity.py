"""How two runs' logits are compared: the one rule every parity test here uses.

The fixtures README states it for llama.cpp's and bitnet.cpp's outputs, and the family, convert,
cross-check and conformance tests reuse it: per-position cosine similarity of the logits (in
float64), and the same argmax wherever the reference's top-2 margin is clear. Random ternary
models are chaotic (one last-ulp difference can flip an int8 rounding), so positions whose top
two logits nearly tie are not asked to agree.
"""

from __future__ import annotations

import numpy as np


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two [n, V] arrays, computed in float64 -> f64 [n]."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def clear_margin(row: np.ndarray) -> bool:
    """A top-2 margin above 0.5 and above a quarter of the logits' std (the fixtures' rule)."""
    top2 = np.sort(row)[-2:]
    return bool(top2[1] - top2[0] > max(0.5, float(row.std()) / 4))
