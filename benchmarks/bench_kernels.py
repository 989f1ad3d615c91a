"""Time the bitnet-cpu kernels on the exact 2B-4T matmul shapes (no model file needed).

    python benchmarks/bench_kernels.py [--threads 1 2] [--variants avx2 avx512] [--repeat 7]
        [--stream]

Prints the median time per call, G ternary MAC/s (or GB/s of weights streamed for GEMV), for
decode (n=1) and prompt (n=128) on 2560x2560, 640x2560, 6912x2560, 2560x6912 and the
128256x2560 Q6_K / F16 tied head. Random ternary weights; Q6_K bytes are random but valid.

A single weight of the 2B shapes fits the last-level cache (4.4 MB at most), so repeated calls
time the kernel from cache. ``--stream`` times decode GEMVs (n=1) as a decode token reads them:
each pass calls one GEMV on each of enough distinct copies of the weight to fill STREAM_BYTES,
so every byte comes from memory, and prints the best pass of ``--repeat`` (min of many: the
machine is shared) next to the read bandwidth measured with the same threads just before.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bitnet.hal.backend import WeightTensor
from bitnet.hal.device import DeviceInfo, DeviceKind
from bitnet.hal.weight_formats import WeightFormat, row_bytes
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack

SHAPES = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]  # (M, K)
HEAD = (128256, 2560)
DEVICE = DeviceInfo(backend="cpu", index=0, name="bench", kind=DeviceKind.CPU)


def ternary_weight(fmt: WeightFormat, m: int, k: int, rng: np.random.Generator) -> WeightTensor:
    values = rng.integers(-1, 2, size=(m, k)).astype(np.int8)
    if fmt is WeightFormat.I2_S:
        return WeightTensor("w", fmt, m, k, i2s_pack(values, 0.5))
    d = np.full((m, k // 256), 0.5, np.float32)
    pack = tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack
    return WeightTensor("w", fmt, m, k, pack(values, d))


def head_weight(fmt: WeightFormat, rng: np.random.Generator) -> WeightTensor:
    m, k = HEAD
    if fmt is WeightFormat.F16:
        data = rng.standard_normal((m, k)).astype(np.float16).view(np.uint8)
        return WeightTensor("token_embd.weight", fmt, m, k, data)
    data = rng.integers(0, 256, size=(m, row_bytes(fmt, k)), dtype=np.uint8)
    blocks = data.reshape(m, k // 256, 210)
    blocks[:, :, 208:210] = np.array([0.01], np.float16).view(np.uint8)  # finite d
    return WeightTensor("token_embd.weight", fmt, m, k, data)


CLOCK = time.perf_counter
STREAM_BYTES = 256 << 20  # distinct weight bytes a --stream pass reads (>> the 32 MB L3)


def median_time(fn, repeat: int) -> float:
    """Median seconds per call (wall clock, or process CPU time with --cpu-time: on a shared,
    oversubscribed machine CPU time of a 1-thread run is the steadier figure)."""
    fn()  # warm-up: page faults, OpenMP thread start
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times) if CLOCK is time.process_time else statistics.median(times)


def stream_gemv(call, copies: int, repeat: int, probe: np.ndarray, threads: int):
    """(best seconds per GEMV, best read GB/s) over `repeat` passes, each one call on each of
    `copies` weights right after one read of `probe` (the bound, taken in the same moments)."""
    from bitnet_cpu.threads import read_bandwidth

    best, bound = float("inf"), 0.0
    for _ in range(repeat + 1):  # the first pass faults the outputs in
        bound = max(bound, read_bandwidth(threads, probe, passes=1))
        t0 = time.perf_counter()
        for c in range(copies):
            call(c)
        best = min(best, (time.perf_counter() - t0) / copies)
    return best, bound


def stream(cpu, tensors: dict, heads: dict, threads: int, repeat: int,
           rng: np.random.Generator) -> None:
    """--stream: decode GEMVs with every weight byte from memory (see the module docstring)."""
    probe = np.ones(STREAM_BYTES, np.uint8)
    kern = cpu.kernels
    jobs = [(f"{fmt:6s} {m:5d}x{k:<5d}", t) for (fmt, (m, k)), t in tensors.items()]
    jobs += [(f"{fmt.value:6s} head {HEAD[0]}x{HEAD[1]}", t) for fmt, t in heads.items()]
    for label, tensor in jobs:
        first = cpu.load_weight(tensor)
        nbytes = (first.codes if first.codes is not None else first.raw).nbytes
        weights = [first] + [cpu.load_weight(tensor)
                             for _ in range(max(0, -(-STREAM_BYTES // nbytes) - 1))]
        x = rng.standard_normal((1, tensor.cols)).astype(np.float32)
        y = np.empty((1, tensor.rows), np.float32)
        if first.codes is not None:
            def call(c: int) -> None:
                w = weights[c]
                kern.linear_ternary(w.format.ggml_type, w.codes, w.scales, w.rows, w.cols, x,
                                    y, w.out_scale, threads)
        else:
            def call(c: int) -> None:
                w = weights[c]
                kern.linear_float(w.format.ggml_type, w.raw, w.cols, x, y, w.out_scale, threads)
        sec, bound = stream_gemv(call, len(weights), repeat, probe, threads)
        rate = nbytes / sec / 1e9
        print(f"{label} n=1 {sec * 1e6:9.1f} us {rate:6.1f} GB/s  read {bound:5.1f} GB/s "
              f"({rate / bound:.0%}; {len(weights)} copies)")
        del weights, first


def main() -> None:
    from bitnet_cpu.backend import CpuBackend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=["avx2", "avx512"])
    parser.add_argument("--formats", nargs="+", default=["i2_s", "tq2_0", "tq1_0"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--no-head", action="store_true")
    parser.add_argument("--stream", action="store_true",
                        help="decode GEMVs streamed from memory (distinct weight copies)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with process CPU time instead of the wall clock")
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    rng = np.random.default_rng(0)
    tensors = {(f, s): ternary_weight(WeightFormat(f), *s, rng) for f in args.formats
               for s in SHAPES}
    heads = {} if args.no_head else {f: head_weight(f, rng)
                                     for f in (WeightFormat.Q6_K, WeightFormat.F16)}
    for variant in args.variants:
        for threads in args.threads:
            cpu = CpuBackend(DEVICE, threads=threads, variant=variant)
            print(f"== {variant}, {threads} thread(s)")
            if args.stream:
                q6_k = {f: t for f, t in heads.items() if f is WeightFormat.Q6_K}  # the 2B head
                stream(cpu, tensors, q6_k, threads, args.repeat, rng)
                continue
            for (fmt, (m, k)), tensor in tensors.items():
                w = cpu.load_weight(tensor)
                for n in (1, args.prompt):
                    x = cpu.upload(rng.standard_normal((n, k)).astype(np.float32))
                    sec = median_time(lambda: cpu.linear_ternary(w, x), args.repeat)
                    gmacs = m * k * n / sec / 1e9
                    gbs = w.codes.nbytes / sec / 1e9
                    print(f"{fmt:6s} {m:5d}x{k:<5d} n={n:<4d} {sec * 1e3:8.3f} ms "
                          f"{gmacs:7.1f} GMAC/s {gbs:6.1f} GB/s")
            for fmt, tensor in heads.items():
                w = cpu.load_weight(tensor)
                x = cpu.upload(rng.standard_normal((1, HEAD[1])).astype(np.float32))
                sec = median_time(lambda: cpu.linear_float(w, x), args.repeat)
                print(f"{fmt.value:6s} head {HEAD[0]}x{HEAD[1]} n=1 {sec * 1e3:8.3f} ms "
                      f"{w.raw.nbytes / sec / 1e9:6.1f} GB/s")


if __name__ == "__main__":
    main()
