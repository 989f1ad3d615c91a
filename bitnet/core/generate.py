"""Prefill, decode and the generation loop. Prefill is the GEMM path (many tokens at once),
decode the GEMV path (one token); the sampler only ever sees host logits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from bitnet.core.model import Transformer
from bitnet.core.sampling import Sampler
from bitnet.hal import KVCache

UBATCH = 512  # tokens per prefill step: bounds activation memory ([UBATCH, d_ff] f32)


class ContextLengthError(ValueError):
    """The tokens do not fit the model's context."""


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0
    finish_reason: str = ""  # "stop" (EOS/EOT or a stop string), "length", or "" while running
    tokens: list[int] = field(default_factory=list)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        # the first generated token comes from the prefill's logits, so decode steps = n - 1
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0


def check_fits(n_tokens: int, n_ctx: int) -> None:
    if n_tokens > n_ctx:
        raise ContextLengthError(
            f"{n_tokens} tokens do not fit the context of {n_ctx}; shorten the prompt or load the "
            f"model with a larger n_ctx (the file allows up to its context_length)")


def prefill(model: Transformer, tokens: list[int], last_only: bool = True,
            cache: KVCache | None = None, table: np.ndarray | None = None,
            start: int = 0) -> np.ndarray:
    """Run ``tokens`` from position ``start`` (positions before it already cached) in UBATCH
    chunks, into ``cache`` (default the model's own; through ``table`` where it is a pool).
    Returns host logits: the last token's [1, V] when ``last_only``, else every position's."""
    check_fits(start + len(tokens), model.n_ctx)
    ids = np.asarray(tokens, dtype=np.int32)
    if last_only:  # the chunks before the last only fill the cache
        lead = (len(ids) - 1) // UBATCH * UBATCH
        fill(model, ids[:lead], cache, table, start)
        return model.ops.download(model.forward(ids[lead:], start + lead, True, cache, table))
    return np.concatenate([model.ops.download(model.forward(ids[first:first + UBATCH],
                                                            start + first, False, cache, table))
                           for first in range(0, len(ids), UBATCH)], axis=0)


def fill(model: Transformer, tokens: list[int], cache: KVCache | None = None,
         table: np.ndarray | None = None, start: int = 0) -> None:
    """``prefill`` of ``tokens`` whose logits nobody needs: only the KV cache is filled (the
    server runs a prompt's last token in a decode step, so its leading tokens need no head)."""
    check_fits(start + len(tokens), model.n_ctx)
    ids = np.asarray(tokens, dtype=np.int32)
    for first in range(0, len(ids), UBATCH):
        model.fill(ids[first:first + UBATCH], start + first, cache, table)


def decode_one(model: Transformer, token: int, pos: int,
               cache: KVCache | None = None) -> np.ndarray:
    """One token at ``pos`` through the model -> host logits f32 [V] (a recorded step replayed
    where the backend records: bitnet.core.replay)."""
    logits = model.replay.decode(token, pos, model.cache if cache is None else cache)
    return model.ops.download(logits)[0]


def generate_ids(model: Transformer, prompt: list[int], sampler: Sampler, max_tokens: int,
                 is_eog, stats: GenerationStats) -> Iterator[int]:
    """Yield sampled ids until an end-of-generation token, ``max_tokens`` or the context end.

    ``is_eog(id) -> bool`` marks EOS/EOT (pass ``lambda _: False`` to ignore them)."""
    if not prompt:
        raise ValueError("the prompt is empty: give at least one token (e.g. BOS)")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    history = list(prompt)
    t0 = time.perf_counter()
    logits = prefill(model, prompt)[0]
    stats.prompt_tokens = len(prompt)
    stats.prompt_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pos = len(prompt)
    for _ in range(max_tokens):
        token = sampler.sample(logits, history)
        if is_eog(token):
            stats.finish_reason = "stop"
            return
        history.append(token)
        stats.tokens.append(token)
        stats.generated_tokens += 1
        yield token
        if pos >= model.n_ctx:
            stats.finish_reason = "length"
            return
        if stats.generated_tokens == max_tokens:
            break  # no need to run the model for a token nobody will sample
        logits = decode_one(model, token, pos)
        pos += 1
        stats.decode_seconds = time.perf_counter() - t0
    stats.decode_seconds = time.perf_counter() - t0
    stats.finish_reason = "length"


class StopStrings:
    """Cuts streamed text at the first stop string, holding back any tail that could still
    become one, so a stop string never reaches the user even when split across tokens."""

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [s for s in (stops or []) if s]
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = max((self._overlap(s) for s in self.stops), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out

    def _overlap(self, stop: str) -> int:
        """Length of the longest suffix of pending that is a proper prefix of ``stop``."""
        for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if self.pending.endswith(stop[:n]):
                return n
        return 0
