"""Continuous batching: one model, many requests.

A single worker thread owns the model. Each step it admits waiting requests into free slots (a
prefill each, the GEMM path), then runs ONE decode step for every active sequence together: the
matmuls see a batch of B rows, so the weights stream from memory once for all of them, which is
what makes throughput grow with concurrency on a bandwidth-bound decoder. A request that finishes
or whose client went away frees its slot before the next step.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bitnet.core.generate import StopStrings, prefill
from bitnet.core.sampling import Sampler, SamplingParams, sample_rows
from bitnet.hal import KV_BLOCK, Op
from bitnet.hal.kv_blocks import blocks_for

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


@dataclass
class _Slot:
    """A running sequence: its cache, position and text state."""

    request: Request
    table: np.ndarray  # int32: the slot's KV blocks in the pool
    pos: int
    sampler: Sampler
    history: list[int]
    text: Any  # the tokenizer's stream decoder
    stops: StopStrings
    next_token: int = -1


@dataclass
class SchedulerStats:
    requests_total: int = 0
    requests_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_steps: int = 0
    decode_rows: int = 0  # sequences advanced by decode steps (a step of B sequences adds B)
    active: int = 0
    waiting: int = 0


class Scheduler:
    def __init__(self, model: Any, max_batch: int = 8, max_waiting: int = 256) -> None:
        self.model = model
        self.max_batch = max_batch
        self.waiting: queue.Queue[Request] = queue.Queue(maxsize=max_waiting)
        self.stats = SchedulerStats()
        self.batched = Op.ATTENTION_ROWS in model.backend.capabilities.ops
        if not self.batched and max_batch > 1:
            log.warning("backend %s lacks attention_rows: decode steps run one sequence at a time",
                        model.backend.name)
        t = model.transformer
        # one paged KV pool; each slot owns the blocks of a whole context
        per_slot = blocks_for(t.n_ctx)
        self._pool = t.new_cache(max_batch * per_slot * KV_BLOCK)
        self._free_caches = [np.arange(i * per_slot, (i + 1) * per_slot, dtype=np.int32)
                             for i in range(max_batch)]
        self._slots: list[_Slot] = []
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="bitnet-scheduler", daemon=True)
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
        self._thread.join(timeout=10)

    @property
    def queue_depth(self) -> int:
        return self.waiting.qsize()

    @property
    def free_slots(self) -> int:
        return len(self._free_caches)

    # -- the worker ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._slots and self.waiting.empty():
                    self._wake.wait()
                if self._stop:
                    return
            self._drop_cancelled()
            self._admit()
            if self._slots:
                self._step()
            self.stats.waiting = self.waiting.qsize()

    def _admit(self) -> None:
        while self._free_caches and not self.waiting.empty():
            req = self.waiting.get_nowait()
            if req.cancelled.is_set():
                continue
            self.stats.requests_total += 1
            try:
                self._start(req)
            except Exception as e:  # a bad request must not stop the others
                log.exception("request %s failed in prefill", req.id)
                self.stats.requests_failed += 1
                req.emit(Event("error", message=f"{type(e).__name__}: {e}"))

    def _start(self, req: Request) -> None:
        cache = self._free_caches.pop()
        try:
            t0 = time.perf_counter()
            logits = prefill(self.model.transformer, req.prompt, True, self._pool, cache)[0]
            self.stats.prompt_seconds += time.perf_counter() - t0
            self.stats.prompt_tokens += len(req.prompt)
        except BaseException:
            self._free_caches.append(cache)
            raise
        slot = _Slot(req, cache, len(req.prompt), Sampler(req.params), list(req.prompt),
                     self.model.tokenizer.stream_decoder(lstrip=None if req.fresh_text else False),
                     StopStrings(req.stops))
        self._slots.append(slot)
        self.stats.active = len(self._slots)
        self._sample(slot, logits)

    def _step(self) -> None:
        """One decode step for every active slot."""
        t = self.model.transformer
        slots = list(self._slots)
        t0 = time.perf_counter()
        try:
            if self.batched and len(slots) > 1:
                ids = np.asarray([s.next_token for s in slots], dtype=np.int32)
                out = t.forward_batch(ids, np.array([s.pos for s in slots], np.int32),
                                      self._pool, np.stack([s.table for s in slots]))
                rows = t.ops.download(out)
            else:
                rows = np.stack([t.ops.download(t.forward(np.asarray([s.next_token], np.int32),
                                                          s.pos, True, self._pool, s.table))[0]
                                 for s in slots])
        except Exception as e:
            log.exception("decode step failed")
            for s in slots:
                self.stats.requests_failed += 1
                self._finish(s, Event("error", message=f"{type(e).__name__}: {e}"))
            return
        self.stats.decode_seconds += time.perf_counter() - t0
        self.stats.decode_steps += 1
        self.stats.decode_rows += len(slots)
        # every row's next token at once (the same tokens as one by one, see sample_rows)
        tokens = sample_rows([s.sampler for s in slots], rows, [s.history for s in slots])
        for s, logits, token in zip(slots, rows, tokens):
            s.pos += 1
            self._sample(s, logits, token)

    def _sample(self, s: _Slot, logits: np.ndarray, token: int | None = None) -> None:
        """Take the next token for ``s`` (sampled from its logits unless given) and emit its
        text, or finish it."""
        req = s.request
        if req.cancelled.is_set():
            self._finish(s, None)
            return
        if req.completion_tokens >= req.max_tokens:
            self._finish(s, Event("done", text=self._tail(s), finish_reason="length"))
            return
        if token is None:
            token = s.sampler.sample(logits, s.history)
        if not req.ignore_eos and self.model.tokenizer.is_eog(token):
            self._finish(s, Event("done", text=self._tail(s), finish_reason="stop"))
            return
        req.completion_tokens += 1
        self.stats.completion_tokens += 1
        s.history.append(token)
        s.next_token = token
        lp, top = self._logprobs(logits, token, req.logprobs)
        text = s.stops.push(s.text.push(token))
        if s.stops.stopped:
            req.emit(Event("token", text=text, token=token, logprob=lp, top_logprobs=top))
            self._finish(s, Event("done", finish_reason="stop"))
            return
        req.emit(Event("token", text=text, token=token, logprob=lp, top_logprobs=top))
        if s.pos >= self.model.transformer.n_ctx:
            self._finish(s, Event("done", text=self._tail(s), finish_reason="length"))
        elif req.completion_tokens >= req.max_tokens:
            self._finish(s, Event("done", text=self._tail(s), finish_reason="length"))

    @staticmethod
    def _tail(s: _Slot) -> str:
        return s.stops.push(s.text.flush()) + s.stops.flush()

    @staticmethod
    def _logprobs(logits: np.ndarray, token: int, k: int | None):
        if k is None:
            return None, None
        z = logits.astype(np.float64)
        logp = z - (np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))
        top = {int(i): float(logp[i]) for i in np.argsort(-logp, kind="stable")[:k]} if k else {}
        return float(logp[token]), top

    def _finish(self, s: _Slot, event: Event | None) -> None:
        if s in self._slots:
            self._slots.remove(s)
            self._free_caches.append(s.table)
            self.stats.active = len(self._slots)
        if event is not None:
            s.request.emit(event)

    def _drop_cancelled(self) -> None:
        for s in [s for s in self._slots if s.request.cancelled.is_set()]:
            self._finish(s, None)
