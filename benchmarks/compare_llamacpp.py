"""bitnet (through `bitnet bench`) against llama.cpp (through llama-cpp-python) on the same
GGUF files, same threads, interleaved round by round; prints medians and ratios.

    python benchmarks/compare_llamacpp.py --ours FILE [--peer FILE] [--threads 1 2] [--rounds 3]
        [--peer-python /work/bench-venv/bin/python]

`--ours` is the file bitnet runs, `--peer` the one llama.cpp runs (default: the same file;
llama.cpp cannot read I2_S, so an I2_S file is compared against the TQ2_0 file of the same
weights). The machine is shared and noisy: only ratios measured in one run are meaningful.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ours(path: str, threads: int, prompt: int, tokens: int) -> dict:
    return run_json([sys.executable, "-m", "bitnet.cli", "bench", "-m", path, "--device", "cpu",
                     "--threads", str(threads), "--prompt", str(prompt), "--tokens",
                     str(tokens), "--repeat", "1", "--json"])


def peer(python: str, path: str, threads: int, prompt: int, tokens: int) -> dict:
    return run_json([python, str(HERE / "llamacpp_bench.py"), path, "--threads", str(threads),
                     "--prompt", str(prompt), "--tokens", str(tokens), "--json"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", required=True)
    parser.add_argument("--peer")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--peer-python", default="/work/bench-venv/bin/python")
    args = parser.parse_args()
    peer_path = args.peer or args.ours
    for threads in args.threads:
        rows: dict[str, list[dict]] = {"bitnet": [], "llama.cpp": []}
        for _ in range(args.rounds):  # interleaved: both see the same machine load
            rows["bitnet"].append(ours(args.ours, threads, args.prompt, args.tokens))
            rows["llama.cpp"].append(peer(args.peer_python, peer_path, threads, args.prompt,
                                          args.tokens))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("prompt_tps", "decode_tps")}
               for k, v in rows.items()}
        print(f"threads={threads} bitnet={Path(args.ours).name} llama.cpp={Path(peer_path).name}"
              f" rounds={args.rounds}")
        for name, m in med.items():
            print(f"  {name:10s} pp{args.prompt} {m['prompt_tps']:8.2f}  tg{args.tokens} "
                  f"{m['decode_tps']:8.2f} tok/s")
        print(f"  ratio      pp {med['bitnet']['prompt_tps'] / med['llama.cpp']['prompt_tps']:.2f}x"
              f"  tg {med['bitnet']['decode_tps'] / med['llama.cpp']['decode_tps']:.2f}x")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
