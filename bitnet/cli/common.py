"""Options and error handling shared by the commands that load a model (run, chat, bench, serve)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", metavar="FILE",
                   help="GGUF model file, or hf://OWNER/NAME[/FILE] from the Hugging Face Hub "
                        "(default: the bundled demo model)")
    p.add_argument("--device", metavar="SPEC",
                   help="auto, cpu, reference, cuda, cuda:1, opencl:0, vulkan, or an ordered list "
                        "like cuda,cpu (default: $BITNET_DEVICE, else auto)")
    p.add_argument("-t", "--threads", type=int, metavar="N", help="CPU threads")
    p.add_argument("--ternarize", action="store_true",
                   help="run F32/F16/BF16 weights ternarized (absmean) with int8 activations")
    p.add_argument("--activation", choices=("silu", "relu2"),
                   help="FFN gating instead of the file's (e.g. silu for a 1bitLLM model a "
                        "converter labelled bitnet-b1.58; `bitnet inspect` says which applies)")
    p.add_argument("-c", "--ctx", type=int, metavar="N", help="context length to allocate")
    p.add_argument("--revalidate", action="store_true",
                   help="re-run backend validation instead of trusting the cache")
    p.add_argument("--pretokenizer", metavar="NAME",
                   help="override a BPE vocabulary's tokenizer.ggml.pre (e.g. llama3, falcon3, "
                        "gpt-2, default); see docs/usage.md")


def add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("-n", "--max-tokens", type=int, default=max_tokens, metavar="N",
                   help=f"tokens to generate at most (default {max_tokens})")
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="0 disables (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="1 disables (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="0 disables (default 0.05)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="1 disables (default 1.0)")
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--seed", type=int, help="random seed: the same seed gives the same text")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past EOS/EOT")


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"temperature": args.temp, "top_k": args.top_k, "top_p": args.top_p,
            "min_p": args.min_p, "repeat_penalty": args.repeat_penalty,
            "presence_penalty": args.presence_penalty,
            "frequency_penalty": args.frequency_penalty, "seed": args.seed,
            "stop": args.stop, "ignore_eos": args.ignore_eos}


def load_model(args: argparse.Namespace) -> Any:
    import bitnet

    return bitnet.load(args.model, device=args.device, threads=args.threads,
                       ternarize=args.ternarize, n_ctx=args.ctx, revalidate=args.revalidate,
                       pretokenizer=args.pretokenizer, activation=args.activation)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input, printed as one line instead of a traceback."""
    errors: list[type[BaseException]] = [FileNotFoundError, ValueError, PermissionError]
    try:
        from bitnet.registry import BackendSelectionError

        errors.append(BackendSelectionError)
    except ImportError:
        pass
    return tuple(errors)


def fail(message: str, code: int = 2) -> int:
    print(f"bitnet: error: {message}", file=sys.stderr)
    return code
