"""Device-side RoPE tables for backends that rotate by table lookup instead of calling cos/sin.

The contract's angle for position p and pair i of a D-wide head is ``p * theta**(-2i/D)``
(KernelBackend.rope), computed in float64 as the reference does. ``RopeTables`` computes cos and
sin of it on the host once per (theta, D), hands them to the backend's upload function and keeps
the device copies, growing them by doubling, so decode steps upload nothing. Backend-neutral: it
knows nothing of the device beyond ``upload`` and the table dtype.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

MIN_POSITIONS = 4096  # first table size; later sizes double


def rope_angles(theta: float, head_dim: int, positions: int) -> np.ndarray:
    """f64 [positions, head_dim/2]: angle ``p * theta**(-2i/D)`` of position p, pair i."""
    inv_freq = np.float64(theta) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    return np.arange(positions, dtype=np.float64)[:, None] * inv_freq[None, :]


class RopeTables:
    """cos/sin tables [P, D/2] on a device, one pair per (theta, D), P grown by doubling.

    ``upload`` takes a contiguous host array and returns the device handle to keep; ``dtype`` is
    the table element type (float64 where the device has it, then rope matches the reference
    bit for bit; else float32).
    """

    def __init__(self, upload: Callable[[np.ndarray], Any], dtype: Any) -> None:
        self._upload = upload
        self._dtype = np.dtype(dtype)
        self._tables: dict[tuple[float, int], tuple[Any, Any, int]] = {}

    def get(self, theta: float, head_dim: int, positions: int) -> tuple[Any, Any]:
        """Device (cos, sin) tables covering positions 0 .. positions-1 at least."""
        key = (float(theta), head_dim)
        cached = self._tables.get(key)
        if cached is not None and cached[2] >= positions:
            return cached[0], cached[1]
        size = max(positions, MIN_POSITIONS, 2 * cached[2] if cached else 0)
        angles = rope_angles(theta, head_dim, size)
        cos_t = self._upload(np.cos(angles).astype(self._dtype))
        sin_t = self._upload(np.sin(angles).astype(self._dtype))
        self._tables[key] = (cos_t, sin_t, size)
        return cos_t, sin_t

    def positions(self, theta: float, head_dim: int) -> int:
        """How many positions the (theta, D) tables on the device cover (0: none yet)."""
        cached = self._tables.get((float(theta), head_dim))
        return cached[2] if cached else 0

    def clear(self) -> None:
        """Drop the device tables (the backend frees their memory)."""
        self._tables.clear()
