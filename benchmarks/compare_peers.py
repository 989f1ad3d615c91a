"""bitnet against bitnet.cpp and llama.cpp (llama-bench) on the same files, interleaved.

The read bandwidth is measured in the same run, as the bound decode is compared against.

    python benchmarks/compare_peers.py [--models DIR] [--threads 1 2] [--rounds 3] [--json]

Engines and files (the 2B-4T shape, benchmarks/make_models.py, written into --models if absent):

- 2b-i2_s-q6_k.gguf: bitnet (cpu plugin) and bitnet.cpp's llama-bench
- 2b-tq2_0-q6_k.gguf: bitnet (cpu plugin) and llama.cpp's llama-bench

The peers' llama-bench binaries come from $BITNET_CPP_BENCH and $LLAMA_BENCH, else from
$PEERS/bitnet.cpp/build/bin/llama-bench and $PEERS/llama.cpp/build/bin/llama-bench
(PEERS=/work/peers); they are built outside this repository as docs/benchmarks.md "Peers
and commands" says (a peer that is missing is reported and left out). Every engine runs pp128
(one batch of 128 tokens) and tg64 (64 tokens decoded one at a time from an empty context), one
repeat per round, each round visiting every (threads, engine, file) once, each run right after a
read-bandwidth probe at its thread count, so all see the same machine load; medians over rounds,
and each engine's best round (on a shared machine a round where another job took a vCPU can
stall any engine's 2-thread decode to a tenth of its speed; the best round is its speed on a
quiet machine).
`--ops-too` adds "bitnet-ops": ours with every block run op by op (BITNET_CPU_LAYERS=ops), the
state before the whole-block decode path, timed in the same rounds; `--before PYTHON` adds
"bitnet-before": `bitnet bench` run by another installation's interpreter (e.g. a checkout of
main's .venv), the before of a change measured in the same rounds.

The bound: a decoded token reads every weight once (the tied embedding once, as the head), so
decode cannot pass bandwidth / weight bytes. `bound` is the fraction of that each engine's
decode reaches, with the median bandwidth of the same rounds (a C reader streaming 1 GiB with
the same threads; best of three passes before each engine's run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEERS = Path(os.environ.get("PEERS", "/work/peers"))
PAIRS = {"i2_s": "bitnet.cpp", "tq2_0": "llama.cpp"}  # file format -> its peer
PEER_ENV = {"bitnet.cpp": "BITNET_CPP_BENCH", "llama.cpp": "LLAMA_BENCH"}
OURS = ("bitnet", "bitnet-ops", "bitnet-before")  # (never a prefix test: "bitnet.cpp")


def peer_binary(name: str) -> Path | None:
    """The peer's llama-bench: $BITNET_CPP_BENCH / $LLAMA_BENCH, else under $PEERS."""
    env = os.environ.get(PEER_ENV[name])
    path = Path(env) if env else PEERS / name / "build" / "bin" / "llama-bench"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def weight_bytes(path: Path) -> int:
    """Bytes a decoded token reads: every tensor once (the tied embedding once, as the head;
    the embedding lookup of one row is negligible)."""
    from bitnet.core.gguf import open_gguf

    with open_gguf(path) as f:
        return sum(info.nbytes for info in f.tensors.values())


def read_bandwidth(threads: int, nbytes: int = 1 << 30) -> float:
    """GB/s of one read of nbytes (> any L3) with `threads` threads: the cpu plugin's probe,
    best of 3 passes over pages touched before the timing."""
    from bitnet_cpu.threads import read_bandwidth as probe

    return probe(threads, np.ones(nbytes, np.uint8), passes=3)


def run_ours(path: Path, threads: int, prompt: int, tokens: int, layers: str = "fused",
             python: str | None = None) -> dict[str, float]:
    cmd = [python or sys.executable, "-m", "bitnet.cli", "bench", "-m", str(path),
           "--device", "cpu", "--threads", str(threads), "--prompt", str(prompt),
           "--tokens", str(tokens), "--repeat", "1", "--json"]
    # another installation runs from / (so this checkout's bitnet/ is not on its path)
    out = _run(cmd, {"BITNET_CPU_LAYERS": layers}, cwd="/" if python else None)
    r = json.loads(out.strip().splitlines()[-1])
    return {"pp": float(r["prompt_tps"]), "tg": float(r["decode_tps"])}


def run_llama_bench(binary: Path, path: Path, threads: int, prompt: int,
                    tokens: int) -> dict[str, float]:
    """llama-bench's own pp and tg (it warms up first), one repeat."""
    out = _run([str(binary), "-m", str(path), "-p", str(prompt), "-n", str(tokens),
                "-t", str(threads), "-r", "1", "-o", "json"])
    result = {}
    for test in json.loads(out[out.index("["):]):
        key = "pp" if test["n_gen"] == 0 else "tg"
        result[key] = float(statistics.median(test["samples_ts"]))
    return result


def _run(cmd: list[str], extra: dict[str, str] | None = None, cwd: str | None = None) -> str:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **(extra or {}))
    if cwd:
        env.pop("PYTHONPATH", None)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def ensure_models(models: Path) -> dict[str, Path]:
    files = {fmt: models / f"2b-{fmt}-q6_k.gguf" for fmt in PAIRS}
    missing = [fmt for fmt, p in files.items() if not p.exists()]
    if missing:
        subprocess.run([sys.executable, str(HERE / "make_models.py"), str(models), "--formats",
                        *missing, "--embed", "q6_k"], check=True)
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=Path("/work/bench-models"),
                   help="folder of the 2B-shape files (written there when absent)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--formats", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--ops-too", action="store_true",
                   help="also time bitnet with every block op by op (bitnet-ops)")
    p.add_argument("--before", metavar="PYTHON",
                   help="also time `bitnet bench` of the installation this interpreter runs")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = p.parse_args()

    files = {fmt: f for fmt, f in ensure_models(args.models).items() if fmt in args.formats}
    nbytes = {fmt: weight_bytes(f) for fmt, f in files.items()}
    engines: list[tuple[str, str]] = []  # (engine, format)
    for fmt in files:
        engines.append(("bitnet", fmt))
        if args.ops_too:
            engines.append(("bitnet-ops", fmt))
        if args.before:
            engines.append(("bitnet-before", fmt))
        peer = PAIRS[fmt]
        if peer_binary(peer) is None:
            print(f"note: {peer}'s llama-bench not found (${PEER_ENV[peer]} or "
                  f"{PEERS / peer}/build/bin): see docs/benchmarks.md, 'Peers and commands'",
                  file=sys.stderr)
        else:
            engines.append((peer, fmt))

    samples: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    bandwidth: dict[int, list[float]] = {t: [] for t in args.threads}
    for rnd in range(args.rounds):
        for threads in args.threads:
            for engine, fmt in engines:
                bandwidth[threads].append(read_bandwidth(threads))
                if engine in OURS:
                    r = run_ours(files[fmt], threads, args.prompt, args.tokens,
                                 "ops" if engine == "bitnet-ops" else "fused",
                                 args.before if engine == "bitnet-before" else None)
                else:
                    r = run_llama_bench(peer_binary(engine), files[fmt], threads, args.prompt,
                                        args.tokens)
                samples.setdefault((engine, fmt, threads), []).append(r)
                if not args.json:
                    print(f"  round {rnd + 1}/{args.rounds} t={threads} {engine:10s} {fmt:6s} "
                          f"pp {r['pp']:7.2f} tg {r['tg']:6.2f}  "
                          f"({bandwidth[threads][-1]:.1f} GB/s)", file=sys.stderr, flush=True)

    rows = []
    for (engine, fmt, threads), rs in samples.items():
        bw = statistics.median(bandwidth[threads])
        pp = statistics.median(r["pp"] for r in rs)
        tg = statistics.median(r["tg"] for r in rs)
        bound = bw * 1e9 / nbytes[fmt]
        rows.append({"engine": engine, "file": files[fmt].name, "format": fmt,
                     "threads": threads, "pp_tps": round(pp, 2), "tg_tps": round(tg, 2),
                     "pp_best": round(max(r["pp"] for r in rs), 2),
                     "tg_best": round(max(r["tg"] for r in rs), 2),
                     "bandwidth_gbs": round(bw, 2), "tg_bound_tps": round(bound, 2),
                     "tg_fraction_of_bound": round(tg / bound, 3),
                     "rounds": rs})
    for row in rows:
        if row["engine"] not in OURS:
            continue
        peer = next((r for r in rows if r["engine"] == PAIRS[row["format"]]
                     and r["format"] == row["format"] and r["threads"] == row["threads"]), None)
        if peer:
            row["vs"] = PAIRS[row["format"]]
            row["pp_ratio"] = round(row["pp_tps"] / peer["pp_tps"], 3)
            row["tg_ratio"] = round(row["tg_tps"] / peer["tg_tps"], 3)
            row["tg_best_ratio"] = round(row["tg_best"] / peer["tg_best"], 3)
    if args.json:
        print(json.dumps({"rounds": args.rounds, "prompt": args.prompt, "tokens": args.tokens,
                          "weight_bytes": nbytes, "bandwidth_gbs": bandwidth, "results": rows}))
        return
    print(f"medians of {args.rounds} interleaved rounds (best round in brackets); pp{args.prompt} /"
          f" tg{args.tokens} tok/s; bound = decode / (read bandwidth / weight bytes), same rounds")
    print(f"{'engine':13s} {'file':20s} {'thr':>3s} {'pp':>8s} {'tg (best)':>16s} {'GB/s':>6s} "
          f"{'bound':>6s}  ratio pp / tg (best tg)")
    for row in sorted(rows, key=lambda r: (r["format"], r["threads"], r["engine"] not in OURS,
                                           r["engine"])):
        ratio = (f"{row['pp_ratio']:.2f}x / {row['tg_ratio']:.2f}x ({row['tg_best_ratio']:.2f}x)"
                 f" vs {row['vs']}" if "vs" in row else "")
        print(f"{row['engine']:13s} {row['file']:20s} {row['threads']:3d} {row['pp_tps']:8.2f} "
              f"{row['tg_tps']:7.2f} ({row['tg_best']:6.2f}) {row['bandwidth_gbs']:6.1f} "
              f"{row['tg_fraction_of_bound']:6.0%}  {ratio}")


if __name__ == "__main__":
    main()
