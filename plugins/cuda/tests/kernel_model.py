"""numpy models of the CUDA kernels, written from the .cu sources' index formulas and op orders.

They run the kernels' arithmetic on the host: where a vector of codes sits in memory, which
activations it meets, in which order the float epilogue rounds. Tests compare them with the
reference backend (bit for bit where the contract demands it). They do not prove the CUDA code
right: only running it on a GPU does that (the conformance suite, on an H100 on 2026-11-23).
"""

from __future__ import annotations

import numpy as np

QK_K = 256


def quantize_per_token_i8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_per_token_i8: x f32 [n, K] -> q int8, scale f32 [n]."""
    amax = np.abs(x).max(axis=1)  # f32 max: exact
    m = np.maximum(1e-5, amax.astype(np.float64))
    scale = (127.0 / m).astype(np.float32)
    v = np.rint((x * scale[:, None]).astype(np.float32))
    q = np.clip(v, -128.0, 127.0).astype(np.int8)
    return q, scale


def quantize_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_q8_k: x f32 [n, K] -> q int8 [n, K], d f32 [n, K/256]."""
    n, k = x.shape
    blocks = x.reshape(n, k // QK_K, QK_K)
    a = np.abs(blocks)
    idx = a.argmax(axis=2)  # the (|x|, lowest index) reduction picks the first maximum
    maxv = np.take_along_axis(blocks, idx[..., None], axis=2)[..., 0]
    zero = maxv == 0
    safe = np.where(zero, np.float32(1), maxv).astype(np.float32)
    iscale = (np.float32(-127.0) / safe).astype(np.float32)
    q = np.minimum(127, np.rint((iscale[..., None] * blocks).astype(np.float32)))
    q = np.where(zero[..., None], 0, q).astype(np.int8)
    d = np.where(zero, np.float32(0), np.float32(1.0) / iscale).astype(np.float32)
    return q.reshape(n, k), d


def codes_by_vectors(codes: np.ndarray, cols: int, kind: str) -> np.ndarray:
    """The code (0..2) each weight element gets, walking 16-byte vectors as the kernels do.

    I2_S: vector u of a row covers bytes 16*(u&1).. of 128-element group u>>1, base element
    (u>>1)*128 + (u&1)*16; TQ: base (u>>2)*256 + ((u>>1)&1)*128 + (u&1)*16. Word i of the vector,
    byte j of the word, group g -> element base + 32*g + 4*i + j, bits shift = 6-2g (both are in
    the I2_S interleave on the device).
    """
    rows = codes.shape[0]
    vec = codes.reshape(rows, -1, 16)  # [rows, nvec, 16 bytes]
    nvec = vec.shape[1]
    out = np.full((rows, cols), -1, dtype=np.int16)
    u = np.arange(nvec)
    if kind == "i2s":
        base = (u >> 1) * 128 + (u & 1) * 16
    else:
        base = (u >> 2) * QK_K + ((u >> 1) & 1) * 128 + (u & 1) * 16
    for g in range(4):
        shift = 6 - 2 * g
        for i in range(4):
            for j in range(4):
                element = base + 32 * g + 4 * i + j  # [nvec]
                out[:, element] = (vec[:, :, 4 * i + j] >> shift) & 3
    if (out < 0).any():
        raise AssertionError("some element was never reached by the vector walk")
    return out


def linear_i2s(codes: np.ndarray, q: np.ndarray, scale: np.ndarray, w_scale: np.float32,
               out_scale: np.float32, rows: int, cols: int) -> np.ndarray:
    """linear_i2s: integer dot sum((code - 1) * q) by the vector walk, then (f32(dot) / s) *
    w_scale (* out)."""
    c = codes_by_vectors(codes.reshape(rows, cols // 4), cols, "i2s").astype(np.int64) - 1
    dot = q.astype(np.int64) @ c.T  # [n, M]
    y = (dot.astype(np.float32) / scale[:, None]).astype(np.float32) * np.float32(w_scale)
    if out_scale != 1:
        y = y * np.float32(out_scale)
    return y.astype(np.float32)


def linear_tq(codes: np.ndarray, w_d: np.ndarray, q: np.ndarray, act_d: np.ndarray,
              out_scale: np.float32, rows: int, cols: int) -> np.ndarray:
    """linear_tq: per 256-block exact sums, combined block by block in f32 (no FMA)."""
    c = codes_by_vectors(codes.reshape(rows, -1), cols, "tq").astype(np.int64) - 1
    n_blocks = cols // QK_K
    y = np.zeros((q.shape[0], rows), dtype=np.float32)
    for b in range(n_blocks):
        sl = slice(b * QK_K, (b + 1) * QK_K)
        sumi = (q[:, sl].astype(np.int64) @ c[:, sl].T).astype(np.float32)  # [n, M]
        dd = (w_d[None, :, b] * act_d[:, b, None]).astype(np.float32)
        y = (y + (sumi * dd).astype(np.float32)).astype(np.float32)
    if out_scale != 1:
        y = y * np.float32(out_scale)
    return y


def linear_q6k(codes: np.ndarray, sub: np.ndarray, w_d: np.ndarray, q: np.ndarray,
               act_d: np.ndarray, out_scale: np.float32) -> np.ndarray:
    """linear_q6_k: per 16-element sub-block an exact int dot times its int8 sub-scale, summed
    per 256-block, then combined block by block in f32 (no FMA), as linear_tq."""
    rows, cols = codes.shape
    n = q.shape[0]
    groups = cols // 16
    dots = np.einsum("nsk,msk->nms", q.reshape(n, groups, 16).astype(np.int64),
                     codes.reshape(rows, groups, 16).astype(np.int64))  # [n, M, K/16]
    scaled = dots * sub.astype(np.int64)[None, :, :]
    isum = scaled.reshape(n, rows, cols // QK_K, 16).sum(axis=3)  # [n, M, K/256]
    assert np.abs(isum).max(initial=0) < 2**31  # the kernel's int32 never overflows
    y = np.zeros((n, rows), dtype=np.float32)
    for b in range(cols // QK_K):
        dd = (w_d[None, :, b] * act_d[:, b, None]).astype(np.float32)
        y = (y + (isum[:, :, b].astype(np.float32) * dd).astype(np.float32)).astype(np.float32)
    if out_scale != 1:
        y = y * np.float32(out_scale)
    return y


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: np.float32) -> np.ndarray:
    sq = (x * x).astype(np.float64).sum(axis=1)
    mean = (sq / x.shape[1]).astype(np.float32)
    scale = (np.float32(1) / np.sqrt((mean + np.float32(eps)).astype(np.float32)))
    return ((x * scale.astype(np.float32)[:, None]).astype(np.float32) * w.reshape(1, -1))


def rope(x: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray, n_heads: int, head_dim: int,
         positions: np.ndarray) -> np.ndarray:
    """rope: row t's pairs rotated by the f64 tables' angles of position positions[t], in
    double, rounded to f32 once."""
    n = x.shape[0]
    half = head_dim // 2
    heads = x.reshape(n, n_heads, head_dim).astype(np.float64)
    c = cos_t.reshape(-1, half)[positions][:, None, :]
    s = sin_t.reshape(-1, half)[positions][:, None, :]
    a = heads[..., :half]
    b = heads[..., half:]
    out = np.concatenate([a * c - b * s, a * s + b * c], axis=-1)
    return out.reshape(n, n_heads * head_dim).astype(np.float32)


def cache_rows(table: np.ndarray, block: int, positions: np.ndarray) -> np.ndarray:
    """cache_row of each position through a block table (block 0: the position itself)."""
    if block == 0:
        return positions
    return table[positions // block].astype(np.int64) * block + positions % block


def _merge(ms: np.ndarray, ls: np.ndarray, accs: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """Online-softmax runs (max, exp sum, unnormalized output; runs on axis 0) merged
    (merge_runs): runs that saw no key hold max -inf and weigh 0."""
    m_all = ms.max(axis=0)
    e = np.exp(ms - m_all)
    return m_all, (ls * e).sum(axis=0, dtype=np.float32), (accs * e[..., None]).sum(axis=0)


def attention_parts(q: np.ndarray, keys: np.ndarray, vals: np.ndarray, rows: list[np.ndarray],
                    n_heads: int, n_kv_heads: int, head_dim: int, score_scale: np.float32,
                    warps: int, split: int, splits: int) -> np.ndarray:
    """Each split run of `split` positions (attention's blocks): online softmax per warp
    (positions first + w, first + w + warps, ...), merged as the kernel does, into (m, l, o)
    records [n, H, splits, D + 2]; runs past a row's last position stay 0. Every head and warp
    at once (arrays [warps, H]). q is rounded to f16 first. keys, vals: one layer of the caches
    [n_ctx, Hkv*D] as f32; rows[i]: the cache rows of query row i's positions 0 .. last."""
    n = q.shape[0]
    parts = np.zeros((n, n_heads, splits, head_dim + 2), dtype=np.float32)
    kv_of = np.arange(n_heads) // (n_heads // n_kv_heads)
    keys = keys.reshape(len(keys), n_kv_heads, head_dim)
    vals = vals.reshape(len(vals), n_kv_heads, head_dim)
    for i in range(n):
        qh = q[i].reshape(n_heads, head_dim).astype(np.float16).astype(np.float32)
        for s, first in enumerate(range(0, len(rows[i]), split)):
            run = rows[i][first:first + split]
            m = np.full((warps, n_heads), -np.inf, np.float32)
            l_sum = np.zeros((warps, n_heads), np.float32)
            acc = np.zeros((warps, n_heads, head_dim), np.float32)
            for at in range(0, len(run), warps):
                live = run[at:at + warps]
                w = len(live)
                k = keys[live][:, kv_of]  # [w, H, D]
                score = np.einsum("hd,whd->wh", qh, k).astype(np.float32) * score_scale
                m_new = np.maximum(m[:w], score)
                corr = np.exp(m[:w] - m_new)
                p = np.exp(score - m_new)
                l_sum[:w] = l_sum[:w] * corr + p
                acc[:w] = acc[:w] * corr[..., None] + p[..., None] * vals[live][:, kv_of]
                m[:w] = m_new
            m_all, total, o = _merge(m, l_sum, acc)
            parts[i, :, s, 0], parts[i, :, s, 1], parts[i, :, s, 2:] = m_all, total, o
    return parts


def attention_combine(parts: np.ndarray, positions: np.ndarray, split: int) -> np.ndarray:
    """The runs 0 .. position // split of each (row, head) merged, divided once -> [n, H*D]."""
    n, n_heads, _, width = parts.shape
    out = np.zeros((n, n_heads, width - 2), dtype=np.float32)
    for i in range(n):
        runs = parts[i, :, :int(positions[i]) // split + 1].transpose(1, 0, 2)  # [runs, H, .]
        _, total, o = _merge(runs[..., 0], runs[..., 1], runs[..., 2:])
        out[i] = o / total[:, None]
    return out.reshape(n, -1)
