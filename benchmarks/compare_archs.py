"""Speed per weight byte of two model files on one backend, measured interleaved in one process.

    python benchmarks/compare_archs.py A.gguf B.gguf [--device cpu] [--threads N] [--rounds 5]
        [--prompt 64] [--tokens 16]

Meant for files with the same matmul shapes in different archs (``benchmarks/make_models.py``
with and without ``--llama``): an arch ``llama`` file should run its ternary matmuls exactly as
fast as a ``bitnet-b1.58`` one (its Q/K rows are permuted once at load, never per step; it also
skips the two sub-norms). Rounds alternate A and B so that load on a shared machine hits both
alike; each figure is the best round. Prints prompt (pp) and decode (tg) tokens/s of each file,
per MB of matmul weights, and the ratio B / A.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import bitnet


def _weight_mb(model) -> float:
    weights = [lin.weight for layer in model.transformer.layers for lin in vars(layer).values()
               if hasattr(lin, "weight") and hasattr(lin.weight, "rows")]
    return sum(w.rows * w.cols for w in weights) / 4 / 1e6  # 2 bits per ternary weight


def _round(model, prompt: np.ndarray, tokens: int) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s) of one prefill of ``prompt`` then ``tokens`` steps."""
    t = model.transformer
    cache = t.new_cache()
    t0 = time.perf_counter()
    t.ops.download(t.forward(prompt, 0, last_only=True, cache=cache))
    t1 = time.perf_counter()
    for i in range(tokens):
        t.ops.download(t.forward(prompt[i:i + 1], len(prompt) + i, last_only=False, cache=cache))
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), tokens / (t2 - t1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--tokens", type=int, default=16)
    args = p.parse_args()
    models = [bitnet.load(path, device=args.device, threads=args.threads,
                          progress=False) for path in (args.a, args.b)]
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, min(m.config.n_vocab for m in models), args.prompt).astype(np.int32)
    best = [[0.0, 0.0], [0.0, 0.0]]
    for m in models:
        _round(m, prompt[:8], 2)  # warm-up
    for _ in range(args.rounds):
        for i, m in enumerate(models):
            pp, tg = _round(m, prompt, args.tokens)
            best[i] = [max(best[i][0], pp), max(best[i][1], tg)]
    for path, m, (pp, tg) in zip((args.a, args.b), models, best):
        mb = _weight_mb(m)
        print(f"{path}: arch {m.config.arch}, {mb:.0f} MB ternary weights: pp {pp:.1f} t/s, "
              f"tg {tg:.2f} t/s ({tg * mb:.0f} MB/s)")
    print(f"ratio B/A: pp {best[1][0] / best[0][0]:.3f}, tg {best[1][1] / best[0][1]:.3f} "
          f"(same matmul shapes: 1.0 = same speed per weight byte)")


if __name__ == "__main__":
    main()
