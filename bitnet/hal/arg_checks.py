"""Argument checks of KernelBackend ops that every device backend makes before dispatching.

Backend-neutral: a buffer only needs ``shape`` and ``dtype``, a KV cache ``width``, ``n_ctx`` and
``n_layers``. ``who`` (the backend's name) starts every message, so errors name the backend, the
op and the cause: "opencl attention: positions 3..4 / layer 0 exceed the cache ...".
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bitnet.hal.kv_blocks import check_rows, check_table


def activations_2d(who: str, op: str, buf: Any) -> tuple[int, int]:
    """(n, K) of a float32 [n, K] buffer; ValueError for any other shape or dtype."""
    if len(buf.shape) != 2 or buf.dtype != np.float32:
        raise ValueError(f"{who} {op}: expected a float32 [n, K] buffer, got {buf.shape} "
                         f"{buf.dtype}")
    return buf.shape[0], buf.shape[1]


def same_shapes(who: str, op: str, a: Any, b: Any) -> None:
    """An elementwise op's operands: float32 [n, K] and equal shapes."""
    activations_2d(who, op, a)
    if a.shape != b.shape:
        raise ValueError(f"{who} {op}: shapes {a.shape} and {b.shape} differ")


def matmul_input(who: str, op: str, x: Any, cols: int) -> tuple[int, int]:
    """x of a linear op: float32 [n, K] with K == the weight's columns; returns (n, K)."""
    n, k = activations_2d(who, op, x)
    if k != cols:
        raise ValueError(f"{who} {op}: x has {k} columns, weight has {cols}")
    return n, k


def norm_input(who: str, x: Any, weight: Any) -> tuple[int, int]:
    """rmsnorm's operands: x float32 [n, K] and weight [1, K]; returns (n, K)."""
    n, k = activations_2d(who, "rmsnorm", x)
    if weight.shape != (1, k):
        raise ValueError(f"{who} rmsnorm: weight shape {weight.shape} != (1, {k})")
    return n, k


def rope_input(who: str, x: Any, n_heads: int, head_dim: int) -> tuple[int, int]:
    """rope's x: float32 [n, H*D] with an even D; returns (n, H*D)."""
    n, width = activations_2d(who, "rope", x)
    if width != n_heads * head_dim or head_dim % 2:
        raise ValueError(f"{who} rope: width {width} != {n_heads} heads x {head_dim}")
    return n, width


def attention_fits(who: str, q: Any, k: Any, v: Any, cache: Any, layer: int, pos: int,
                   n_heads: int, n_kv_heads: int, head_dim: int, table: Any = None) -> int:
    """Check q [n, H*D], k and v [n, Hkv*D] against the heads and the cache, and the block
    table (None, or int32 [T] mapping positions 0..pos+n-1 into the cache); returns n."""
    n, q_width = activations_2d(who, "attention", q)
    width = n_kv_heads * head_dim
    if q_width != n_heads * head_dim or k.shape != (n, width) or v.shape != (n, width):
        raise ValueError(
            f"{who} attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit "
            f"{n_heads}/{n_kv_heads} heads of {head_dim}"
        )
    if width != cache.width or n_heads % n_kv_heads:
        raise ValueError(f"{who} attention: the KV cache was allocated for other head sizes")
    cache_reach(who, "attention", cache, layer, pos, n, table)
    return n


def cache_reach(who: str, op: str, cache: Any, layer: int, pos: int, n: int,
                table: Any = None) -> None:
    """``layer`` is one of the cache's and positions pos..pos+n-1 are inside it: through the
    block table (int32 [T] mapping positions 0..pos+n-1 to blocks of the cache) or, without
    one (None), below ``n_ctx``. attention's check, and decode_layer's (one position)."""
    if not 0 <= layer < cache.n_layers or pos < 0:
        raise ValueError(f"{who} {op}: layer {layer} / position {pos} outside the cache "
                         f"({cache.n_layers} layers)")
    if table is not None:
        check_table(f"{who} {op}", table, cache.n_ctx, pos + n)
    elif pos + n > cache.n_ctx:
        raise ValueError(
            f"{who} {op}: positions {pos}..{pos + n - 1} exceed the cache "
            f"({cache.n_ctx} positions)"
        )


def row_slice(who: str, x: Any, start: int, stop: int) -> tuple[int, int]:
    """slice_rows' bounds: a non-empty range of x's rows; returns x's (n, K)."""
    n, k = activations_2d(who, "slice_rows", x)
    if not 0 <= start < stop <= n:
        raise ValueError(f"{who} slice_rows: rows {start}..{stop} of {n}")
    return n, k


def concat_width(who: str, parts: Sequence[Any]) -> int:
    """concat_rows' operands: at least one float32 [n_i, K] buffer, all of one K; returns K."""
    if not parts:
        raise ValueError(f"{who} concat_rows: nothing to concatenate")
    k = activations_2d(who, "concat_rows", parts[0])[1]
    for part in parts:
        if activations_2d(who, "concat_rows", part)[1] != k:
            raise ValueError(f"{who} concat_rows: widths {[p.shape for p in parts]} differ")
    return k



def attention_rows_fit(who: str, q: Any, k: Any, v: Any, cache: Any, positions: Any,
                       tables: Any, n_heads: int, n_kv_heads: int,
                       head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """attention_rows' operands: q [B, H*D], k and v [B, Hkv*D], positions int32 [B] and block
    tables int32 [B, T] into one cache (anything with ``n_ctx`` and ``width``), no two rows
    writing one cache row. Returns (tables, positions) as int32 arrays. Shapes only: the ops
    that run the rows check dtypes."""
    if len(q.shape) != 2:
        raise ValueError(f"{who} attention_rows: expected q [B, H*D], got {q.shape}")
    b, q_width = q.shape
    width = n_kv_heads * head_dim
    if q_width != n_heads * head_dim or k.shape != (b, width) or v.shape != (b, width):
        raise ValueError(f"{who} attention_rows: q {q.shape}, k {k.shape}, v {v.shape} do not "
                         f"fit {n_heads}/{n_kv_heads} heads of {head_dim}")
    if width != cache.width or n_heads % n_kv_heads:
        raise ValueError(f"{who} attention_rows: the KV cache was allocated for other head "
                         f"sizes")
    if len(positions) != b:
        raise ValueError(f"{who} attention_rows: {b} rows but {len(positions)} positions")
    return check_rows(f"{who} attention_rows", tables, positions, cache.n_ctx)
