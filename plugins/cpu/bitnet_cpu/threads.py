"""How many threads the cpu backend uses when the user does not say.

Prompt processing is compute-bound: it gets every physical core. Decoding one token reads every
weight once and little else, so it scales only until the memory bus is full; past that knee more
threads add only fork/join and barrier waits (each a stall when the OS takes a vCPU away). The
decode default is that knee: the fewest threads (1, 2, 4, ... and all cores) whose read bandwidth
is within KNEE of the best rate measured, measured once per process with the plugin's own reader
(1 GiB: on the 2-vCPU dev VM a 256 MiB read showed 2 threads at 17-22 GB/s against 33 for one,
where 1 GiB showed 36 against 33). Up to SMALL cores decode simply uses them all: there the
probe would cost ~0.3 s of every load to save little (2 threads decode 34-40 tok/s against 28
for one on that VM when quiet).
The kernels still have compute to spare per core there (a decode GEMV runs ~37 GB/s from cache
on one Zen 4 core), so reading at the bus limit is what decode needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

import numpy as np

KNEE = 0.95  # fraction of the best measured read bandwidth the decode threads must reach
PROBE_BYTES = 1 << 30  # larger than the last-level cache of any CPU we target
SMALL = 4  # up to this many cores, decode uses every one (no probe)


def candidates(cores: int) -> list[int]:
    """1, 2, 4, ... below ``cores``, then ``cores``."""
    out, t = [], 1
    while t < cores:
        out.append(t)
        t *= 2
    return out + [max(1, cores)]


def knee(cores: int, bandwidth: Callable[[int], float]) -> int:
    """The fewest candidate threads reading at least KNEE x the best candidate's rate."""
    if cores <= 1:
        return 1
    rates = {t: bandwidth(t) for t in candidates(cores)}
    best = max(rates.values())
    return min(t for t, r in rates.items() if r >= KNEE * best)


def read_bandwidth(threads: int, buf: np.ndarray, passes: int = 2) -> float:
    """GB/s of reading ``buf`` once with ``threads`` threads, best of ``passes``."""
    from bitnet_cpu import _kernels

    best = 0.0
    for _ in range(passes):
        t0 = time.perf_counter()
        _kernels.read_once(buf, threads)
        best = max(best, buf.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


@lru_cache(maxsize=None)
def decode_threads(cores: int) -> int:
    """The decode knee on this machine (~0.3-0.6 s the first time in a process, above SMALL
    cores; up to SMALL cores: all of them)."""
    if cores <= SMALL:
        return max(1, cores)
    buf = np.ones(PROBE_BYTES, np.uint8)  # touched: no page faults inside the timing
    return knee(cores, lambda t: read_bandwidth(t, buf))
