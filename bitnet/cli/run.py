"""`bitnet run`: generate text from a prompt."""

from __future__ import annotations

import argparse
import json
import sys

from bitnet.cli.common import (add_model_args, add_sampling_args, fail, load_model,
                               sampling_kwargs, user_errors)

DEFAULT_PROMPT = "Once upon a time"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="generate text from a prompt",
                              description="Generate text from a prompt, streaming it to stdout.")
    add_model_args(p)
    p.add_argument("-p", "--prompt",
                   help=f"the prompt ('-' reads stdin; default: {DEFAULT_PROMPT!r})")
    add_sampling_args(p, max_tokens=128)
    p.add_argument("--receipt", metavar="FILE", help="write a JSON receipt of the run")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (text, tokens, speeds) instead of streaming")
    p.add_argument("--no-prompt", action="store_true", help="do not echo the prompt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prompt = DEFAULT_PROMPT if args.prompt is None else args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    try:
        model = load_model(args)
        pieces = model.generate(prompt, max_tokens=args.max_tokens, stream=True,
                                **sampling_kwargs(args))
        if args.json:
            text = "".join(pieces)
        else:
            if not args.no_prompt:
                sys.stdout.write(prompt)
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            text = None
    except user_errors() as e:
        return fail(str(e))
    stats = model.last_stats
    if args.json:
        print(json.dumps({"text": text, "tokens": stats.tokens,
                          "finish_reason": stats.finish_reason,
                          "prompt_tokens": stats.prompt_tokens,
                          "prompt_tps": round(stats.prompt_tps, 3),
                          "decode_tps": round(stats.decode_tps, 3),
                          "backend": model.backend.name, "device": model.backend.device.spec}))
    else:
        print(f"[{stats.prompt_tokens} prompt tokens at {stats.prompt_tps:.1f} tok/s, "
              f"{stats.generated_tokens} generated at {stats.decode_tps:.1f} tok/s on "
              f"{model.backend.name} ({model.backend.device.name})]", file=sys.stderr)
    if args.receipt:
        from bitnet.core.receipt import write_receipt

        write_receipt(args.receipt, model.receipt())
    return 0
