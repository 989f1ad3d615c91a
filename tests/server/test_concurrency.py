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


def test_a_client_that_disconnects_frees_its_slot(server) -> None:
    body = {"model": "tiny", "prompt": "Once", "max_tokens": 200, "stream": True,
            "temperature": 0.8, "seed": 3}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # got the first token: hang up
    state = server.app.state.bitnet
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and state.scheduler.free_slots < state.scheduler.max_batch:
        time.sleep(0.05)
    assert state.scheduler.free_slots == state.scheduler.max_batch
    assert state.scheduler.stats.active == 0
