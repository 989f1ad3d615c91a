"""llama.cpp's speed on a GGUF file, measured like llama-bench (pp = one batch of N random
tokens; tg = M tokens decoded one at a time from an empty context). Runs in the benchmark venv
that has llama-cpp-python (never in the test venv):

    /work/bench-venv/bin/python benchmarks/llamacpp_bench.py FILE --threads 1 --json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from llama_cpp import Llama


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    llm = Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                n_ctx=max(256, args.prompt + args.tokens), n_batch=max(args.prompt, 1),
                n_ubatch=max(args.prompt, 1), verbose=False)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(0, llm.n_vocab(), args.prompt)]
    llm.eval(prompt[:8])  # warm-up (page faults, thread start), like our bench
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp = args.prompt / (time.perf_counter() - t0)
    llm.reset()
    token = prompt[0]
    t0 = time.perf_counter()
    for _ in range(args.tokens):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    tg = args.tokens / (time.perf_counter() - t0)
    result = {"prompt_tps": round(pp, 3), "decode_tps": round(tg, 3)}
    text = f"pp{args.prompt} {pp:.2f}  tg{args.tokens} {tg:.2f}"
    print(json.dumps(result) if args.json else text)


if __name__ == "__main__":
    main()
