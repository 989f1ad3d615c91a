"""`bitnet chat`: an interactive conversation that streams the model's replies."""

from __future__ import annotations

import argparse
import sys

from bitnet.cli.common import (add_model_args, add_sampling_args, fail, load_model,
                               sampling_kwargs, user_errors)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chat", help="chat with a model interactively",
                              description="Chat with a model. Empty line or Ctrl-D quits; "
                                          "/reset starts over.")
    add_model_args(p)
    p.add_argument("-s", "--system", help="a system message")
    add_sampling_args(p, max_tokens=256)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        model = load_model(args)
    except user_errors() as e:
        return fail(str(e))
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        if line.strip() == "/reset":
            history = history[:1] if args.system else []
            continue
        history.append({"role": "user", "content": line.rstrip("\n")})
        reply = []
        try:
            for piece in model.chat(history, max_tokens=args.max_tokens, stream=True,
                                    **sampling_kwargs(args)):
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except user_errors() as e:
            history.pop()
            print(file=sys.stdout)
            fail(str(e))
            continue
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(reply)})
