"""Perplexity as llama.cpp's ``llama-perplexity`` measures it, so the two figures compare.

The text is tokenized once (BOS as the vocabulary says) and cut into ``n_chunks`` consecutive
chunks of ``n_ctx`` tokens (the tail that does not fill a chunk is dropped). Each chunk runs from
an empty context, its first token replaced by BOS when the vocabulary adds one. Only the second
half of each chunk is scored, so every scored token sees at least n_ctx/2 tokens of context: the
logits at positions first .. n_ctx-2 predict tokens first+1 .. n_ctx-1, with first = n_ctx // 2.

    PPL = exp(mean NLL)        +/- PPL * sqrt(var(NLL) / (count - 1))

the uncertainty llama.cpp prints ("Final estimate: PPL = ... +/- ..."), from the per-token
negative log-likelihoods (natural log) in float64.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bitnet.core.generate import UBATCH
from bitnet.core.model import Transformer

DEFAULT_CTX = 512  # llama-perplexity's default chunk length


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float  # exp(mean NLL)
    ppl_err: float  # llama.cpp's "+/-": PPL * standard error of the mean NLL
    nll: float  # mean negative log-likelihood, nats per scored token
    n_scored: int  # tokens scored: n_chunks * (n_ctx - first - 1)
    n_tokens: int  # tokens the text has (chunks use n_chunks * n_ctx of them)
    n_chunks: int
    n_ctx: int
    n_batch: int
    seconds: float
    chunk_ppl: tuple[float, ...]  # the running PPL after each chunk: llama.cpp's [1]..,[2]..

    def to_dict(self) -> dict[str, object]:
        return {"ppl": self.ppl, "ppl_err": self.ppl_err, "nll": self.nll,
                "n_scored": self.n_scored, "n_tokens": self.n_tokens, "chunks": self.n_chunks,
                "ctx": self.n_ctx, "batch": self.n_batch, "seconds": round(self.seconds, 3),
                "chunk_ppl": list(self.chunk_ppl)}


def perplexity(model: Transformer, tokens: Sequence[int], n_ctx: int, bos_id: int | None,
               n_batch: int | None = None, n_chunks: int | None = None,
               first: int | None = None, progress: bool | None = None) -> PerplexityResult:
    """Score ``tokens`` chunk by chunk on ``model`` (see the module docstring).

    bos_id: the token that replaces each chunk's first (None: keep the text's own).
    n_batch: tokens per forward call within a chunk (default and at most min(n_ctx, 512)).
    n_chunks: score only the first chunks (default: all that fit).
    first: the first scored position (default n_ctx // 2, llama.cpp's; 0 scores every one).
    progress: a bar over the chunks (None: only on a terminal)."""
    ids = np.asarray(tokens, dtype=np.int32).reshape(-1)
    first = n_ctx // 2 if first is None else first
    n_batch = min(n_ctx, UBATCH) if n_batch is None else min(n_batch, n_ctx)
    total = _check(len(ids), n_ctx, model.n_ctx, n_batch, first)
    bad = ids[(ids < 0) | (ids >= model.config.n_vocab)]
    if len(bad):
        raise ValueError(f"token id {int(bad[0])} is outside the vocabulary "
                         f"(0..{model.config.n_vocab - 1})")
    n_chunks = total if n_chunks is None else min(n_chunks, total)
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be at least 1, got {n_chunks}")
    t0 = time.perf_counter()
    nll = nll2 = 0.0
    count = 0
    running: list[float] = []
    bar = _bar(n_chunks, progress)
    for i in range(n_chunks):
        chunk = ids[i * n_ctx:(i + 1) * n_ctx]
        losses = _chunk_nll(model, chunk, bos_id, n_batch, first)  # f64 [n_ctx - first - 1]
        nll += float(losses.sum())
        nll2 += float((losses * losses).sum())
        count += len(losses)
        running.append(math.exp(nll / count))
        bar.set_postfix_str(f"ppl {running[-1]:.4f}", refresh=False)
        bar.update(1)
    bar.close()
    mean = nll / count
    var = nll2 / count - mean * mean
    err = math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0
    ppl = math.exp(mean)
    return PerplexityResult(ppl=ppl, ppl_err=ppl * err, nll=mean, n_scored=count,
                            n_tokens=len(ids), n_chunks=n_chunks, n_ctx=n_ctx, n_batch=n_batch,
                            seconds=time.perf_counter() - t0, chunk_ppl=tuple(running))


def _check(n_tokens: int, n_ctx: int, allocated: int, n_batch: int, first: int) -> int:
    """The number of whole chunks, after checking the arguments."""
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2, got {n_ctx}")
    if n_ctx > allocated:
        raise ValueError(f"n_ctx {n_ctx} exceeds the context allocated at load ({allocated}); "
                         f"load the model with n_ctx={n_ctx}")
    if n_batch < 1:
        raise ValueError(f"n_batch must be at least 1, got {n_batch}")
    if not 0 <= first <= n_ctx - 2:
        raise ValueError(f"first scored position must be in 0..{n_ctx - 2}, got {first}")
    if n_tokens < 2 * n_ctx:
        raise ValueError(f"the text tokenizes to only {n_tokens} tokens; perplexity with a "
                         f"context of {n_ctx} needs at least {2 * n_ctx} (use a longer text "
                         f"or a smaller --ctx)")
    return n_tokens // n_ctx


def _chunk_nll(model: Transformer, chunk: np.ndarray, bos_id: int | None, n_batch: int,
               first: int) -> np.ndarray:
    """-log p(chunk[j + 1] | chunk[..j]) for j in first .. n_ctx-2, from an empty context."""
    n_ctx = len(chunk)
    inputs = chunk.copy()
    if bos_id is not None:
        inputs[0] = bos_id  # the targets stay the text's tokens (position 0 is never one)
    out = []
    for start in range(0, n_ctx, n_batch):
        stop = min(start + n_batch, n_ctx)
        if stop <= first:  # no scored row in this batch: it only fills the cache
            model.forward(inputs[start:stop], start, True)
            continue
        logits = model.ops.download(model.forward(inputs[start:stop], start, False))  # [n, V]
        rows = np.arange(max(start, first), min(stop, n_ctx - 1))  # scored positions here
        out.append(_nll(logits[rows - start], chunk[rows + 1]))
    return np.concatenate(out)


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, in float64: [n, V], [n] -> [n]."""
    x = logits.astype(np.float64)
    top = x.max(axis=1)
    log_z = top + np.log(np.exp(x - top[:, None]).sum(axis=1))
    return log_z - x[np.arange(len(targets)), targets]


def _bar(total: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, desc="perplexity", unit="chunk", leave=False, file=sys.stderr,
                disable=None if enabled is None else not enabled)
