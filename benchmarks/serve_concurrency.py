"""Aggregate decode throughput of `bitnet serve` at 1 and at N concurrent clients, on loopback.

    python benchmarks/serve_concurrency.py [-m FILE] [--device cpu] [--threads 1]
                                           [--clients 8] [--tokens 128] [--requests 8]
                                           [--rounds 3] [--json]

Starts `bitnet serve` as its own process on 127.0.0.1 (a free port), as it is deployed, then sends
a fixed number of requests (bounded in count and time) from client threads that each keep one
HTTP connection open, as an app's client library does. Prints, for one client and for N:

- end to end: completion tokens / wall time, seen by the clients (HTTP, prefill and all);
- decode: the server's own decode-phase rate over the same window (its /metrics counters), the
  figure continuous batching is about: N sequences share each decode step's pass over the weights.

A ratio above 1 is what batching buys; 1.0 would mean requests are served one after another.
The clients run at the lowest CPU priority (nice 19), so on a machine with few cores they
do not take CPU time from the server they measure. The 1-client and N-client measurements alternate for ``--rounds`` rounds (a shared machine's
noise hits both alike) and the medians are reported, with every round's figures in --json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[str, float]:
    """The scheduler's counters from /metrics (name -> value; labelled series skipped)."""
    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class Clients:
    """N worker threads, each with its own persistent connection."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(n)

    def _client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(base_url=self.url, timeout=600)
        return self.local.client

    def one(self, seed: int, tokens: int) -> int:
        body = {"prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0.8,
                "seed": seed, "ignore_eos": True}
        r = self._client().post("/v1/completions", json=body)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    def run(self, requests: int, tokens: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        done = sum(self.pool.map(lambda s: self.one(s, tokens), range(requests)))
        return done, time.perf_counter() - t0


def measure(url: str, clients: int, requests: int, tokens: int) -> dict[str, float]:
    c = Clients(url, clients)
    c.run(clients, 4)  # open every connection and warm up
    before = scrape(url)
    done, wall = c.run(requests, tokens)
    after = scrape(url)
    c.pool.shutdown()
    # the server's decode rate over this window: tokens decoded / seconds spent in decode steps
    steps = after["bitnet_decode_steps_total"] - before["bitnet_decode_steps_total"]
    seconds = after["bitnet_decode_seconds_total"] - before["bitnet_decode_seconds_total"]
    tokens_decoded = after["bitnet_decoded_tokens_total"] - before["bitnet_decoded_tokens_total"]
    return {"end_to_end_tps": done / wall, "decode_tps": tokens_decoded / seconds,
            "mean_batch": tokens_decoded / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", help="GGUF file (default: the bundled demo model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128, help="max_tokens of every request")
    p.add_argument("--requests", type=int, default=8, help="requests per client per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating 1-client / N-client rounds")
    p.add_argument("--json", action="store_true", help="one JSON line")
    args = p.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "bitnet.cli.main", "serve", "--port", str(port),
           "--device", args.device, "--max-batch", str(max(args.clients, 1)),
           "--log-level", "warning"]
    cmd += ["-m", args.model] if args.model else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    server = subprocess.Popen(cmd, env={**os.environ, "BITNET_LOG": "warning"})
    # The clients are the load generator, not the system under test: on a small machine they
    # share its cores with the server, so they run at the lowest priority and take only the CPU
    # the server leaves (on two vCPUs, 8 client threads at normal priority took a core's worth
    # from the server's decode steps).
    os.nice(19)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None:
                sys.exit(f"the server exited with status {server.returncode}")
            if time.monotonic() > deadline:
                sys.exit("the server did not become ready within 600 s")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        health = httpx.get(url + "/health").json()
        rounds = []
        for _ in range(args.rounds):
            rounds.append((measure(url, 1, args.requests, args.tokens),
                           measure(url, args.clients, args.requests * args.clients, args.tokens)))
    finally:
        server.terminate()
        server.wait(timeout=30)
    single = {k: statistics.median(r[0][k] for r in rounds) for k in rounds[0][0]}
    many = {k: statistics.median(r[1][k] for r in rounds) for k in rounds[0][1]}
    result = {"backend": health["backend"], "device": health["device"],
              "clients": args.clients, "tokens_per_request": args.tokens,
              "requests_per_client": args.requests, "rounds": args.rounds,
              "single": {k: round(v, 2) for k, v in single.items()},
              "concurrent": {k: round(v, 2) for k, v in many.items()},
              "decode_ratio": round(many["decode_tps"] / single["decode_tps"], 2),
              "end_to_end_ratio": round(many["end_to_end_tps"] / single["end_to_end_tps"], 2),
              "decode_ratio_per_round": [round(m["decode_tps"] / s["decode_tps"], 2)
                                         for s, m in rounds]}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{health['backend']} on {health['device']}, {args.tokens} tokens per request, "
          f"medians of {args.rounds} alternating rounds")
    for label, r in (("1 client", single), (f"{args.clients} clients", many)):
        print(f"  {label:>10}: decode {r['decode_tps']:8.1f} tok/s (mean batch "
              f"{r['mean_batch']:.1f}), end to end {r['end_to_end_tps']:8.1f} tok/s")
    print(f"  ratio: decode {result['decode_ratio']:.2f}x, "
          f"end to end {result['end_to_end_ratio']:.2f}x (decode ratio per round: "
          f"{', '.join(f'{r:.2f}x' for r in result['decode_ratio_per_round'])})")


if __name__ == "__main__":
    main()
