"""Where a decode step's (or a prompt's) time goes, op by op, on any backend.

    python benchmarks/profile_ops.py [-m FILE] [--device cuda] [--batch 1 8] [--steps 20]
        [--fused] [--bandwidth] [--compare-rows ROUNDS] [--prefill 128]

For each batch size B it runs decode steps of B sequences (``Transformer.forward`` for B = 1,
``forward_batch`` above) twice: plain, as the engine runs them (the step time to trust), then
with every backend op timed between two ``synchronize`` calls, which charges each op its own
device time plus its host overhead (and adds a synchronization per op, so the synced step is
slower than the plain one). The gap between the two totals is what asynchronous launch hides;
on a GPU a synced op of a few microseconds of kernel means the host is the bottleneck.

Each matmul line shows the bytes its weight streams per step and the rate (GB/s) it reached;
"between ops" is the synced step's time outside every op (the model's own Python). Blocks run
op by op (a backend's whole-block ``decode_layer`` is switched off) unless ``--fused``, which
adds a plain step with them on. ``--bandwidth`` (cpu plugin) measures the read bandwidth with
the same threads in the same run, the bound the matmul rates are compared against.

``--compare-rows ROUNDS`` times only plain batched steps (B > 1), alternating ROUNDS times
between the backend's own ``attention_rows`` and the HAL's default composition (rope,
attention, slice_rows and concat_rows, row by row: the "before" of a backend's batched
attention), in one process on one model, and prints the median wall and process-CPU
milliseconds of each (CPU time counts the runtime's worker threads too, and moves less than
wall time on a loaded machine).

``--prefill N`` profiles prompts instead: one prefill of N tokens from position 0 (only the last
token's logits, as ``bitnet bench`` times pp), plain and synced per op, ``--steps`` of each;
each matmul line then shows its rate in G multiply-adds a second.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

import bitnet
from bitnet.core.model import COUNTED_OPS, Linear, matmul_op
from bitnet.hal.backend import KernelBackend
from bitnet.hal.kv_blocks import KV_BLOCK, blocks_for
from bitnet.hal.weight_formats import tensor_bytes


class OpTimer:
    """Wraps the backend's ops (and every Linear's bound op) with synchronized timers."""

    def __init__(self, transformer: Any) -> None:
        self.t = transformer
        self.ops = transformer.ops
        self.plain = {name: getattr(self.ops, name, None) for name in COUNTED_OPS}
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)
        self.macs: dict[str, int] = defaultdict(int)

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        sync = self.ops.synchronize

        def run(*args: Any, **kwargs: Any) -> Any:
            sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            key = name
            if name.startswith("linear"):
                w = args[0]
                key = f"{name}[{w.format.value} {w.rows}x{w.cols}]"
                self.bytes[key] += tensor_bytes(w.format, w.rows, w.cols)
                self.macs[key] += w.rows * w.cols * args[1].shape[0]
            self.seconds[key] += time.perf_counter() - t0
            self.calls[key] += 1
            return out
        return run

    def enable(self, on: bool) -> None:
        for name, fn in self.plain.items():
            if fn is None:
                continue
            setattr(self.ops, name, self._timed(name, fn) if on else fn)
        # the gate op was bound once at load (Transformer.gate): bind it again
        self.t.gate = getattr(self.ops, "relu2_mul" if self.t.config.activation == "relu2"
                              else "silu_mul")
        linears = [v for layer in self.t.layers for v in vars(layer).values()]
        for lin in [*linears, *vars(self.t).values()]:
            if isinstance(lin, Linear):
                lin.run = matmul_op(self.ops, lin.weight.format)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.bytes.clear()
        self.macs.clear()

    def report(self, runs: int, total_ms: float, top: int, prompt: bool) -> None:
        """The ops of ``runs`` timed runs, slowest first, per run; then the time between them
        (``total_ms``: one plain-equivalent run)."""
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:top]
        for key, seconds in ranked:
            per = seconds / runs
            if prompt and self.macs[key]:
                rate = f"  {self.macs[key] / seconds / 1e9:7.1f} G MAC/s"
            elif self.bytes[key]:
                rate = (f"  {self.bytes[key] / runs / 1e6:7.1f} MB "
                        f"{self.bytes[key] / seconds / 1e9:5.1f} GB/s")
            else:
                rate = ""
            print(f"   {key:38s} {per * 1e3:8.3f} ms  x{self.calls[key] // runs}{rate}")
        inside = sum(self.seconds.values()) / runs * 1e3
        print(f"   {'between ops (the model loop)':38s} {total_ms - inside:8.3f} ms")


def decode_steps(t: Any, timer: OpTimer, batch: int, steps: int,
                 prompt: int) -> tuple[float, float]:
    """Mean milliseconds of one decode step of `batch` sequences, each after a `prompt`-token
    prompt (attention's share grows with it): (wall, process CPU)."""
    # one sequence in a cache of its own (as bitnet run decodes); a batch in one paged pool (as
    # bitnet serve runs it), a table of blocks each
    per_seq = blocks_for(prompt + steps)
    pool = t.new_cache(batch * per_seq * KV_BLOCK)
    tables = np.arange(batch * per_seq, dtype=np.int32).reshape(batch, per_seq)
    for table in tables:
        t.forward(np.arange(prompt, dtype=np.int32) % 100 + 1, 0, True, pool,
                  None if batch == 1 else table)
    timer.reset()
    ids = np.full(batch, 7, np.int32)
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        if batch == 1:
            t.ops.download(t.forward(ids, prompt + step, True, pool))
        else:
            positions = np.full(batch, prompt + step, np.int32)
            t.ops.download(t.forward_batch(ids, positions, pool, tables))
    return ((time.perf_counter() - t0) / steps * 1e3,
            (time.process_time() - c0) / steps * 1e3)


def compare_rows(t: Any, timer: OpTimer, batches: list[int], rounds: int, steps: int,
                 prompt: int) -> None:
    """Plain batched steps, alternating the backend's own attention_rows with the HAL's
    default composition; medians of ``rounds`` (--compare-rows)."""
    ops = t.ops
    modes = {"own": ops.attention_rows,
             "composed": types.MethodType(KernelBackend.attention_rows, ops)}
    for batch in [b for b in batches if b > 1]:
        times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, method in modes.items():
                ops.attention_rows = method
                times[mode].append(decode_steps(t, timer, batch, steps, prompt))
        ops.attention_rows = modes["own"]
        for mode, runs in times.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            each = ", ".join(f"{w:.1f}" for w, _ in runs)
            print(f"B={batch} attention_rows {mode:8s}: step {wall:7.2f} ms wall "
                  f"({each}), {cpu:7.2f} ms CPU")


def prefills(t: Any, timer: OpTimer, n: int, runs: int) -> float:
    """Median milliseconds of one prefill of n tokens from position 0 (last token's logits)."""
    from bitnet.core.generate import prefill

    ids = [int(i) for i in np.arange(n) * 37 % 1000 + 1]
    prefill(t, ids[:8])  # warm-up
    timer.reset()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        prefill(t, ids)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def read_bandwidth(threads: int, nbytes: int = 1 << 30) -> float | None:
    """GB/s of one read of 1 GiB with `threads` threads (the cpu plugin's probe, best of 3);
    None without the cpu plugin."""
    try:
        from bitnet_cpu.threads import read_bandwidth as probe
    except ImportError:
        return None
    return probe(threads, np.ones(nbytes, np.uint8), passes=3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", help="GGUF file (default: the bundled demo model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompt", type=int, default=5, help="tokens in each sequence before decoding")
    p.add_argument("--top", type=int, default=14, help="ops listed per run")
    p.add_argument("--fused", action="store_true",
                   help="also time plain steps with the backend's whole-block decode_layer")
    p.add_argument("--bandwidth", action="store_true",
                   help="measure the read bandwidth in the same run (cpu plugin)")
    p.add_argument("--compare-rows", type=int, metavar="ROUNDS",
                   help="only batched steps: the backend's attention_rows against the HAL's "
                        "default composition, alternating ROUNDS times")
    p.add_argument("--prefill", type=int, metavar="N",
                   help="profile prefills of N tokens instead of decode steps")
    args = p.parse_args()
    model = bitnet.load(args.model, device=args.device, threads=args.threads, progress=False)
    t = model.transformer
    timer = OpTimer(t)
    fused = t.fused
    print(model)
    threads = model.backend.info().get("threads", args.threads or 1)
    if args.bandwidth:
        bw = read_bandwidth(threads)
        print(f"read bandwidth, {threads} threads: "
              f"{'n/a (no cpu plugin)' if bw is None else f'{bw:.1f} GB/s'}")
    if args.compare_rows:
        compare_rows(t, timer, args.batch, args.compare_rows, args.steps, args.prompt)
        return
    if args.prefill:
        for label, synced in (("plain", False), ("synced per op", True)):
            timer.enable(synced)
            ms = prefills(t, timer, args.prefill, args.steps)
            print(f"prefill of {args.prefill} tokens, {label}: {ms:.1f} ms "
                  f"({args.prefill / ms * 1e3:.1f} tok/s)")
            if synced:
                timer.report(args.steps, ms, args.top, prompt=True)
        timer.enable(False)
        return
    for batch in args.batch:
        runs = [("plain, blocks op by op", False, False), ("synced per op", True, False)]
        if args.fused and batch == 1 and any(f is not None for f in fused):
            runs.insert(0, ("plain, whole-block decode_layer", False, True))
        for label, synced, whole in runs:
            t.fused = fused if whole else [None] * len(fused)
            timer.enable(synced)
            ms, _ = decode_steps(t, timer, batch, args.steps, args.prompt)
            print(f"B={batch} {label}: step {ms:.2f} ms")
            if synced:
                timer.report(args.steps, ms, args.top, prompt=False)
    t.fused = fused
    timer.enable(False)


if __name__ == "__main__":
    main()
