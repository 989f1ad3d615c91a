"""One decode token's attention op on the cpu plugin: a contiguous KV cache, and (hal API 3 and
later) the same context through a shuffled block table of a pool; with ``--batch B``, also
``attention_rows`` for B sequences at that context (one pool and B block tables on API 3, B
caches of their own on API 2).

    python benchmarks/attention_paged.py [--ctx 64 1000] [--heads 20 5 128] [--threads 1]
        [--variant avx512] [--rounds 300] [--batch 8]

Each figure is the min and the median over ``--rounds`` of 10 back-to-back calls (n = 1 at
position ctx: ctx + 1 positions attended), through the backend op, so its Python checks are
included. The min is the figure to compare on a shared machine. Run it with another tree's
packages on PYTHONPATH to compare two builds: on an API 2 tree there is no paged row.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bitnet.hal.api import API_VERSION
from bitnet.hal.device import DeviceInfo, DeviceKind


def timed(call, rounds: int) -> tuple[float, float]:
    """(min, median) microseconds of one call, over rounds of 10 calls."""
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(10):
            call()
        per.append((time.perf_counter() - t0) / 10 * 1e6)
    return min(per), statistics.median(per)


def rows_call(b, rng, batch: int, ctx: int, n_blocks: int, h: int, kv: int, d: int):
    """attention_rows of ``batch`` sequences, each at position ctx: on API 3 one pool, sequence
    r in blocks r*n_blocks.. (its table), on API 2 a cache per sequence."""
    q, k, v = (b.upload(rng.standard_normal((batch, w)).astype(np.float32))
               for w in (h * d, kv * d, kv * d))
    if API_VERSION >= 3:
        pool = b.kv_cache_alloc(1, batch * n_blocks * 16, kv, d)
        tables = np.arange(batch * n_blocks, dtype=np.int32).reshape(batch, n_blocks)
        positions = np.full(batch, ctx, np.int32)
        return lambda: b.attention_rows(q, k, v, pool, 0, positions, h, kv, d, 1e4, tables)
    caches = [b.kv_cache_alloc(1, n_blocks * 16, kv, d) for _ in range(batch)]
    return lambda: b.attention_rows(q, k, v, caches, 0, [ctx] * batch, h, kv, d, 1e4)


def main() -> None:
    from bitnet_cpu.backend import CpuBackend

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ctx", type=int, nargs="+", default=[64, 1000])
    p.add_argument("--heads", type=int, nargs=3, default=[20, 5, 128],
                   metavar=("H", "HKV", "D"), help="default: the 2B model's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", help="kernel table (default: the best this CPU runs)")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--batch", type=int, default=0, help="also attention_rows of B sequences")
    args = p.parse_args()
    h, kv, d = args.heads
    b = CpuBackend(DeviceInfo(backend="cpu", index=0, name="cpu", kind=DeviceKind.CPU),
                   args.threads, args.variant)
    print(f"{b.kernels.name} kernels, {args.threads} thread(s), {h}/{kv} heads of {d}, "
          f"hal API {API_VERSION}")
    for ctx in args.ctx:
        n_blocks = -(-(ctx + 1) // 16)
        rows = n_blocks * 16
        cache = b.kv_cache_alloc(1, rows, kv, d)
        rng = np.random.default_rng(0)
        for plane in (cache.k, cache.v):  # f16 bits of N(0, 1) values, as a model stores
            plane[:] = rng.standard_normal(plane.shape).astype(np.float16).view(np.uint16)
        q, k, v = (b.upload(rng.standard_normal((1, w)).astype(np.float32))
                   for w in (h * d, kv * d, kv * d))
        runs = {"contiguous": lambda: b.attention(q, k, v, cache, 0, ctx, h, kv, d)}
        if API_VERSION >= 3:  # its own generator: every tree times the same values
            table = np.random.default_rng(ctx).permutation(n_blocks).astype(np.int32)
            runs["paged"] = lambda: b.attention(q, k, v, cache, 0, ctx, h, kv, d, table=table)
        if args.batch:
            runs[f"rows B={args.batch}"] = rows_call(b, rng, args.batch, ctx, n_blocks, h, kv, d)
        for name, call in runs.items():
            low, mid = timed(call, args.rounds)
            print(f"ctx {ctx:5d} {name:12s} min {low:8.1f} us  median {mid:8.1f} us")


if __name__ == "__main__":
    main()
