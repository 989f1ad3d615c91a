"""Rank validated backends by a short micro-benchmark on the model's own linear shapes.

The matmuls are where a BitNet forward pass spends its time, so the score is the throughput of
one decode step's ``linear_ternary`` / ``linear_float`` calls (n = 1) in G multiply-accumulates
per second. The work is capped: at most ``MAX_SHAPES`` distinct shapes, each cut to at most
``MAX_ELEMENTS`` weights (fewer rows, same K), and a time budget per shape, so ranking costs well
under a second per backend on a fast device. Results are cached like validation.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np

from bitnet.hal.backend import KernelBackend
from bitnet.hal.weight_formats import TERNARY_FORMATS
from bitnet.registry.requirements import LinearShape

BENCH_VERSION = 2  # part of every cached score's label: bump when the method changes
MAX_SHAPES = 3
MAX_ELEMENTS = 4 * 1024 * 1024  # weights per benchmarked matrix
BUDGET_S = 0.15  # timed seconds per shape, after one warm-up call
MAX_REPS = 20


def bench_shapes(shapes: tuple[LinearShape, ...] | list[LinearShape],
                 backend: KernelBackend) -> list[LinearShape]:
    """The distinct shapes ``backend`` can run, the largest first, capped in number and size."""
    caps = backend.capabilities
    usable = []
    for shape in sorted(set(shapes), key=lambda s: (-s.rows * s.cols, s.format.value, s.rows)):
        claimed = caps.ternary_formats if shape.format in TERNARY_FORMATS else caps.float_formats
        if shape.format not in claimed:
            continue
        rows = shape.rows
        if rows * shape.cols > MAX_ELEMENTS:
            rows = max(1, MAX_ELEMENTS // shape.cols)
        usable.append(LinearShape(shape.format, rows, shape.cols))
        if len(usable) == MAX_SHAPES:
            break
    return usable


def _one_call(backend: KernelBackend, op, weight, x) -> None:
    op(weight, x)
    backend.synchronize()  # asynchronous backends: time the work, not the enqueue


def _time_calls(call, budget_s: float) -> float:
    """The fastest of several timed calls after one warm-up: on a shared, loaded machine the
    minimum is what the backend can do; slower repeats measure the other processes."""
    call()
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < MAX_REPS and (not times or time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(backend: KernelBackend, shapes: list[LinearShape],
            budget_s: float = BUDGET_S) -> float | None:
    """G MAC/s over ``shapes`` (already capped by ``bench_shapes``); None when nothing ran."""
    from bitnet.registry.validation import float_weight, ternary_weight

    if not shapes:
        return None
    rng = np.random.default_rng(7)
    total_macs = 0
    total_s = 0.0
    for shape in shapes:
        if shape.format in TERNARY_FORMATS:
            weight = backend.load_weight(ternary_weight(shape.format, shape.rows, shape.cols, rng))
            op = backend.linear_ternary
        else:
            weight = backend.load_weight(float_weight(shape.format, shape.rows, shape.cols, rng))
            op = backend.linear_float
        x = backend.upload(rng.standard_normal((1, shape.cols)).astype(np.float32))  # [1, K]
        total_s += _time_calls(partial(_one_call, backend, op, weight, x), budget_s)
        total_macs += shape.rows * shape.cols
    return total_macs / max(total_s, 1e-9) / 1e9


def shapes_key(shapes: list[LinearShape]) -> str:
    shapes_text = ";".join(f"{s.format.value}:{s.rows}x{s.cols}" for s in shapes)
    return f"v{BENCH_VERSION}:{shapes_text}"
