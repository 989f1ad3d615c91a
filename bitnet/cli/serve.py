"""`bitnet serve`: the OpenAI-compatible server (pip install bitnet[server])."""

from __future__ import annotations

import argparse
import os
import sys
import time

from bitnet.cli.common import add_model_args, fail
from bitnet.server.defaults import DEFAULT_MAX_BATCH, DEFAULT_PREFILL_CHUNK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve the OpenAI API (completions, chat) over HTTP",
        description="Serve a model through the OpenAI API with continuous batching. Binds to "
                    "127.0.0.1 unless told otherwise. Needs: pip install bitnet[server].")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", help="the model id clients send (default: the file's stem)")
    p.add_argument("--api-key", action="append", metavar="KEY",
                   help="require this key (repeatable; also $BITNET_API_KEY, comma-separated)")
    p.add_argument("--rate-limit", type=int, metavar="N", help="requests per minute per key")
    p.add_argument("--max-tokens-limit", type=int, default=4096,
                   help="largest max_tokens a request may ask for (default 4096)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20)
    p.add_argument("--max-batch", type=_positive, default=DEFAULT_MAX_BATCH,
                   help="most sequences decoded together (continuous batching; default "
                        f"{DEFAULT_MAX_BATCH}); the KV pool bounds how many fit")
    p.add_argument("--kv-memory", type=_kv_memory, metavar="SIZE|FRACTION",
                   help="memory of the KV block pool: a size (512MB, 4GB) or a fraction of free "
                        "memory (0.5); default: --max-batch whole contexts, at most half the "
                        "free memory")
    p.add_argument("--prefill-chunk", type=_positive, default=DEFAULT_PREFILL_CHUNK, metavar="N",
                   help="prompt tokens prefilled between two decode steps (default "
                        f"{DEFAULT_PREFILL_CHUNK})")
    p.add_argument("--max-waiting", type=int, default=256, help="queued requests before 429")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow this browser origin (repeatable; CORS is off by default)")
    p.add_argument("--ray", action="store_true", help="deploy on Ray Serve (pip install ray[serve])")
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --ray)")
    p.add_argument("--min-replicas", type=int, help="autoscaling lower bound (with --ray)")
    p.add_argument("--max-replicas", type=int, help="autoscaling upper bound (with --ray)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting one")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace):
    from pathlib import Path

    from bitnet.server.app import ServerSettings

    keys = list(args.api_key or [])
    keys += [k for k in os.environ.get("BITNET_API_KEY", "").split(",") if k]
    name = args.model_name or (Path(args.model).stem if args.model else "bitnet-demo")
    return ServerSettings(model_name=name, api_keys=keys, rate_limit=args.rate_limit,
                          max_request_bytes=args.max_request_bytes,
                          max_tokens_limit=args.max_tokens_limit,
                          cors_origins=list(args.cors_origin or []), max_batch=args.max_batch,
                          max_waiting=args.max_waiting, kv_memory=args.kv_memory,
                          prefill_chunk=args.prefill_chunk)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _kv_memory(text: str) -> str:
    """argparse's check of --kv-memory (the app parses it again where it makes the pool)."""
    from bitnet.server.kv_memory import parse_kv_memory

    try:
        parse_kv_memory(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        return fail(f"the server needs extra packages ({e.name}): pip install bitnet[server]")
    settings = settings_from_args(args)
    if args.ray:
        return _run_ray(args, settings)
    import bitnet
    from bitnet.server.app import create_app

    def load():
        return bitnet.load(args.model, device=args.device, threads=args.threads,
                           ternarize=args.ternarize, n_ctx=args.ctx, revalidate=args.revalidate,
                           pretokenizer=args.pretokenizer, progress=False,
                           activation=args.activation)

    app = create_app(load, settings)
    # The model's worker thread gives up the GIL inside every kernel; when a kernel returns
    # while the event loop holds the GIL, the worker waits until the loop blocks or the switch
    # interval (5 ms by default) forces a hand-over: on a small model that is longer than a
    # whole decode step. 0.5 ms bounds that wait.
    sys.setswitchinterval(0.0005)
    base = f"http://{args.host}:{args.port}"
    print(f"bitnet: serving {settings.model_name} on {base}/v1 (chat page at {base}/, API docs "
          f"at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _run_ray(args: argparse.Namespace, settings) -> int:
    try:
        from bitnet.server import ray_serve
    except ImportError as e:
        return fail(f"--ray needs Ray Serve ({e.name}): pip install 'ray[serve]'")
    app = ray_serve.deployment(args.model, args.device, args.threads, args.ternarize, args.ctx,
                               settings, args.replicas, args.min_replicas, args.max_replicas,
                               activation=args.activation)
    ray_serve.run(app, args.host, args.port, args.ray_address)
    print(f"bitnet: Ray Serve deployment with {args.replicas} replica(s) on "
          f"http://{args.host}:{args.port}/v1; Ctrl-C stops it", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        ray_serve.shutdown()
    return 0
