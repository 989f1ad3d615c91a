"""`bitnet perplexity -m MODEL -f TEXT`: llama-perplexity's figure, to check a model after
converting or quantizing it (the same text and --ctx give figures comparable with llama.cpp's)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bitnet.cli.common import add_model_args, fail, load_model, user_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "perplexity", help="perplexity of a text, measured as llama-perplexity does",
        description="Tokenize TEXT once, cut it into chunks of --ctx tokens, run each from an "
                    "empty context (BOS first when the vocabulary adds one) and score the second "
                    "half of each chunk, as llama.cpp's llama-perplexity does. Prints the running "
                    "figure per chunk and 'Final estimate: PPL = ... +/- ...'.")
    add_model_args(p)
    ctx = next(a for a in p._actions if a.dest == "ctx")
    ctx.help = "tokens per chunk (default 512, or the model's context length if shorter)"
    p.add_argument("-f", "--file", required=True, metavar="TEXT",
                   help="UTF-8 text file ('-' reads stdin)")
    p.add_argument("-b", "--batch", type=int, metavar="N",
                   help="tokens per forward pass within a chunk (default min(ctx, 512))")
    p.add_argument("--chunks", type=int, metavar="N", help="score only the first N chunks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else _read(Path(args.file))
        model = load_model(args)
        result = model.perplexity(text, n_ctx=args.ctx, n_batch=args.batch,
                                  n_chunks=args.chunks)
    except user_errors() as e:
        return fail(str(e))
    where = {"backend": model.backend.name, "device": model.backend.device.spec,
             "model": str(model.path)}
    if args.json:
        print(json.dumps({**result.to_dict(), **where}))
        return 0
    print(",".join(f"[{i + 1}]{p:.4f}" for i, p in enumerate(result.chunk_ppl)))
    print(f"Final estimate: PPL = {result.ppl:.4f} +/- {result.ppl_err:.5f}")
    print(f"[{result.n_scored} tokens scored in {result.n_chunks} chunks of {result.n_ctx} "
          f"({result.n_tokens} in the text), {result.seconds:.1f} s on {model.backend.name} "
          f"({model.backend.device.name})]", file=sys.stderr)
    return 0


def _read(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"no such text file: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start})") from None
