"""Many clients at once on loopback: bounded in count and time, no errors, nothing lost.

(The throughput ratio at 8 clients is a benchmark, benchmarks/serve_concurrency.py, not a test.)
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.core.fixtures import model_path
from tests.server.conftest import MODEL, LiveServer

N_CLIENTS = 32
N_REQUESTS = 64
TIME_LIMIT_S = 240


def complete(url: str, seed: int, stream: bool) -> tuple[str, int, str]:
    body = {"model": "tiny", "prompt": f"Story {seed % 5}:", "max_tokens": 12,
            "temperature": 0.8, "seed": seed, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
        text, usage, finish = [], None, None
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                if chunk["choices"]:
                    text.append(chunk["choices"][0]["text"])
                    finish = chunk["choices"][0]["finish_reason"] or finish
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
        return "".join(text), usage, finish
    r = httpx.post(url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    return out["choices"][0]["text"], out["usage"]["completion_tokens"], \
        out["choices"][0]["finish_reason"]


@pytest.mark.slow
def test_32_clients_get_every_token_and_streams_match_their_twins(server) -> None:
    start = time.monotonic()
    # every seed twice: once streamed, once not; both must produce the same text and count
    jobs = [(seed, stream) for seed in range(N_REQUESTS // 2) for stream in (True, False)]
    with ThreadPoolExecutor(N_CLIENTS) as pool:
        results = list(pool.map(lambda j: (j, complete(server.url, j[0], j[1])), jobs))
    assert time.monotonic() - start < TIME_LIMIT_S
    by_seed: dict[int, dict[bool, tuple[str, int, str]]] = {}
    for (seed, stream), result in results:
        by_seed.setdefault(seed, {})[stream] = result
    assert len(results) == N_REQUESTS
    for seed, pair in by_seed.items():
        assert set(pair) == {True, False}, seed
        assert pair[True] == pair[False], f"seed {seed}: streamed and plain answers differ"


def test_a_client_that_disconnects_frees_its_blocks(server) -> None:
    body = {"model": "tiny", "prompt": "Once", "max_tokens": 200, "stream": True,
            "temperature": 0.8, "seed": 3, "ignore_eos": True}
    sched = server.app.state.bitnet.scheduler
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # got a token: hang up
        assert sched.pool.used > 0  # the stream holds blocks while it runs
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (sched.pool.used or sched.stats.active):
        time.sleep(0.05)
    assert sched.pool.used == 0 and sched.stats.active == 0
    assert sched.pool.free + sched.pool.cached == sched.pool.n_blocks


def test_a_flood_past_max_waiting_gets_429s_while_every_admitted_request_completes() -> None:
    server = LiveServer(model_path(MODEL), max_batch=2, max_waiting=2).start()
    body = {"model": "tiny", "prompt": "Once upon", "max_tokens": 64, "ignore_eos": True,
            "temperature": 0}

    def one(_: int) -> tuple[int, dict]:
        r = httpx.post(server.url + "/v1/completions", json=body, timeout=120)
        return r.status_code, r.json()

    try:
        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(one, range(24)))
        codes = [code for code, _ in results]
        assert set(codes) == {200, 429}, codes
        texts = set()
        for code, answer in results:
            if code == 429:
                assert answer["error"]["code"] == "server_busy"
            else:
                assert answer["usage"]["completion_tokens"] == 64
                texts.add(answer["choices"][0]["text"])
        assert len(texts) == 1  # greedy: every admitted request got the same whole answer
        sched = server.app.state.bitnet.scheduler
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (sched.busy or sched.pool.used):
            time.sleep(0.05)
        assert sched.pool.used == 0 and not sched.busy
    finally:
        server.stop()
