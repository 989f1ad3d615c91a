"""The scheduler without HTTP, stepped by the test (``start=False``), on the reference backend:
preemption when the KV pool is too small, prefix reuse, chunked prefill, and a soak of mixed
requests that checks the pool's accounting after every step."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import pytest

import bitnet
from bitnet.core.sampling import SamplingParams
from bitnet.hal import KV_BLOCK
from bitnet.server.kv_memory import KvMemory, block_bytes
from bitnet.server.scheduler import PREFILL_SHARE, Event, PrefillPace, Request, Scheduler
from tests.core.fixtures import model_path
from tests.server.conftest import DEVICE, MODEL

# The soak: a fixed number of arrivals by default (the same run on every machine, so what it
# asserts happened did happen), or arrivals for BITNET_SOAK_SECONDS (600 for the 10-minute one).
SOAK_REQUESTS = 120
SOAK_SECONDS = float(os.environ.get("BITNET_SOAK_SECONDS", "0"))


@pytest.fixture(scope="module")
def model():
    return bitnet.load(model_path(MODEL), device=DEVICE, progress=False)


def blocks_memory(model, blocks: int) -> KvMemory:
    """A --kv-memory of exactly ``blocks`` blocks of this model."""
    c = model.transformer.config
    return KvMemory(bytes=blocks * block_bytes(c.n_layers, c.n_kv_heads * c.head_dim))


@dataclass
class Outcome:
    """What one request received, in order."""

    tokens: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)
        if ev.token is not None:
            self.tokens.append(ev.token)

    @property
    def finish(self) -> str | None:
        last = self.events[-1] if self.events else None
        return last.finish_reason if last is not None and last.kind == "done" else None


def request(prompt: list[int], out: Outcome, seed: int, max_tokens: int = 40,
            temperature: float = 0.8) -> Request:
    return Request(prompt, SamplingParams(temperature=temperature, seed=seed), max_tokens, out,
                   ignore_eos=True)


def drain(sched: Scheduler, limit: int = 20000) -> int:
    """Step until nothing is left, checking the pool after every step; returns the steps."""
    steps = 0
    while sched.busy:
        sched.step()
        sched.check_pool()
        steps += 1
        assert steps < limit, "the scheduler did not finish its work"
    return steps


def prompt_of(i: int, n: int) -> list[int]:
    return [1] + [(7 * i + 3 * j) % 480 + 10 for j in range(n - 1)]


def run_all(model, prompts: list[list[int]], **kw) -> tuple[list[Outcome], Scheduler]:
    sched = Scheduler(model, start=False, **kw)
    outs = [Outcome() for _ in prompts]
    for i, (p, out) in enumerate(zip(prompts, outs)):
        sched.submit(request(p, out, seed=i, temperature=0.0 if i % 3 == 0 else 0.8))
    drain(sched)
    return outs, sched


def test_a_pool_too_small_for_the_load_preempts_and_loses_nothing(model) -> None:
    prompts = [prompt_of(i, 8 + 9 * i) for i in range(10)]
    free, _ = run_all(model, prompts)
    one_context = model.transformer.n_ctx // KV_BLOCK
    tight, sched = run_all(model, prompts, kv_memory=blocks_memory(model, one_context + 4))
    assert sched.stats.preemptions > 0  # the load did not fit
    assert sched.stats.requests_failed == 0
    for a, b in zip(free, tight):
        assert b.finish == "length" and len(b.tokens) == 40
        assert a.tokens == b.tokens  # nothing lost, nothing repeated, same samples
        assert [e.text for e in a.events] == [e.text for e in b.events]
    assert sched.pool.used == 0 and sched.pool.free + sched.pool.cached == sched.pool.n_blocks


def test_a_reused_prefix_gives_the_tokens_of_a_cold_prefill(model) -> None:
    system = prompt_of(99, 2 * KV_BLOCK + 9)  # two full blocks and a part
    first, second = system + [11, 12, 13], system + [21, 22, 23, 24]
    sched = Scheduler(model, start=False)
    warm = Outcome()
    sched.submit(request(first, Outcome(), seed=1))
    drain(sched)
    sched.submit(request(second, warm, seed=2))
    drain(sched)
    assert sched.stats.prefix_hit_tokens == 2 * KV_BLOCK
    assert sched.stats.prompt_tokens == (len(first) - 1) + (len(second) - 1 - 2 * KV_BLOCK)
    cold = Outcome()
    fresh = Scheduler(model, start=False)
    fresh.submit(request(second, cold, seed=2))
    drain(fresh)
    assert fresh.stats.prefix_hit_tokens == 0
    assert warm.tokens == cold.tokens and len(cold.tokens) == 40


def test_the_block_of_the_last_prompt_token_is_never_reused(model) -> None:
    prompt = prompt_of(5, 2 * KV_BLOCK)  # exactly two blocks, both cached by the first run
    sched = Scheduler(model, start=False)
    a, b = Outcome(), Outcome()
    sched.submit(request(prompt, a, seed=3))
    drain(sched)
    sched.submit(request(prompt, b, seed=3))
    drain(sched)
    # the second block holds the last prompt token, whose logits must be computed: only the
    # first block is shared, and the second request prefills the rest and decodes the last
    assert sched.stats.prefix_hit_tokens == KV_BLOCK
    assert a.tokens == b.tokens


def test_a_preempted_sequence_resumes_from_its_cached_blocks(model) -> None:
    prompts = [prompt_of(i, 40) for i in range(6)]
    one_context = model.transformer.n_ctx // KV_BLOCK
    outs, sched = run_all(model, prompts, kv_memory=blocks_memory(model, one_context + 2))
    assert sched.stats.preemptions > 0 and sched.stats.prefix_hit_tokens > 0
    assert all(len(o.tokens) == 40 for o in outs)


def test_running_streams_keep_decoding_while_a_long_prompt_is_prefilled(model) -> None:
    sched = Scheduler(model, start=False, prefill_chunk=16)
    sched.pace.budget = lambda limit, *_: limit  # whole chunks (the pace is timing: tested below)
    stream, long = Outcome(), Outcome()
    sched.submit(request(prompt_of(1, 5), stream, seed=1, max_tokens=100))
    while not stream.tokens:
        sched.step()
    prompt = prompt_of(2, 200)
    sched.submit(request(prompt, long, seed=2, max_tokens=5))
    before, chunks = len(stream.tokens), sched.stats.prefill_chunks
    while not long.tokens:
        sched.step()
    chunks = sched.stats.prefill_chunks - chunks
    assert chunks == -(-(len(prompt) - 1) // 16)  # 199 tokens in chunks of 16
    # one decode step of the running stream between every two chunks (and with the last one,
    # which runs the prompt's last token in the same step)
    assert len(stream.tokens) - before == chunks
    drain(sched)
    whole = Scheduler(model, start=False)
    alone = Outcome()
    whole.submit(request(prompt, alone, seed=2, max_tokens=5))
    drain(whole)
    assert alone.tokens == long.tokens  # chunking changes nothing in the result


def test_soak_of_mixed_requests_keeps_the_pool_bounded_and_returns_every_block(model) -> None:
    """Requests arrive while others run: shared system prompts and unrelated ones, short and
    long, greedy and sampled, some cancelled midway (a client that hangs up), over a pool of
    two contexts so that preemption happens. After every step the pool's accounting holds; at
    the end every block is back. Prefill chunks are whole (the pace times the machine), so the
    default run is the same everywhere."""
    rng = random.Random(1234)
    one_context = model.transformer.n_ctx // KV_BLOCK
    sched = Scheduler(model, start=False, max_batch=6, max_waiting=1000, prefill_chunk=48,
                      kv_memory=blocks_memory(model, 2 * one_context))
    sched.pace.budget = lambda limit, *_: limit
    systems = [prompt_of(100 + k, rng.randrange(KV_BLOCK, 4 * KV_BLOCK)) for k in range(3)]
    live: list[tuple[Request, Outcome, int]] = []  # request, outcome, cancel after n tokens
    done: list[tuple[Request, Outcome, int]] = []
    deadline = time.monotonic() + SOAK_SECONDS
    n = 0

    def arriving() -> bool:
        return time.monotonic() < deadline if SOAK_SECONDS else n < SOAK_REQUESTS

    while arriving() or sched.busy:
        if arriving() and len(live) < 10 and rng.random() < 0.5:
            head = rng.choice(systems) if rng.random() < 0.6 else [1]
            prompt = head + prompt_of(n, rng.randrange(2, 80))[1:]
            out = Outcome()
            req = Request(prompt, SamplingParams(temperature=rng.choice([0.0, 0.9]), seed=n),
                          rng.randrange(1, 60), out, ignore_eos=rng.random() < 0.8)
            cancel_at = rng.randrange(1, 30) if rng.random() < 0.2 else -1
            sched.submit(req)
            live.append((req, out, cancel_at))
            n += 1
        for item in list(live):
            req, out, cancel_at = item
            if 0 < cancel_at <= len(out.tokens) and not req.cancelled.is_set():
                req.cancel()
                item_events = len(out.events)
                sched.step()  # the next step lets go of its blocks
                sched.check_pool()
                assert len(out.events) == item_events, "a cancelled request got more events"
            if req.cancelled.is_set() or out.finish is not None:
                live.remove(item)
                done.append(item)
        sched.step()
        sched.check_pool()
        assert sched.pool.used <= sched.pool.n_blocks
    assert n >= 20 and sched.stats.preemptions > 0 and sched.stats.prefix_hit_tokens > 0
    for req, out, _ in done:
        if req.cancelled.is_set():
            continue
        assert out.finish in ("length", "stop"), out.events[-1:]
        assert len(out.tokens) == req.completion_tokens <= req.max_tokens
    assert sched.stats.requests_failed == 0
    assert sched.pool.used == 0 and sched.stats.active == 0
    assert sched.pool.free + sched.pool.cached == sched.pool.n_blocks
    assert (sched.pool.refs == 0).all()


def test_a_fault_in_a_step_fails_the_admitted_requests_and_the_worker_goes_on(model) -> None:
    sched = Scheduler(model)  # with its thread, as the server runs it
    try:
        grow = sched._grow
        faults = iter([RuntimeError("injected")])

        def faulty(ready):
            fault = next(faults, None)
            if fault is not None:
                raise fault
            return grow(ready)

        sched._grow = faulty
        first, second = Outcome(), Outcome()
        sched.submit(request(prompt_of(1, 6), first, seed=1, max_tokens=3))
        deadline = time.monotonic() + 30
        while not first.events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.events[-1].kind == "error" and "injected" in first.events[-1].message
        sched.submit(request(prompt_of(2, 6), second, seed=2, max_tokens=3))
        while second.finish is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.finish == "length" and len(second.tokens) == 3
    finally:
        sched.close()
    assert sched.pool.used == 0 and sched.stats.requests_failed == 1


def test_requests_cancelled_while_queued_or_preempted_are_dropped(model) -> None:
    one_context = model.transformer.n_ctx // KV_BLOCK
    sched = Scheduler(model, start=False, kv_memory=blocks_memory(model, one_context + 2))
    outs = [Outcome() for _ in range(4)]
    reqs = [request(prompt_of(i, 100), out, seed=i, max_tokens=60)
            for i, out in enumerate(outs)]
    for r in reqs:
        sched.submit(r)
    while not sched.stats.preemptions:
        sched.step()
        sched.check_pool()
    for r in reqs[1:]:  # the waiting head, the preempted and the running ones behind the first
        r.cancel()
    drain(sched)
    assert len(outs[0].tokens) == 60 and outs[0].finish == "length"
    assert all(o.finish is None for o in outs[1:])  # no event after a cancel, no error
    assert sched.pool.used == 0 and not sched.busy


def test_prefill_pace_fits_a_chunk_into_a_share_of_a_decode_step() -> None:
    pace = PrefillPace()
    assert pace.budget(256) == 1  # nothing measured yet: one token
    pace.filled(100, 0.5)  # 200 tokens/s
    pace.decoded(0.25)  # a decode step of 250 ms
    assert pace.budget(256) == int(200 * 0.25 * PREFILL_SHARE)  # 40 tokens ~ 0.2 s of prompt
    assert pace.budget(32) == 32  # never above the chunk limit
    # 6 prompts waiting behind 2 decoding streams: 3 streams' worth of the step
    assert pace.budget(256, 6, 2) == int(200 * 0.25 * PREFILL_SHARE * 3)
    assert pace.budget(256, 1, 4) == pace.budget(256)  # fewer prompts than streams: one share
    quick = PrefillPace()
    quick.filled(100, 0.5)
    quick.decoded(0.001)
    assert quick.budget(256) == 1  # never below one token: a prompt always advances
    pace.filled(1000, 1.0)  # the newest figures weigh `smoothing`
    assert pace.rate == pytest.approx(200 + pace.smoothing * (1000 - 200))


def test_the_pace_is_told_how_many_prompts_wait_per_decoding_stream(model) -> None:
    """While one stream decodes and three prompts wait, the chunk budget is asked for three
    streams' worth (each sequence an even share of the time)."""
    sched = Scheduler(model, start=False, prefill_chunk=16)
    asked: list[tuple[int, int]] = []

    def budget(limit: int, prefilling: int = 1, decoding: int = 1) -> int:
        asked.append((prefilling, decoding))
        return 4

    sched.pace.budget = budget
    first = Outcome()
    sched.submit(request(prompt_of(1, 5), first, seed=1, max_tokens=50))
    while not first.tokens:
        sched.step()
    for i in range(3):
        sched.submit(request(prompt_of(10 + i, 60), Outcome(), seed=i, max_tokens=2))
    sched.step()
    assert asked[-1] == (3, 1)
    drain(sched)
