"""The numpy reference backend: every KernelBackend op, plainly, exactly as bitnet.hal specifies.

This is the oracle other backends are validated against, so it is written to be read. Buffers
are ordinary numpy arrays (float32 2-D activations, int32 1-D token ids). Weights are decoded
ONCE in ``load_weight`` into small records, so each op is a few vectorized numpy lines:

- ternary formats -> ``TernaryWeight``: int8 values [M, K] in {-1, 0, 1} plus scales (one f32
  per tensor for I2_S, one per 256-block for TQ1_0 / TQ2_0);
- float formats -> ``FloatWeight``: the f32 [M, K] matrix the format decodes to.

Integer dot products run as float32 matmuls: every partial sum is an integer of magnitude at
most 128 * K < 2**24 (K < 131072 is checked at load), so float32 holds each one exactly and the
result is exact whatever order BLAS adds in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bitnet.formats import dequantize, unpack_ternary
from bitnet.formats.activations import quantize_per_token_i8, quantize_q8_k
from bitnet.hal.device_layout import split_q6_k_ints
from bitnet.hal.arg_checks import attention_fits
from bitnet.hal.backend import KernelBackend, WeightTensor
from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.kv_blocks import cache_rows
from bitnet.hal.weight_formats import FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat
from bitnet.hal.ops import ALL_OPS

QK_K = 256  # TQ weight blocks and Q8_K activation blocks
MAX_EXACT_K = 2**24 // 128  # beyond this an int8 x ternary sum may not fit a float32 exactly


def _int_matmul(q: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int8 q [n, K] times ternary int8 values [M, K] transposed -> exact sums as f32 [n, M]."""
    return q.astype(np.float32) @ values.astype(np.float32).T


@dataclass(frozen=True)
class TernaryWeight:
    """A ternary weight decoded at load time."""

    format: WeightFormat
    rows: int  # M
    cols: int  # K
    values: np.ndarray  # int8 [M, K] in {-1, 0, 1}
    scales: np.ndarray  # f32 [1, 1] (I2_S, per tensor) or [M, K//256] (TQ, per block)
    out_scale: float


@dataclass(frozen=True)
class FloatWeight:
    """A float-format weight decoded to f32 at load time (exactly, as its format defines)."""

    format: WeightFormat
    rows: int
    cols: int
    matrix: np.ndarray  # f32 [M, K]
    out_scale: float


@dataclass(frozen=True)
class Q6KWeight(FloatWeight):
    """A Q6_K weight: the exact f32 matrix (for embed) and the integer parts of its blocks
    (for linear_float's Q6_K x Q8_K dot)."""

    scaled: np.ndarray  # int16 [M, K]: sub-block scale * q6, exact
    d: np.ndarray  # f32 [M, K/256]: each block's f16 scale


def _q6_k_weight(tensor: WeightTensor) -> Q6KWeight:
    codes, sub, d = split_q6_k_ints(tensor)  # int8 [M, K], int8 [M, K/16], f32 [M, K/256]
    scaled = codes.astype(np.int16) * np.repeat(sub.astype(np.int16), 16, axis=1)  # [M, K]
    return Q6KWeight(tensor.format, tensor.rows, tensor.cols, dequantize(tensor),
                     float(tensor.out_scale), scaled, d)


@dataclass
class ReferenceKVCache:
    """K and V of every layer, stored as float16 like llama.cpp's and bitnet.cpp's default."""

    n_ctx: int
    k: np.ndarray  # f16 [n_layers, n_ctx, Hkv*D]
    v: np.ndarray  # f16 [n_layers, n_ctx, Hkv*D]

    @property
    def n_layers(self) -> int:
        return self.k.shape[0]

    @property
    def width(self) -> int:
        return self.k.shape[2]


def _f32_2d(x: Any, who: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"reference.{who}: expects a float32 2-D buffer, got {x.dtype} {x.shape}")
    return x


def _check_width(w: Any, x: np.ndarray, who: str) -> None:
    if x.shape[1] != w.cols:
        raise ValueError(f"reference.{who}: weight has K={w.cols}, input has width {x.shape[1]}")


class ReferenceBackend(KernelBackend):
    """Plain numpy on the host CPU. Slow and exact: the oracle."""

    name = "reference"

    def __init__(self, device: DeviceInfo) -> None:
        self.device = device
        self.capabilities = Capabilities(
            ops=ALL_OPS,
            ternary_formats=TERNARY_FORMATS,
            float_formats=FLOAT_FORMATS,
            notes=("numpy oracle: decodes weights once at load, exact integer dot products",),
        )

    # -- buffers -----------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)
        if array.dtype not in (np.float32, np.int32):
            raise ValueError(f"reference.upload: expects float32 or int32, got {array.dtype}")
        return array.copy()

    def download(self, buf: np.ndarray) -> np.ndarray:
        return np.array(buf, copy=True)

    def load_weight(self, tensor: WeightTensor) -> TernaryWeight | FloatWeight:
        """Decode the raw bytes once (the memmap is not kept)."""
        if tensor.format in TERNARY_FORMATS:
            if tensor.cols >= MAX_EXACT_K:
                raise ValueError(f"reference.load_weight: {tensor.name} has K={tensor.cols}; "
                                 f"exact float32 integer sums need K < {MAX_EXACT_K}")
            values, scales = unpack_ternary(tensor)
            return TernaryWeight(tensor.format, tensor.rows, tensor.cols, values, scales,
                                 float(tensor.out_scale))
        if tensor.format is WeightFormat.Q6_K:
            return _q6_k_weight(tensor)
        if tensor.format in FLOAT_FORMATS:
            matrix = dequantize(tensor)
            return FloatWeight(tensor.format, tensor.rows, tensor.cols, matrix,
                               float(tensor.out_scale))
        raise ValueError(
            f"reference.load_weight: {tensor.name} has unsupported format {tensor.format}"
        )

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int,
                       head_dim: int) -> ReferenceKVCache:
        shape = (n_layers, n_ctx, n_kv_heads * head_dim)
        return ReferenceKVCache(n_ctx, np.zeros(shape, np.float16), np.zeros(shape, np.float16))

    # -- ops ---------------------------------------------------------------------------------

    def embed(self, table: FloatWeight, token_ids: np.ndarray) -> np.ndarray:
        """Rows of the decoded table [V, K] for int32 ids [n] -> f32 [n, K]."""
        if not isinstance(table, FloatWeight):
            raise TypeError("reference.embed: the table must be a float-format weight")
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= table.rows):
            # numpy would wrap a negative id silently; the oracle says so instead
            raise ValueError(f"reference.embed: token ids must be in [0, {table.rows})")
        return table.matrix[ids].copy()

    def rmsnorm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        """ggml's order: sum of f32 squares in float64, mean rounded to f32,
        ``scale = 1 / sqrt(mean + eps)`` in f32, then ``(x * scale) * weight`` in f32."""
        x = _f32_2d(x, "rmsnorm")
        squares = (x * x).astype(np.float64)  # f32 products, summed in double
        mean = (squares.sum(axis=1) / x.shape[1]).astype(np.float32)  # [n]
        scale = np.float32(1) / np.sqrt(mean + np.float32(eps))  # f32 [n]
        return (x * scale[:, None]) * np.asarray(weight, dtype=np.float32).reshape(1, -1)

    def linear_ternary(self, w: TernaryWeight, x: np.ndarray) -> np.ndarray:
        x = _f32_2d(x, "linear_ternary")
        if not isinstance(w, TernaryWeight):
            raise TypeError("reference.linear_ternary: weight is not ternary")
        _check_width(w, x, "linear_ternary")
        if w.format is WeightFormat.I2_S:
            y = self._linear_per_token_i8(w, x)
        else:
            y = self._linear_q8_k(w, x)
        if w.out_scale != 1.0:
            y = y * np.float32(w.out_scale)
        return y

    @staticmethod
    def _linear_per_token_i8(w: TernaryWeight, x: np.ndarray) -> np.ndarray:
        """bitnet.cpp (docs/formats.md 2.5, 2.6): int8 per token, exact integer dot, then
        ``y = float32(float32(dot) / s) * float32(tensor_scale)``: a divide, then a multiply."""
        q, s = quantize_per_token_i8(x)  # int8 [n, K], f32 [n]
        dot = _int_matmul(q, w.values)  # [n, M], exact integers held in f32
        y = dot / s[:, None]  # f32 divide
        return y * w.scales[0, 0]

    @staticmethod
    def _linear_q8_k(w: TernaryWeight, x: np.ndarray) -> np.ndarray:
        """llama.cpp generic TQ x Q8_K (docs/formats.md 1.5, 1.6): per 256-block an exact integer
        sum, then ``y += float32(sumi_b) * (d_w_b * d_y_b)`` in f32, block by block in order."""
        q, d_y = quantize_q8_k(x)  # int8 [n, K], f32 [n, K//256]
        n_blocks = w.cols // QK_K
        y = np.zeros((x.shape[0], w.rows), dtype=np.float32)  # [n, M]
        for b in range(n_blocks):
            cols = slice(b * QK_K, (b + 1) * QK_K)
            sumi = _int_matmul(q[:, cols], w.values[:, cols])  # [n, M], exact
            d = w.scales[None, :, b] * d_y[:, b, None]  # f32 [n, M]: d_w * d_y
            y += sumi * d
        return y

    def linear_float(self, w: FloatWeight, x: np.ndarray) -> np.ndarray:
        """The decoded f32 weight times x in f32: [n, K] @ [K, M] -> [n, M]."""
        x = _f32_2d(x, "linear_float")
        if not isinstance(w, FloatWeight):
            raise TypeError("reference.linear_float: weight is not a float format")
        _check_width(w, x, "linear_float")
        if isinstance(w, Q6KWeight):
            y = self._linear_q6_k(w, x)
        else:
            y = x @ w.matrix.T
        if w.out_scale != 1.0:
            y = y * np.float32(w.out_scale)
        return y

    @staticmethod
    def _linear_q6_k(w: Q6KWeight, x: np.ndarray) -> np.ndarray:
        """llama.cpp's Q6_K x Q8_K (hal KernelBackend.linear_float): per 256-block an exact
        integer sum of sub-scale * q6 * q8, then ``y += float32(isum_b) * (d_w_b * d_y_b)``."""
        q, d_y = quantize_q8_k(x)  # int8 [n, K], f32 [n, K//256]
        y = np.zeros((x.shape[0], w.rows), dtype=np.float32)  # [n, M]
        for b in range(w.cols // QK_K):
            cols = slice(b * QK_K, (b + 1) * QK_K)
            # |isum| < 256 * 127 * 32 * 127 < 2^31: exact in float64
            isum = q[:, cols].astype(np.float64) @ w.scaled[:, cols].T.astype(np.float64)
            d = w.d[None, :, b] * d_y[:, b, None]  # f32 [n, M]: d_w * d_y
            y += isum.astype(np.float32) * d
        return y

    def rope(self, x: np.ndarray, pos: int, n_heads: int, head_dim: int,
             theta: float) -> np.ndarray:
        """NEOX rotation of pairs (i, i + D/2) by ``p * theta**(-2i/D)``, in float64."""
        x = _f32_2d(x, "rope")
        n = x.shape[0]
        half = head_dim // 2
        heads = x.reshape(n, n_heads, head_dim).astype(np.float64)  # [n, H, D]
        positions = np.arange(pos, pos + n, dtype=np.float64)  # [n]
        inv_freq = float(theta) ** (-2.0 * np.arange(half, dtype=np.float64) / head_dim)  # [D/2]
        angles = positions[:, None] * inv_freq[None, :]  # [n, D/2]
        cos = np.cos(angles)[:, None, :]  # [n, 1, D/2]
        sin = np.sin(angles)[:, None, :]
        a = heads[..., :half]
        b = heads[..., half:]
        rotated = np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
        return rotated.reshape(n, n_heads * head_dim).astype(np.float32)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: ReferenceKVCache,
                  layer: int, pos: int, n_heads: int, n_kv_heads: int,
                  head_dim: int, table: np.ndarray | None = None) -> np.ndarray:
        """Store k, v (f16) at positions pos.. (through the block table, if any), then causal
        softmax attention over the cache with f16-rounded queries
        (bitnet.hal.KernelBackend.attention)."""
        q = _f32_2d(q, "attention")
        n = attention_fits("reference", q, np.asarray(k), np.asarray(v), cache, layer, pos,
                           n_heads, n_kv_heads, head_dim, table)
        end = pos + n
        rows = cache_rows(table, np.arange(end))  # the cache row of each position 0..end-1
        cache.k[layer, rows[pos:]] = np.asarray(k, dtype=np.float32)
        cache.v[layer, rows[pos:]] = np.asarray(v, dtype=np.float32)

        group = n_heads // n_kv_heads  # query heads per kv head
        keys = cache.k[layer, rows].astype(np.float32).reshape(end, n_kv_heads, head_dim)
        values = cache.v[layer, rows].astype(np.float32).reshape(end, n_kv_heads, head_dim)
        keys = np.repeat(keys, group, axis=1)  # [T, H, D]: query head h reads kv head h // group
        values = np.repeat(values, group, axis=1)
        # ggml's F16 dot converts q to f16 first (both bitnet.cpp's KQ matmul and llama.cpp's
        # flash attention); without it bitnet.cpp's I2_S logits are not reproduced
        queries = q.astype(np.float16).astype(np.float32).reshape(n, n_heads, head_dim)  # [n, H, D]

        scores = np.einsum("nhd,thd->hnt", queries, keys) * np.float32(1 / np.sqrt(head_dim))
        # causal mask: token i sits at position pos + i and sees positions 0 .. pos + i
        visible = np.arange(end)[None, :] <= (pos + np.arange(n))[:, None]  # [n, T]
        scores = np.where(visible[None], scores, np.float32(-np.inf))  # [H, n, T]
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        out = np.einsum("hnt,thd->nhd", probs, values)  # [n, H, D]
        return out.reshape(n, n_heads * head_dim).astype(np.float32)

    def relu2_mul(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        relu = np.maximum(_f32_2d(gate, "relu2_mul"), np.float32(0))
        return relu * relu * _f32_2d(up, "relu2_mul")

    def silu_mul(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        gate = _f32_2d(gate, "silu_mul")
        with np.errstate(over="ignore"):  # exp(-g) overflows to inf for g << 0: silu -> -0
            silu = gate / (np.float32(1) + np.exp(-gate))
        return silu * _f32_2d(up, "silu_mul")

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _f32_2d(a, "add") + _f32_2d(b, "add")

    def slice_rows(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= x.shape[0]:
            raise ValueError(f"reference.slice_rows: rows {start}..{stop} of {x.shape[0]}")
        return np.array(x[start:stop], copy=True)

    def concat_rows(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([_f32_2d(p, "concat_rows") for p in parts], axis=0)

    def info(self) -> dict[str, Any]:
        return {"kernel": "numpy", "numpy": np.__version__}
