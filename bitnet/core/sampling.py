"""Turning logits into the next token. Host-side numpy only; the sampler never touches a backend.

The order of the steps follows llama.cpp's default sampler chain: penalties, top-k, top-p,
min-p, temperature, then a seeded draw. ``temperature == 0`` is greedy (ties go to the lowest id).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40  # 0 disables
    top_p: float = 0.95  # 1.0 disables
    min_p: float = 0.05  # 0.0 disables
    repeat_penalty: float = 1.0  # 1.0 disables; llama.cpp semantics (divide positive logits)
    presence_penalty: float = 0.0  # subtracted once from every token already seen
    frequency_penalty: float = 0.0  # subtracted per occurrence
    repeat_last_n: int = 64  # how many recent tokens the penalties look at
    seed: int | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.repeat_last_n < 0:
            raise ValueError(f"repeat_last_n must be >= 0, got {self.repeat_last_n}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Stateful only through its random generator: same seed + same logits = same tokens."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        # any integer seed (OpenAI's API allows negative ones) maps to one generator state
        seed = None if params.seed is None else params.seed % 2**64
        self.rng = np.random.default_rng(seed)

    def sample(self, logits: np.ndarray, history: list[int]) -> int:
        """Pick the next token id from ``logits`` f32 [vocab] given the ids seen so far."""
        p = self.params
        z = apply_penalties(logits.astype(np.float64), history, p)
        if not np.isfinite(z).all():
            # an extreme penalty can overflow: keep every value finite so no NaN decides the draw
            z = np.nan_to_num(z, nan=-np.inf, posinf=np.finfo(np.float64).max)
            if not np.isfinite(z).any():
                z = logits.astype(np.float64)
        if p.greedy:
            return int(np.argmax(z))
        ids, z = truncate(z, p)
        return int(ids[self.draw(softmax(z / p.temperature))])

    def draw(self, probs: np.ndarray) -> int:
        """An index drawn with probabilities ``probs``: the same draw as
        ``rng.choice(len(probs), p=probs)`` (same generator stream, same index) without its
        validation passes over the vocabulary, which cost more than the rest of sampling."""
        cdf = np.cumsum(probs)
        cdf /= cdf[-1]
        return min(int(np.searchsorted(cdf, self.rng.random(), side="right")), len(probs) - 1)


def sample_rows(samplers: list[Sampler], logits: np.ndarray,
                histories: list[list[int]]) -> list[int]:
    """``samplers[r].sample(logits[r], histories[r])`` for every row r of f32 [B, V], with the
    same tokens and the same generator streams, but the rows that need no per-row work (no
    penalties, no truncation: the OpenAI API's defaults) go through numpy together: one decode
    step of a batch spent half its Python time sampling row by row."""
    out: list[int | None] = [None] * len(samplers)
    plain = [r for r, s in enumerate(samplers) if _is_plain(s.params)]
    if len(plain) > 1:
        z = logits[plain].astype(np.float64)
        finite = np.isfinite(z).all(axis=1)
        top = np.argmax(z, axis=1)
        temps = np.asarray([samplers[r].params.temperature for r in plain])
        greedy = temps == 0.0
        # the row-wise forms of sample()'s steps, in place: each row's values and sums are the
        # same numbers (numpy reduces every row of a C-contiguous array as it reduces a 1-D
        # one). One array, not six: at B = 8 the temporaries pushed the model's weights out
        # of L2 between decode steps.
        z /= np.where(greedy, 1.0, temps)[:, None]
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        np.cumsum(z, axis=1, out=z)
        z /= z[:, -1:].copy()
        cdf = z
        for i, r in enumerate(plain):
            if not finite[i]:
                continue  # sample() has a path for non-finite logits
            if greedy[i]:
                out[r] = int(top[i])
            else:
                u = samplers[r].rng.random()
                out[r] = min(int(np.searchsorted(cdf[i], u, side="right")), z.shape[1] - 1)
    return [tok if tok is not None else samplers[r].sample(logits[r], histories[r])
            for r, tok in enumerate(out)]


def _is_plain(p: SamplingParams) -> bool:
    no_penalty = p.repeat_penalty == 1.0 and p.presence_penalty == 0 and p.frequency_penalty == 0
    return no_penalty and p.top_k == 0 and p.top_p >= 1.0 and p.min_p <= 0.0


def apply_penalties(z: np.ndarray, history: list[int], p: SamplingParams) -> np.ndarray:
    """Repetition, presence and frequency penalties over the last ``repeat_last_n`` tokens."""
    no_penalty = p.repeat_penalty == 1.0 and p.presence_penalty == 0 and p.frequency_penalty == 0
    if no_penalty or not history or p.repeat_last_n == 0:
        return z
    recent = np.asarray(history[-p.repeat_last_n:], dtype=np.int64)
    ids, counts = np.unique(recent, return_counts=True)
    z = z.copy()
    seen = z[ids]
    seen = np.where(seen > 0, seen / p.repeat_penalty, seen * p.repeat_penalty)
    z[ids] = seen - p.presence_penalty - counts * p.frequency_penalty
    return z


def truncate(z: np.ndarray, p: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """Apply top-k, top-p and min-p. Returns (kept ids, their logits), best first, or every id in
    id order when nothing is cut. Only the ids that can survive are ever sorted: a 128k
    vocabulary is not sorted for each token."""
    V = len(z)
    k = p.top_k if 0 < p.top_k < V else V
    if k == V and p.top_p >= 1.0 and p.min_p <= 0.0:
        return np.arange(V), z  # nothing is cut, and the draw needs no order
    zmax = float(z.max())
    order = top_ids(z, k) if k < V else None
    # softmax's denominator over the top-k set, so a partial prefix sees the true masses
    total = float(np.exp((z if order is None else z[order]) - zmax).sum())
    if p.min_p > 0.0:
        # min-p keeps exp(z - zmax) >= min_p: a prefix of the sorted ids, bounded here with a
        # little slack (the exact test is below)
        bound = int(np.count_nonzero(z >= zmax + np.log(p.min_p) - 1e-9))
        order = top_ids(z, min(k, bound)) if order is None else order[:bound]
    elif order is None:
        # top-p alone: grow a sorted prefix until it holds the top_p mass
        m = 64
        while m < V and np.exp(z[top_ids(z, m)] - zmax).sum() < p.top_p * total:
            m *= 8
        order = top_ids(z, min(m, V))
    kept = z[order]
    probs = np.exp(kept - zmax) / total
    if p.top_p < 1.0:
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cut = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
        order, kept, probs = order[:cut], kept[:cut], probs[:cut]
    if p.min_p > 0.0:
        keep = probs >= p.min_p * probs[0]
        order, kept = order[keep], kept[keep]
    return order, kept


def top_ids(z: np.ndarray, k: int) -> np.ndarray:
    """The ids of the ``k`` largest values (all of them when k is 0), best first, ties to the
    lower id: the first k of a stable descending sort, without sorting the whole vocabulary
    (a full sort of a 128k vocabulary took 16 ms a token)."""
    if not 0 < k < len(z):
        return np.argsort(-z, kind="stable")
    # a floor no higher than the k-th largest value, in one pass: split z into k chunks; their
    # k maxima are k distinct entries, so at least k values are >= the smallest of them
    n = len(z) // k * k
    floor = z[:n].reshape(k, -1).max(axis=1).min()
    candidates = np.flatnonzero(z >= floor)  # every top-k id (and its ties), in id order
    return candidates[np.argsort(-z[candidates], kind="stable")[:k]]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z))
    return e / e.sum()
