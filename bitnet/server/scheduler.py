"""Continuous batching over a paged KV pool: one model, many requests.

A single worker thread owns the model and one KV cache used as a pool of blocks of ``KV_BLOCK``
positions (``bitnet.server.kv_pool``). Each iteration (``Scheduler.step``) it

1. drops the requests whose clients went away, releasing their blocks;
2. admits sequences, oldest first (preempted ones before new requests), while the decode batch
   has room (``max_batch``) and the pool has the blocks of the whole prompt: the longest run of
   the prompt's full blocks already in the prefix cache is shared, not computed again;
3. prefills prompt tokens, in order of admission: up to ``prefill_chunk`` while nothing
   decodes; while streams decode, only as many as take about PREFILL_SHARE of a decode step
   for each decoding stream's worth of prompts waiting (``PrefillPace``: measured prompt rate x
   measured step time x max(1, prefilling / decoding), at least one token), so a long prompt
   arriving at most doubles the running streams' time between tokens, and many prompts queued
   behind few streams are not starved;
4. runs ONE decode step for every sequence whose prompt is in the cache: the matmuls see a batch
   of B rows, so the weights stream from memory once for all of them.

A prompt's last token runs in the decode step, not in the prefill: every sampled token comes
from a decode step's logits, and the prefill needs no head. A decoding sequence takes a new
block when its next position crosses a block edge; when none is left, the most recently admitted
sequence is preempted: its blocks are released (its full blocks stay in the prefix cache while
the pool can keep them) and it waits at the head of the queue with its tokens (prompt and
generated so far), its sampler and its text state, to be prefilled again and resumed where it
stopped. The oldest sequence never waits for memory, so every admitted request finishes.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bitnet.core.generate import StopStrings, fill
from bitnet.core.sampling import Sampler, SamplingParams, sample_rows
from bitnet.hal import KV_BLOCK, Op
from bitnet.hal.kv_blocks import blocks_for
from bitnet.server.defaults import DEFAULT_MAX_BATCH, DEFAULT_PREFILL_CHUNK
from bitnet.server.kv_memory import KvBudget, KvMemory, kv_budget
from bitnet.server.kv_pool import BlockPool, chain_hashes

log = logging.getLogger("bitnet.server")


class QueueFullError(RuntimeError):
    """Too many requests are waiting; the client should retry later (HTTP 429)."""


@dataclass
class Event:
    kind: str  # "token" (text may be ""), "done" or "error"
    text: str = ""
    token: int | None = None
    logprob: float | None = None
    top_logprobs: dict[int, float] | None = None
    finish_reason: str | None = None
    message: str = ""


@dataclass
class Request:
    """One generation. ``emit`` is called from the worker thread with each Event."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    emit: Callable[[Event], None]
    stops: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's logprob + top k
    fresh_text: bool = False  # a chat reply: drop the first piece's SentencePiece prefix space
    id: int = field(default_factory=itertools.count().__next__)
    cancelled: threading.Event = field(default_factory=threading.Event)
    completion_tokens: int = 0

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass(eq=False)  # compared by identity
class _Sequence:
    """An admitted request: its tokens, its blocks in the pool and its sampling and text state
    (kept across a preemption, so a resumed sequence goes on exactly where it stopped)."""

    request: Request
    tokens: list[int]  # prompt + generated: the sampler's history
    sampler: Sampler
    text: Any  # the tokenizer's stream decoder
    stops: StopStrings
    arrival: int  # admission order: the newest is preempted first
    blocks: list[int] = field(default_factory=list)  # its block table
    hashes: list[bytes] = field(default_factory=list)  # names of its full blocks of tokens
    computed: int = 0  # positions whose K/V is in the pool
    named: int = 0  # leading blocks that are in the prefix cache

    @property
    def pending(self) -> int:
        """Tokens to prefill before its next decode step (which runs the last token)."""
        return len(self.tokens) - 1 - self.computed


@dataclass
class SchedulerStats:
    requests_total: int = 0
    requests_failed: int = 0
    prompt_tokens: int = 0  # tokens prefilled (a resumed sequence's recompute included)
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_steps: int = 0
    decode_rows: int = 0  # sequences advanced by decode steps (a step of B sequences adds B)
    prefill_chunks: int = 0
    prefix_hit_tokens: int = 0  # prompt positions taken from the prefix cache, not computed
    preemptions: int = 0
    active: int = 0
    waiting: int = 0  # queued requests and preempted sequences


PREFILL_SHARE = 0.8  # a prefill chunk between decode steps takes about this share of a step


@dataclass
class PrefillPace:
    """How many prompt tokens fit between two decode steps: the measured prompt rate (tokens a
    second, over recent chunks) times the measured decode step time (recent steps) times
    PREFILL_SHARE, times the sequences waiting for their prompt per decoding stream where there
    are more of them (each sequence, prefilling or decoding, gets an even share of the time), at
    least one token (so a prompt always advances), at most the chunk limit. With no measurement
    yet, one token; the rate measured on small chunks then grows them.
    (A floor of a whole block was too coarse: 16 tokens at the end of a 2,000-token prompt
    took longer than a 4-stream decode step, and the streams' p99 gap reached 2.6x. Without the
    per-stream share, 64 chats sent at once prefilled at ~1 token a step behind the first one
    to decode: 6 prompt tokens a second, against ~100 unpaced.)"""

    rate: float = 0.0  # prompt tokens / s
    step: float = 0.0  # seconds per decode step
    smoothing: float = 0.3  # weight of the newest measurement

    def filled(self, tokens: int, seconds: float) -> None:
        if seconds > 0:
            self.rate = self._mix(self.rate, tokens / seconds)

    def decoded(self, seconds: float) -> None:
        self.step = self._mix(self.step, seconds)

    def budget(self, limit: int, prefilling: int = 1, decoding: int = 1) -> int:
        fit = int(self.rate * self.step * PREFILL_SHARE * max(1.0, prefilling / max(decoding, 1)))
        return max(1, min(limit, fit))

    def _mix(self, old: float, new: float) -> float:
        return new if old == 0 else old + self.smoothing * (new - old)


class Scheduler:
    """The worker. ``start=False`` makes no thread: the caller runs ``step()`` itself (tests)."""

    def __init__(self, model: Any, max_batch: int = DEFAULT_MAX_BATCH, max_waiting: int = 256,
                 kv_memory: KvMemory | None = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, start: bool = True) -> None:
        if max_batch < 1 or prefill_chunk < 1:
            raise ValueError(f"max_batch and prefill_chunk must be >= 1, got {max_batch} and "
                             f"{prefill_chunk}")
        self.model = model
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.pace = PrefillPace()
        self.waiting: queue.Queue[Request] = queue.Queue(maxsize=max_waiting)
        self.stats = SchedulerStats()
        self.batched = Op.ATTENTION_ROWS in model.backend.capabilities.ops
        if not self.batched and max_batch > 1:
            log.warning("backend %s lacks attention_rows: decode steps run one sequence at a time",
                        model.backend.name)
        t = model.transformer
        c = t.config
        self.budget: KvBudget = kv_budget(kv_memory, model.backend.device, c.n_layers,
                                          c.n_kv_heads * c.head_dim, t.n_ctx, max_batch)
        self.pool = BlockPool(self.budget.blocks)
        self._cache = t.new_cache(self.budget.positions)
        # admission leaves this many blocks spare while others run, so that the running
        # sequences' next blocks do not preempt at once what was just admitted
        self._reserve = self.budget.blocks // 100
        log.info("KV pool: %d blocks of %d positions, %.1f MiB (%s)", self.budget.blocks,
                 KV_BLOCK, self.budget.bytes / 2**20, self.budget.source)
        self._running: list[_Sequence] = []  # in arrival order
        self._preempted: deque[_Sequence] = deque()  # in arrival order
        self._next: _Sequence | None = None  # the queue's head, waiting for blocks
        self._arrivals = itertools.count()
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._loop, name="bitnet-scheduler",
                                            daemon=True)
            self._thread.start()

    # -- API used by the HTTP layer (any thread) -----------------------------------------------

    def submit(self, request: Request) -> None:
        try:
            self.waiting.put_nowait(request)
        except queue.Full:
            raise QueueFullError("the server is busy: too many requests are waiting") from None
        with self._wake:
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def queue_depth(self) -> int:
        return self.waiting.qsize()

    @property
    def busy(self) -> bool:
        """Anything admitted, preempted or queued."""
        return bool(self._running or self._preempted or self._next is not None
                    or not self.waiting.empty())

    def check_pool(self) -> None:
        """Assert the pool's accounting against the live sequences (for tests; call it while
        the worker is not in a step)."""
        self.pool.check([s.blocks for s in self._running])
        if any(s.blocks for s in self._preempted):
            raise AssertionError("a preempted sequence still holds blocks")

    # -- the worker ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self.busy:
                    self._wake.wait()
                if self._stop:
                    return
            try:
                self.step()
            except Exception as e:  # a fault of the scheduler itself: fail what it holds
                log.exception("scheduler step failed")
                self._fail_all(f"{type(e).__name__}: {e}")

    def step(self) -> None:
        """One iteration: drop cancelled requests, admit, one prefill chunk, one decode step."""
        self._drop_cancelled()
        self._admit()
        self._prefill()
        self._decode()
        self.stats.active = len(self._running)
        self.stats.waiting = self.waiting.qsize() + len(self._preempted) + (
            self._next is not None)

    def _fail_all(self, message: str) -> None:
        """Answer every admitted request with an error and start the pool's accounting afresh
        (after a fault it cannot be trusted); queued requests are served as usual."""
        held = self._running + list(self._preempted) + ([self._next] if self._next else [])
        self._running, self._preempted, self._next = [], deque(), None
        self.pool = BlockPool(self.budget.blocks)
        for s in held:
            self.stats.requests_failed += 1
            s.request.emit(Event("error", message=message))

    def _drop_cancelled(self) -> None:
        for s in [s for s in self._running if s.request.cancelled.is_set()]:
            self._finish(s, None)
        for s in [s for s in self._preempted if s.request.cancelled.is_set()]:
            self._preempted.remove(s)
        if self._next is not None and self._next.request.cancelled.is_set():
            self._next = None

    def _admit(self) -> None:
        while len(self._running) < self.max_batch:
            s = self._preempted[0] if self._preempted else self._next or self._take()
            if s is None or not self._place(s):
                return
            if self._preempted and s is self._preempted[0]:
                self._preempted.popleft()
            else:
                self._next = None
            self._running.append(s)
            self._running.sort(key=lambda x: x.arrival)

    def _take(self) -> _Sequence | None:
        """The next live request of the queue as a sequence (None: the queue is empty)."""
        while True:
            try:
                req = self.waiting.get_nowait()
            except queue.Empty:
                return None
            if req.cancelled.is_set():
                continue
            self.stats.requests_total += 1
            if not req.prompt or len(req.prompt) > self.model.transformer.n_ctx:
                self.stats.requests_failed += 1
                req.emit(Event("error", message=f"the prompt has {len(req.prompt)} tokens; the "
                                                f"context holds 1 to "
                                                f"{self.model.transformer.n_ctx}"))
                continue
            if req.max_tokens <= 0:
                req.emit(Event("done", finish_reason="length"))
                continue
            self._next = _Sequence(
                req, list(req.prompt), Sampler(req.params),
                self.model.tokenizer.stream_decoder(lstrip=None if req.fresh_text else False),
                StopStrings(req.stops), next(self._arrivals))
            return self._next

    def _place(self, s: _Sequence) -> bool:
        """Give ``s`` the blocks of all its tokens, sharing the longest cached run of its full
        blocks that ends before its last token (which the decode step writes); False (nothing
        taken) when the pool cannot spare the rest."""
        chain_hashes(s.tokens, s.hashes)
        hits = self.pool.cached_prefix(s.hashes[:(len(s.tokens) - 1) // KV_BLOCK])
        need = blocks_for(len(s.tokens)) - len(hits)
        spare = self.pool.available - self.pool.idle_among(hits)
        if spare < need + (self._reserve if self._running else 0):
            return False
        self.pool.share(hits)
        s.blocks = hits + [self.pool.allocate() for _ in range(need)]
        s.named = len(hits)
        s.computed = len(hits) * KV_BLOCK
        self.stats.prefix_hit_tokens += s.computed
        return True

    def _preempt(self, s: _Sequence) -> None:
        """Release ``s``'s blocks; it waits, first in line, to be prefilled again."""
        self._running.remove(s)
        self.pool.release(s.blocks)
        s.blocks, s.computed, s.named = [], 0, 0
        self._preempted.append(s)
        self._preempted = deque(sorted(self._preempted, key=lambda x: x.arrival))
        self.stats.preemptions += 1
        log.info("request %s preempted at %d tokens (KV pool full)", s.request.id,
                 len(s.tokens))

    def _name_full_blocks(self, s: _Sequence) -> None:
        """Offer the blocks ``s`` has filled to the prefix cache."""
        for j in range(s.named, s.computed // KV_BLOCK):
            self.pool.name(s.blocks[j], s.hashes[j])
        s.named = max(s.named, s.computed // KV_BLOCK)

    def _prefill(self) -> None:
        """Prompt tokens to the sequences in arrival order: up to ``prefill_chunk``, or while
        streams decode the paced share of a step (``PrefillPace``)."""
        t = self.model.transformer
        budget = self.prefill_chunk
        decoding = sum(s.pending == 0 for s in self._running)
        if decoding:
            budget = self.pace.budget(self.prefill_chunk, len(self._running) - decoding, decoding)
        for s in list(self._running):
            n = min(s.pending, budget)
            if n <= 0:
                continue
            t0 = time.perf_counter()
            try:
                fill(t, s.tokens[s.computed:s.computed + n], self._cache,
                     np.asarray(s.blocks, np.int32), start=s.computed)
            except Exception as e:  # a bad request must not stop the others
                log.exception("request %s failed in prefill", s.request.id)
                self.stats.requests_failed += 1
                self._finish(s, Event("error", message=f"{type(e).__name__}: {e}"))
                continue
            elapsed = time.perf_counter() - t0
            self.stats.prompt_seconds += elapsed
            self.pace.filled(n, elapsed)
            self.stats.prompt_tokens += n
            self.stats.prefill_chunks += 1
            s.computed += n
            chain_hashes(s.tokens, s.hashes)
            self._name_full_blocks(s)
            budget -= n
            if budget == 0:
                return

    def _grow(self, ready: list[_Sequence]) -> list[_Sequence]:
        """A block for each ready sequence's next position where it crosses a block edge,
        oldest first; when the pool is out, the newest running sequence is preempted (perhaps
        the one asking). Returns the ready sequences still running."""
        for s in ready:
            while s in self._running and blocks_for(len(s.tokens)) > len(s.blocks):
                if self.pool.available:
                    s.blocks.append(self.pool.allocate())
                else:
                    self._preempt(max(self._running, key=lambda x: x.arrival))
        return [s for s in ready if s in self._running]

    def _decode(self) -> None:
        """One decode step for every sequence whose prompt is in the cache."""
        ready = self._grow([s for s in self._running if s.pending == 0])
        if not ready:
            return
        t = self.model.transformer
        t0 = time.perf_counter()
        try:
            ids = np.asarray([s.tokens[-1] for s in ready], dtype=np.int32)
            positions = np.asarray([len(s.tokens) - 1 for s in ready], dtype=np.int32)
            # B rows in one step; one row too where the backend replays recorded steps
            if self.batched and (len(ready) > 1 or t.replay.can_record()):
                # one table per row, int32 [B, T]; the unused tail names block 0 (never read)
                tables = np.zeros((len(ready), max(len(s.blocks) for s in ready)), np.int32)
                for r, s in enumerate(ready):
                    tables[r, :len(s.blocks)] = s.blocks
                rows = t.ops.download(t.replay.decode_rows(ids, positions, self._cache,
                                                           tables))
            else:
                rows = np.stack([t.ops.download(t.forward(ids[r:r + 1], int(positions[r]), True,
                                                          self._cache,
                                                          np.asarray(s.blocks, np.int32)))[0]
                                 for r, s in enumerate(ready)])
        except Exception as e:
            log.exception("decode step failed")
            for s in ready:
                self.stats.requests_failed += 1
                self._finish(s, Event("error", message=f"{type(e).__name__}: {e}"))
            return
        elapsed = time.perf_counter() - t0
        self.stats.decode_seconds += elapsed
        self.pace.decoded(elapsed)
        self.stats.decode_steps += 1
        self.stats.decode_rows += len(ready)
        # every row's next token at once (the same tokens as one by one, see sample_rows)
        tokens = sample_rows([s.sampler for s in ready], rows, [s.tokens for s in ready])
        for s, logits, token in zip(ready, rows, tokens):
            s.computed += 1
            chain_hashes(s.tokens, s.hashes)
            self._name_full_blocks(s)
            self._sample(s, logits, token)

    def _sample(self, s: _Sequence, logits: np.ndarray, token: int) -> None:
        """Take ``token`` as ``s``'s next and emit its text, or finish ``s``."""
        req = s.request
        if req.cancelled.is_set():
            self._finish(s, None)
            return
        if not req.ignore_eos and self.model.tokenizer.is_eog(token):
            self._finish(s, Event("done", text=self._tail(s), finish_reason="stop"))
            return
        req.completion_tokens += 1
        self.stats.completion_tokens += 1
        s.tokens.append(token)
        lp, top = self._logprobs(logits, token, req.logprobs)
        text = s.stops.push(s.text.push(token))
        req.emit(Event("token", text=text, token=token, logprob=lp, top_logprobs=top))
        if s.stops.stopped:
            self._finish(s, Event("done", finish_reason="stop"))
        elif (len(s.tokens) > self.model.transformer.n_ctx
              or req.completion_tokens >= req.max_tokens):
            self._finish(s, Event("done", text=self._tail(s), finish_reason="length"))

    @staticmethod
    def _tail(s: _Sequence) -> str:
        return s.stops.push(s.text.flush()) + s.stops.flush()

    @staticmethod
    def _logprobs(logits: np.ndarray, token: int, k: int | None):
        if k is None:
            return None, None
        z = logits.astype(np.float64)
        logp = z - (np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))
        top = {int(i): float(logp[i]) for i in np.argsort(-logp, kind="stable")[:k]} if k else {}
        return float(logp[token]), top

    def _finish(self, s: _Sequence, event: Event | None) -> None:
        if s in self._running:
            self._running.remove(s)
            self.pool.release(s.blocks)
            s.blocks = []
        if event is not None:
            s.request.emit(event)
