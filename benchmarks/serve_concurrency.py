"""The serving benchmark: `bitnet serve` side by side with llama.cpp's `llama-server`.

    python benchmarks/serve_concurrency.py -m FILE --threads 2 [--llama-server PATH]
        [--clients 1 8 32 64 256] [--tokens 64] [--workloads concurrency prefix long]
        [--rounds 1] [--json]

Each engine runs as its own process on 127.0.0.1, on the same GGUF file and thread count,
started fresh for every measurement (so its peak memory is that measurement's). The clients send
streaming `/v1/completions` requests with token-id prompts (both servers take them, so both see
the same tokens), greedy, `ignore_eos`, a fixed `max_tokens`; they run at the lowest CPU
priority so, on a small machine, they take only what the server leaves. Workloads:

- ``concurrency``: N clients (each one connection), each sending requests back to back; aggregate
  completion tokens/s, time to first token (TTFT) and inter-token latency (ITL) at p50/p99, and
  the server's peak resident memory (VmHWM).
- ``prefix``: requests sharing a 1,000-token prefix with a short distinct tail, one at a time
  after a first that fills the cache: TTFT of a request whose prefix is cached, against a cold
  request of the same length (bitnet: block-level prefix reuse; llama-server: `cache_prompt`).
- ``long``: 4 streams decode while a 2,000-token prompt arrives; p99 ITL of the running streams
  in the window in which it is admitted, against the same streams without it.
- ``chats`` (bitnet only): 64 chats of 512 positions (448 prompt tokens, 64 generated) sent at
  once to a server whose KV pool is the memory 8 whole-context slots took before the paged pool
  (``--kv-memory`` = 8 x ``--chat-ctx`` positions); the most sequences admitted at once, the
  preemptions (both read from ``/metrics`` while it runs) and peak resident memory.

llama-server is started with `--parallel N` (one slot per client, continuous batching on), a
context of N x the per-request length, `--threads`/`--threads-batch`, and an HTTP thread
per client; bitnet serve with
`--max-batch N`. Build llama-server as docs/serving.md says.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

PREFIX_TOKENS = 1000
LONG_PROMPT = 2000
CHATS, CHAT_PROMPT, CHAT_TOKENS, OLD_SLOTS = 64, 448, 64, 8
CHAT_WAIT = 7200  # seconds a chat client waits for a byte (its prompt queues behind 63 others)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


VOCAB = [32000]  # set from the file in main()


def prompt_ids(seed: int, n: int) -> list[int]:
    """n token ids, deterministic per seed (a linear congruential walk over the vocabulary,
    past its first tenth where the special tokens sit)."""
    low = VOCAB[0] // 10
    out, x = [], seed * 2654435761 % 2**32
    for _ in range(n):
        x = (1103515245 * x + 12345) % 2**31
        out.append(low + x % (VOCAB[0] - low))
    return out


def vocab_size(path: str) -> int:
    from bitnet.core.gguf import open_gguf

    return len(open_gguf(path).metadata["tokenizer.ggml.tokens"])


def position_bytes(path: str) -> int:
    """Bytes of K and V (f16) of one position over every layer of the file's model."""
    from bitnet.core.config import ModelConfig
    from bitnet.core.gguf import open_gguf

    c = ModelConfig.from_metadata(open_gguf(path).metadata)
    return c.n_layers * 2 * c.n_kv_heads * c.head_dim * 2


@dataclass
class Engine:
    """How to start one server: the command for a port, a client count and a context."""

    name: str
    model: str
    threads: int
    binary: str | None = None  # llama-server's path; None: bitnet serve
    device: str = "auto"  # bitnet serve's --device
    extra: list[str] = field(default_factory=list)

    def command(self, port: int, clients: int, ctx: int) -> list[str]:
        if self.binary is None:
            return [sys.executable, "-m", "bitnet.cli.main", "serve", "-m", self.model,
                    "--port", str(port), "--device", self.device,
                    "--threads", str(self.threads), "--max-batch",
                    str(clients), "--log-level", "warning", *self.extra]
        return [self.binary, "-m", self.model, "--port", str(port), "-t", str(self.threads),
                "-tb", str(self.threads), "--parallel", str(clients), "-c",
                str(ctx * clients), "--cont-batching", "--threads-http", str(clients + 4),
                "--log-disable", *self.extra]


class Server:
    """One engine process, started and ready, stopped on exit."""

    def __init__(self, engine: Engine, clients: int, ctx: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(engine.command(self.port, clients, ctx),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "BITNET_LOG": "warning"})
        deadline = time.monotonic() + 900
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{engine.name} exited with status {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"{engine.name} was not ready within 900 s")
            try:
                health = httpx.get(self.url + "/health", timeout=2)
                if health.status_code == 200:
                    break
                if '"status":"error"' in health.text.replace(" ", ""):  # bitnet: load failed
                    self.proc.kill()
                    raise RuntimeError(f"{engine.name} failed to load: {health.text}")
            except httpx.HTTPError:
                pass
            time.sleep(0.25)

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory (VmHWM), MB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Stream:
    """One streamed request: when it was sent, when each piece of text arrived."""

    sent: float
    arrivals: list[float]

    @property
    def ttft(self) -> float:
        return self.arrivals[0] - self.sent

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]


def stream(url: str, prompt: list[int], tokens: int, wait: float = 900) -> Stream:
    """One streaming completion on a connection of its own (llama-server closes a kept-alive
    connection after a streamed response, or while its client waits); raises unless it ran to
    max_tokens. ``wait``: seconds without a byte before the client gives up."""
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}
    sent = time.perf_counter()
    arrivals: list[float] = []
    finish = None
    with httpx.Client(base_url=url, timeout=wait) as client, \
            client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice.get("text"):
                arrivals.append(time.perf_counter())
            finish = choice.get("finish_reason") or finish
    if finish != "length" or not arrivals:
        raise RuntimeError(f"a request ended with finish_reason {finish!r} after "
                           f"{len(arrivals)} pieces")
    return Stream(sent, arrivals)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_clients(url: str, clients: int, requests: int, prompt_len: int,
                tokens: int) -> tuple[list[Stream], float]:
    """``clients`` client threads, ``requests`` requests in all, back to back; -> streams,
    wall."""

    def one(i: int, n: int = tokens) -> Stream:
        return stream(url, prompt_ids(i, prompt_len), n)

    with ThreadPoolExecutor(clients) as pool:
        # warm up: every connection open, every slot used once (2 tokens each)
        list(pool.map(lambda i: one(i, 2), range(clients)))
        t0 = time.perf_counter()
        streams = list(pool.map(one, range(clients, clients + requests)))
    return streams, time.perf_counter() - t0


def concurrency(engine: Engine, clients: int, tokens: int, prompt_len: int,
                per_client: int) -> dict[str, float]:
    with Server(engine, clients, prompt_len + tokens + 16) as server:
        streams, wall = run_clients(server.url, clients, clients * per_client, prompt_len,
                                    tokens)
        gaps = [g for s in streams for g in s.gaps]
        return {"tok_s": len(streams) * tokens / wall,
                "ttft_p50_ms": 1e3 * pct([s.ttft for s in streams], 0.5),
                "ttft_p99_ms": 1e3 * pct([s.ttft for s in streams], 0.99),
                "itl_p50_ms": 1e3 * pct(gaps, 0.5), "itl_p99_ms": 1e3 * pct(gaps, 0.99),
                "peak_rss_mb": server.peak_rss_mb()}


def prefix(engine: Engine, tokens: int, repeats: int = 4) -> dict[str, float]:
    shared = prompt_ids(7, PREFIX_TOKENS)
    with Server(engine, 1, PREFIX_TOKENS + 64 + tokens) as server:
        url = server.url
        stream(url, shared + prompt_ids(100, 16), 4)  # fills the cache with the prefix
        cold, warm = [], []
        for i in range(repeats):
            warm.append(stream(url, shared + prompt_ids(200 + i, 16), tokens).ttft)
            cold.append(stream(url, prompt_ids(300 + i, PREFIX_TOKENS + 16), tokens).ttft)
        return {"ttft_cached_prefix_ms": 1e3 * statistics.median(warm),
                "ttft_cold_ms": 1e3 * statistics.median(cold)}


def long_prompt(engine: Engine, tokens: int, running: int = 4) -> dict[str, float]:
    """p99 ITL of ``running`` streams without, then with, a LONG_PROMPT-token prompt arriving
    while they decode (the window: from its send until its first token)."""
    decode = 4 * tokens
    with Server(engine, running + 1, LONG_PROMPT + decode + 16) as server:
        def streams_with(arrival: bool) -> tuple[list[Stream], tuple[float, float]]:
            window = [0.0, 0.0]
            with ThreadPoolExecutor(running + 1) as pool:
                futures = [pool.submit(stream, server.url, prompt_ids(50 + i, 32), decode)
                           for i in range(running)]
                if arrival:
                    time.sleep(1.0)  # the streams are decoding
                    s = stream(server.url, prompt_ids(99, LONG_PROMPT), 1)
                    window = [s.sent, s.arrivals[0]]
                return [f.result() for f in futures], (window[0], window[1])

        streams_with(False)  # warm up
        quiet, _ = streams_with(False)
        busy, (start, end) = streams_with(True)

        def gaps_in(streams: list[Stream], lo: float, hi: float) -> list[float]:
            """Gaps that overlap the window: a stall that outlasts the admission (an engine
            that holds every stream until the prompt is in) counts too."""
            return [b - a for s in streams for a, b in zip(s.arrivals, s.arrivals[1:])
                    if b >= lo and a <= hi]

        base = [g for s in quiet for g in s.gaps]
        during = gaps_in(busy, start, end)
        return {"itl_p99_quiet_ms": 1e3 * pct(base, 0.99),
                "itl_p99_during_long_prompt_ms": 1e3 * pct(during, 0.99),
                "itl_max_during_long_prompt_ms": 1e3 * max(during, default=float("nan")),
                "long_prompt_admit_s": end - start, "gaps_in_window": len(during)}


def metric(url: str, name: str) -> float:
    """One value of bitnet serve's /metrics (Prometheus text)."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[1])
    raise RuntimeError(f"/metrics has no {name}")


def chats(engine: Engine, ctx: int) -> dict[str, float]:
    """CHATS chats of CHAT_PROMPT + CHAT_TOKENS positions at once, in the KV memory that
    OLD_SLOTS slots of ``ctx`` positions each took (bitnet serve only)."""
    pool = OLD_SLOTS * ctx * position_bytes(engine.model)
    engine = Engine(engine.name, engine.model, engine.threads, engine.binary, engine.device,
                    [*engine.extra, "--kv-memory", f"{pool}B", "--ctx", str(ctx)])
    with Server(engine, CHATS, 0) as server:
        peak, done = [0.0], []

        def watch() -> None:
            while not done:
                peak[0] = max(peak[0], metric(server.url, "bitnet_active_sequences"))
                time.sleep(0.5)

        with ThreadPoolExecutor(CHATS + 1) as pool_:
            watcher = pool_.submit(watch)
            t0 = time.perf_counter()
            try:  # the last prompt waits for all before it: no client timeout
                list(pool_.map(lambda i: stream(server.url, prompt_ids(i, CHAT_PROMPT),
                                                CHAT_TOKENS, wait=CHAT_WAIT), range(CHATS)))
            finally:
                done.append(True)
            wall = time.perf_counter() - t0
            watcher.result()
        return {"kv_pool_mb": pool / 2**20, "chats": CHATS,
                "peak_admitted_at_once": peak[0],
                "preemptions": metric(server.url, "bitnet_preemptions"),
                "tok_s": CHATS * CHAT_TOKENS / wall, "wall_s": wall,
                "peak_rss_mb": server.peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", required=True, help="GGUF file (e.g. a 2B-shape TQ2_0)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="auto", help="bitnet serve's --device")
    p.add_argument("--llama-server", help="llama-server binary (omit: bitnet only)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64, 256])
    p.add_argument("--tokens", type=int, default=64, help="max_tokens of every request")
    p.add_argument("--prompt", type=int, default=32, help="prompt tokens (concurrency)")
    p.add_argument("--requests", type=int, default=2, help="requests per client")
    p.add_argument("--workloads", nargs="+", default=["concurrency", "prefix", "long"],
                   choices=["concurrency", "prefix", "long", "chats"])
    p.add_argument("--chat-ctx", type=int, default=4096,
                   help="chats: the context each of the old slots reserved")
    p.add_argument("--bitnet-arg", action="append", default=[],
                   help="extra argument for bitnet serve (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    args = p.parse_args()
    VOCAB[0] = vocab_size(args.model)
    engines = [Engine("bitnet", args.model, args.threads, device=args.device,
                      extra=args.bitnet_arg)]
    if args.llama_server:
        engines.append(Engine("llama-server", args.model, args.threads, args.llama_server))
    os.nice(19)  # the load generator takes only what the servers leave (see the docstring)
    results: dict[str, dict] = {e.name: {} for e in engines}
    for workload in args.workloads:
        if workload == "concurrency":
            for n in args.clients:
                for e in engines:  # engines interleaved, one client count at a time
                    results[e.name][f"clients_{n}"] = concurrency(
                        e, n, args.tokens, args.prompt, args.requests)
                    if not args.json:
                        print(e.name, n, "clients", _fmt(results[e.name][f"clients_{n}"]),
                              flush=True)
        elif workload == "chats":
            results["bitnet"]["chats"] = chats(engines[0], args.chat_ctx)
            if not args.json:
                print("bitnet chats", _fmt(results["bitnet"]["chats"]), flush=True)
        else:
            for e in engines:
                results[e.name][workload] = (prefix if workload == "prefix" else long_prompt)(
                    e, args.tokens)
                if not args.json:
                    print(e.name, workload, _fmt(results[e.name][workload]), flush=True)
    if args.json:
        print(json.dumps({"model": args.model, "threads": args.threads,
                          "tokens": args.tokens, "results": results}))
        return
    if args.llama_server and "concurrency" in args.workloads:
        for n in args.clients:
            ours = results["bitnet"][f"clients_{n}"]["tok_s"]
            theirs = results["llama-server"][f"clients_{n}"]["tok_s"]
            print(f"{n:4d} clients: bitnet {ours:7.1f} tok/s, llama-server {theirs:7.1f} "
                  f"tok/s, ratio {ours / theirs:.2f}x")


def _fmt(r: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in r.items())


if __name__ == "__main__":
    main()
