"""Paged KV caches: where a sequence's positions live in a cache shared by many sequences.

A KV cache holds ``n_ctx`` rows per layer. Used whole by one sequence, position p is row p (no
table). Used as a pool (``bitnet serve``), its rows are grouped in blocks of ``KV_BLOCK``
consecutive rows and each sequence holds a block table, int32 [T]: its logical block j (positions
j*KV_BLOCK .. j*KV_BLOCK + KV_BLOCK - 1) is physical block ``table[j]``, so

    row(p) = table[p // KV_BLOCK] * KV_BLOCK + p % KV_BLOCK

One table serves every layer (block b is rows b*KV_BLOCK.. of each layer's K and V). Sequences
sharing a prefix may name the same full blocks (prefix reuse); a block a sequence writes is its
own.

Why 16 tokens: a sequence wastes at most 15 rows at its end (under 1% of a 2,048-token
context); prefix reuse matches at that granularity; a 4,096-token context needs a table of 256
entries (1 KiB); and a block of the 2B model over its 30 layers (K and V, f16) is 1.2 MiB, fine
enough for ``--kv-memory`` to size a pool in. vLLM's default is the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KV_BLOCK = 16  # positions per KV block


def blocks_for(positions: int) -> int:
    """How many blocks hold ``positions`` positions."""
    return -(-positions // KV_BLOCK)


def cache_rows(table: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
    """The cache rows (int64) of logical ``positions`` through ``table`` (None: the identity)."""
    positions = np.asarray(positions, dtype=np.int64)
    if table is None:
        return positions
    return np.asarray(table, dtype=np.int64)[positions // KV_BLOCK] * KV_BLOCK + (
        positions % KV_BLOCK)


def check_table(who: str, table: Any, n_ctx: int, end: int) -> np.ndarray:
    """A block table that maps positions 0 .. end-1 into a cache of ``n_ctx`` rows: int32 1-D,
    at least ``blocks_for(end)`` entries, each a block of the cache. Returns it as an int32
    array."""
    t = np.asarray(table)
    if t.dtype != np.int32 or t.ndim != 1:
        raise ValueError(f"{who}: a block table is int32 1-D, got {t.dtype} {t.shape}")
    if t.shape[0] < blocks_for(end):
        raise ValueError(f"{who}: positions up to {end} need {blocks_for(end)} blocks of "
                         f"{KV_BLOCK}; the table has {t.shape[0]}")
    used = t[:blocks_for(end)]
    if used.size and (used.min() < 0 or used.max() >= n_ctx // KV_BLOCK):
        raise ValueError(f"{who}: block table entries must be in [0, {n_ctx // KV_BLOCK}) "
                         f"(a cache of {n_ctx} rows), got {used.min()}..{used.max()}")
    return t


def check_rows(who: str, tables: Any, positions: Any, n_ctx: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """attention_rows' tables int32 [B, T] and positions int32 [B]: each row's table maps its
    positions 0..p into the cache, and no two rows write the same cache row. Returns both as
    int32 arrays."""
    t = np.asarray(tables)
    p = np.asarray(positions)
    if p.dtype != np.int32 or p.ndim != 1:
        raise ValueError(f"{who}: positions are int32 [B], got {p.dtype} {p.shape}")
    if t.dtype != np.int32 or t.ndim != 2 or t.shape[0] != p.shape[0]:
        raise ValueError(f"{who}: block tables are int32 [B={p.shape[0]}, T], got "
                         f"{t.dtype} {t.shape}")
    if p.size and p.min() < 0:
        raise ValueError(f"{who}: negative position {p.min()}")
    # check_table for every row at once (a Python loop of B checks cost ~5 us a row, every
    # layer of every batched step); the first row that fails is reported in its words
    need = (p.astype(np.int64) + KV_BLOCK) // KV_BLOCK  # blocks_for(p + 1), per row
    n_blocks = n_ctx // KV_BLOCK
    # skipped in the usual case: every entry inside the cache (the scheduler pads with block 0)
    if p.size and (need.max() > t.shape[1] or t.min() < 0 or t.max() >= n_blocks):
        # an entry outside the cache is an error only where its row uses it (padding is free)
        reads = np.arange(t.shape[1])[None, :] < need[:, None]  # [B, T]
        outside = (t < 0) | (t >= n_blocks)
        for r in np.flatnonzero((need > t.shape[1]) | (reads & outside).any(axis=1))[:1]:
            check_table(f"{who} row {r}", t[r], n_ctx, int(p[r]) + 1)  # raises
    rows = t[np.arange(p.shape[0]), p // KV_BLOCK].astype(np.int64) * KV_BLOCK + p % KV_BLOCK
    if len(set(rows.tolist())) != rows.size:
        raise ValueError(f"{who}: two rows write the same cache row (their tables share the "
                         f"block of their current position)")
    return t, p
