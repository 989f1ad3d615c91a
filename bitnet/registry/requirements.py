"""What a model needs from a backend; the registry filters and ranks candidates against it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bitnet.hal.weight_formats import WeightFormat
from bitnet.hal.ops import Op


@dataclass(frozen=True)
class LinearShape:
    """One matmul the model runs: weight format, M (rows) and K (cols). Used to rank backends."""

    format: WeightFormat
    rows: int
    cols: int


@dataclass(frozen=True)
class ModelRequirements:
    ops: frozenset[Op]
    ternary_formats: frozenset[WeightFormat]
    float_formats: frozenset[WeightFormat]
    linear_shapes: tuple[LinearShape, ...] = field(default_factory=tuple)
    n_ctx: int = 0
    weight_bytes: int = 0  # bytes of all weights as stored; the backend's device must hold them
