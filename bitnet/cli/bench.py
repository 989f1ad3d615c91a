"""`bitnet bench`: prompt-processing and decode speed of a model on one backend.

Like llama-bench: pp = a batch of random prompt tokens through the model (GEMM path); tg = that
many tokens decoded one at a time from an empty context (GEMV path). Medians over repeats.
``--batch B``: also B sequences decoded together from empty contexts in one paged pool, as
``bitnet serve`` runs them (``Transformer.forward_batch``, replayed where the backend records):
the aggregate tokens a second of all B and its ratio to tg.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from bitnet.cli.common import add_model_args, fail, load_model, user_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="measure prompt and decode tokens per second",
                              description="Measure prompt processing (pp) and decode (tg) speed.")
    add_model_args(p)
    p.add_argument("--prompt", type=int, default=128, metavar="N", help="prompt tokens (pp)")
    p.add_argument("--tokens", type=int, default=64, metavar="N", help="decoded tokens (tg)")
    p.add_argument("-r", "--repeat", type=int, default=3, metavar="N", help="repeats (median)")
    p.add_argument("--batch", type=int, default=1, metavar="B",
                   help="also decode B sequences together (the server's batched step) and "
                        "report their aggregate tokens/s")
    p.add_argument("--json", action="store_true",
                   help='one line: {"prompt_tps": ..., "decode_tps": ..., ...}')
    p.set_defaults(func=run)


def bench_model(model, n_prompt: int, n_tokens: int, repeat: int, batch: int = 1) -> dict:
    from bitnet.core.generate import check_fits, decode_one, prefill

    t = model.transformer
    check_fits(max(n_prompt, n_tokens), t.n_ctx)
    rng = np.random.default_rng(0)
    tokens = [int(x) for x in rng.integers(0, model.config.n_vocab, max(n_prompt, 8))]
    prompt = tokens[:n_prompt]  # may be empty: --prompt 0 times decode alone
    prefill(t, tokens[:8])  # warm-up: first-use costs (kernel builds, page faults)
    pp, tg = [], []
    submissions = None
    for _ in range(repeat):
        if n_prompt:
            t0 = time.perf_counter()
            prefill(t, prompt)
            pp.append(n_prompt / (time.perf_counter() - t0))
        if n_tokens:
            token = prompt[0] if prompt else 1
            before = host_submissions(model.backend, t)
            t0 = time.perf_counter()
            for pos in range(n_tokens):
                logits = decode_one(t, token, pos)
                token = int(np.argmax(logits))
            tg.append(n_tokens / (time.perf_counter() - t0))
            submissions = (host_submissions(model.backend, t) - before) / n_tokens
    together = [batched_decode(model, batch, n_tokens, tokens[0]) for _ in range(repeat)
                if batch > 1 and n_tokens]
    batch_tps = round(statistics.median(r[0] for r in together), 3) if together else None
    return {
        "prompt_tps": round(statistics.median(pp), 3) if pp else None,
        "decode_tps": round(statistics.median(tg), 3) if tg else None,
        "submissions_per_token": round(submissions, 2) if submissions is not None else None,
        "batch": batch, "batch_decode_tps": batch_tps,
        "batch_submissions_per_step": round(together[-1][1], 2) if together else None,
        "prompt_tokens": n_prompt, "decode_tokens": n_tokens, "repeat": repeat,
        "backend": model.backend.name, "device": model.backend.device.name,
        "backend_info": model.backend.info(), "model": str(model.path),
    }


def batched_decode(model, batch: int, n_tokens: int, first: int) -> tuple[float, float]:
    """``batch`` sequences decoded together for ``n_tokens`` steps from empty contexts, each
    in its own blocks of one paged pool -> (aggregate tokens/s, host submissions a step)."""
    from bitnet.hal.kv_blocks import KV_BLOCK, blocks_for

    t = model.transformer
    width = blocks_for(n_tokens)
    pool = t.new_cache(batch * width * KV_BLOCK)
    tables = np.arange(batch * width, dtype=np.int32).reshape(batch, width)
    tokens = (first + np.arange(batch, dtype=np.int32)) % model.config.n_vocab
    positions = np.zeros(batch, np.int32)
    before = host_submissions(model.backend, t)
    t0 = time.perf_counter()
    for step in range(n_tokens):
        logits = t.ops.download(t.replay.decode_rows(tokens, positions, pool,
                                                     tables[:, :blocks_for(step + 1)]))
        tokens = logits.argmax(axis=1).astype(np.int32)
        positions += 1
    seconds = time.perf_counter() - t0
    return batch * n_tokens / seconds, (host_submissions(model.backend, t) - before) / n_tokens


def host_submissions(backend, transformer) -> int:
    """Host submissions so far: the backend's own count (kernel launches, queue submits, graph
    launches) where it keeps one, else the backend calls the forward pass made (each op is then
    one direct call)."""
    count = getattr(backend, "submission_count", lambda: None)()
    if count is not None:
        return count
    return sum(transformer.ops.counts.values())


def run(args: argparse.Namespace) -> int:
    if args.prompt < 0 or args.tokens < 0 or args.repeat < 1 or args.batch < 1:
        return fail("--prompt and --tokens must be >= 0, --repeat and --batch >= 1")
    try:
        model = load_model(args)
        result = bench_model(model, args.prompt, args.tokens, args.repeat, args.batch)
    except user_errors() as e:
        return fail(str(e))
    result["threads"] = args.threads
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model   {model.path.name} ({model.config.arch}, {model.config.n_layers} layers)")
    print(f"backend {model.backend.name} on {model.backend.device.name}  threads={args.threads}")
    if result["prompt_tps"] is not None:
        print(f"pp{args.prompt:<5} {result['prompt_tps']:10.2f} tok/s")
    if result["decode_tps"] is not None:
        print(f"tg{args.tokens:<5} {result['decode_tps']:10.2f} tok/s  "
              f"({result['submissions_per_token']} host submissions a token)")
    if result["batch_decode_tps"] is not None:
        ratio = result["batch_decode_tps"] / result["decode_tps"]
        print(f"tg{args.tokens} x{args.batch:<3} {result['batch_decode_tps']:8.2f} tok/s  "
              f"all {args.batch} sequences, {ratio:.2f}x tg "
              f"({result['batch_submissions_per_step']} host submissions a step)")
    sys.stdout.flush()
    return 0
