"""The ``bitnet`` command: an argparse parser whose subcommands are modules ``bitnet.cli.<name>``.

Each subcommand module exposes ``register(subparsers) -> None``, which adds its parser and sets
``func=run`` with ``run(args) -> int``. Modules are imported only when needed (the one named on the
command line, or all of them for ``--help``), and a module that is missing or fails to import
leaves a stub that explains why, so one broken subcommand never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Sequence

import bitnet

SUBCOMMANDS = ("run", "chat", "bench", "perplexity", "pull", "devices", "validate", "inspect",
               "serve")


def _stub(subparsers: argparse._SubParsersAction, name: str, problem: str) -> None:
    """A placeholder subcommand that explains why the real one could not load."""
    parser = subparsers.add_parser(name, help=f"(unavailable: {problem.splitlines()[0]})",
                                   add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace) -> int:
        print(f"bitnet {name} is unavailable: {problem}", file=sys.stderr)
        return 2

    parser.set_defaults(func=run)


def _register(subparsers: argparse._SubParsersAction, name: str) -> None:
    try:
        module = importlib.import_module(f"bitnet.cli.{name}")
        module.register(subparsers)
    except ModuleNotFoundError as exc:
        if exc.name == f"bitnet.cli.{name}":
            _stub(subparsers, name, "this subcommand is not part of this installation")
        else:
            _stub(subparsers, name, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        _stub(subparsers, name, f"{type(exc).__name__}: {exc}{where}")


def _wanted(argv: Sequence[str]) -> list[str]:
    """Only the subcommand named in argv (cheap start-up), or all of them for help/usage."""
    for arg in argv:
        if arg.startswith("-"):
            continue
        return [arg] if arg in SUBCOMMANDS else list(SUBCOMMANDS)
    return list(SUBCOMMANDS)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitnet",
        description="Run 1.58-bit (ternary) language models on whatever hardware you have.",
        epilog="`bitnet devices` lists backends; `bitnet <command> --help` for details.")
    parser.add_argument("--version", action="version", version=f"bitnet {bitnet.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log selection details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _wanted(argv):
        _register(subparsers, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s")
    logging.getLogger("huggingface_hub").propagate = False  # it prints its own; once is enough
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from bitnet.registry import BackendSelectionError

    try:
        return int(func(args) or 0)
    except BackendSelectionError as exc:
        print(f"bitnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
