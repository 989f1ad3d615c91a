"""Aggregate decode throughput of `bitnet serve` at 1 and at N concurrent clients, on loopback.

    python benchmarks/serve_concurrency.py [-m FILE] [--device cpu] [--clients 8] [--tokens 32]

Starts the server in this process (uvicorn on 127.0.0.1, a free port), sends a fixed number of
requests (bounded in count and time), and prints tokens/s for one client, for N clients, and the
ratio. Continuous batching is what makes the ratio exceed 1: the N sequences share each decode
step's pass over the weights.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn

import bitnet
from bitnet.server.app import ServerSettings, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(url: str, seed: int, tokens: int) -> int:
    body = {"prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0.8,
            "seed": seed, "ignore_eos": True}
    r = httpx.post(url + "/v1/completions", json=body, timeout=600)
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


def throughput(url: str, clients: int, requests: int, tokens: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(lambda s: one_request(url, s, tokens), range(requests)))
    return done / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", help="GGUF file (default: the bundled demo model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    port = free_port()
    app = create_app(lambda: bitnet.load(args.model, device=args.device, threads=args.threads,
                                         progress=False),
                     ServerSettings(max_batch=max(args.clients, 1)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    health = httpx.get(url + "/health").json()
    one_request(url, 0, 4)  # warm-up
    single = throughput(url, 1, 4, args.tokens)
    many = throughput(url, args.clients, 2 * args.clients, args.tokens)
    server.should_exit = True
    result = {"backend": health["backend"], "device": health["device"],
              "clients": args.clients, "tokens_per_request": args.tokens,
              "single_client_tps": round(single, 2), "concurrent_tps": round(many, 2),
              "ratio": round(many / single, 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{health['backend']} on {health['device']}: 1 client {single:.1f} tok/s, "
              f"{args.clients} clients {many:.1f} tok/s aggregate, ratio {many / single:.2f}x")


if __name__ == "__main__":
    main()
