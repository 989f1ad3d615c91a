"""bitnet_example: a minimal third-party bitnet backend (plain numpy), to copy and grow.

Two classes, as every backend has:
- ``ExampleDescriptor``: what the ``bitnet.backends`` entry point resolves to. Importing this
  module must stay cheap (numpy and bitnet.hal only): drivers and compiled code load in ``create``.
- ``ExampleBackend``: the ops on device buffers (here numpy arrays), with the numerics of
  ``bitnet.hal.KernelBackend``'s docstrings. bitnet checks every claimed op against its reference
  backend before using it (``bitnet validate --device example``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.hal import (
    ALL_OPS,
    FLOAT_FORMATS,
    BackendDescriptor,
    Capabilities,
    CreateOptions,
    DeviceInfo,
    DeviceKind,
    KernelBackend,
    WeightFormat,
    WeightTensor,
)
from bitnet.hal.arg_checks import attention_fits
from bitnet.hal.kv_blocks import cache_rows

__version__ = "0.1.0"


@dataclass
class ExampleWeight:
    """A weight decoded once at load: ternary values as int8 (+ scale), or a float matrix."""

    format: WeightFormat
    rows: int  # M
    cols: int  # K
    matrix: np.ndarray  # int8 [M, K] in {-1, 0, 1}, or f32 [M, K]
    scale: float  # I2_S tensor scale (1.0 for float formats)
    out_scale: float


@dataclass
class ExampleKVCache:
    n_layers: int
    n_ctx: int
    width: int  # Hkv * D
    k: np.ndarray  # f16 [layers, n_ctx, Hkv * D]
    v: np.ndarray  # f16 [layers, n_ctx, Hkv * D]


class ExampleBackend(KernelBackend):
    """numpy on the host. A real backend keeps buffers on its device and runs its own kernels."""

    name = "example"

    def __init__(self, device: DeviceInfo) -> None:
        self.device = device
        # Claim only what you implement: the registry gives a model to this backend only when
        # it supports every op and weight format the model needs. This example leaves out the
        # Q6_K head (its contract is an integer Q6_K x Q8_K dot, see hal.KernelBackend
        # .linear_float), so files with a Q6_K embedding go to another backend.
        self.capabilities = Capabilities(ops=ALL_OPS,
                                         ternary_formats=frozenset({WeightFormat.I2_S}),
                                         float_formats=FLOAT_FORMATS - {WeightFormat.Q6_K})

    # -- buffers -----------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> np.ndarray:
        return np.array(array, copy=True)

    def download(self, buf: np.ndarray) -> np.ndarray:
        return np.array(buf, copy=True)

    def load_weight(self, tensor: WeightTensor) -> ExampleWeight:
        # bitnet.formats decodes every on-disk format; a fast backend repacks into its own layout
        from bitnet.formats import dequantize
        from bitnet.formats.ternary import i2s_unpack

        if tensor.format is WeightFormat.I2_S:
            values, scale = i2s_unpack(tensor.data, tensor.rows, tensor.cols)
            return ExampleWeight(tensor.format, tensor.rows, tensor.cols, values, float(scale),
                                 tensor.out_scale)
        if tensor.format in FLOAT_FORMATS:
            return ExampleWeight(tensor.format, tensor.rows, tensor.cols, dequantize(tensor), 1.0,
                                 tensor.out_scale)
        raise ValueError(f"example backend: {tensor.name} is {tensor.format.value}, which it "
                         f"does not support")

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int,
                       head_dim: int) -> ExampleKVCache:
        shape = (n_layers, n_ctx, n_kv_heads * head_dim)
        return ExampleKVCache(n_layers, n_ctx, shape[2], np.zeros(shape, np.float16),
                              np.zeros(shape, np.float16))

    # -- ops ---------------------------------------------------------------------------------

    def embed(self, table: ExampleWeight, token_ids: np.ndarray) -> np.ndarray:
        return table.matrix[token_ids.astype(np.int64)].astype(np.float32)  # [n, K]

    def rmsnorm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        mean = ((x * x).astype(np.float64).mean(axis=1)).astype(np.float32)  # [n]
        scale = np.float32(1) / np.sqrt(mean + np.float32(eps))  # [n]
        return (x * scale[:, None]) * weight.reshape(1, -1)

    def linear_ternary(self, w: ExampleWeight, x: np.ndarray) -> np.ndarray:
        # per-token int8 activations (bitnet.cpp): s = 127 / max|x|, q = round(x * s)
        m = np.maximum(np.abs(x).max(axis=1).astype(np.float64), 1e-5)  # [n]
        s = (127.0 / m).astype(np.float32)  # [n]
        q = np.clip(np.rint(x * s[:, None]), -128, 127)  # [n, K], integers held in f32
        dot = q.astype(np.float64) @ w.matrix.T.astype(np.float64)  # [n, M], exact integers
        y = (dot.astype(np.float32) / s[:, None]) * np.float32(w.scale)
        return y * np.float32(w.out_scale) if w.out_scale != 1.0 else y

    def linear_float(self, w: ExampleWeight, x: np.ndarray) -> np.ndarray:
        y = x @ w.matrix.T  # [n, K] @ [K, M] -> [n, M]
        return y * np.float32(w.out_scale) if w.out_scale != 1.0 else y

    def rope(self, x: np.ndarray, pos: int, n_heads: int, head_dim: int,
             theta: float) -> np.ndarray:
        n = x.shape[0]
        half = head_dim // 2
        heads = x.reshape(n, n_heads, head_dim).astype(np.float64)  # [n, H, D]
        freq = float(theta) ** (-2.0 * np.arange(half) / head_dim)  # [D/2]
        angle = np.arange(pos, pos + n, dtype=np.float64)[:, None, None] * freq  # [n, 1, D/2]
        a = heads[..., :half]
        b = heads[..., half:]
        out = np.concatenate([a * np.cos(angle) - b * np.sin(angle),
                              a * np.sin(angle) + b * np.cos(angle)], axis=-1)
        return out.reshape(n, n_heads * head_dim).astype(np.float32)

    def attention(self, q, k, v, cache: ExampleKVCache, layer: int, pos: int, n_heads: int,
                  n_kv_heads: int, head_dim: int, table: np.ndarray | None = None) -> np.ndarray:
        # the shared checks (shapes, the cache's reach, the block table's entries)
        n = attention_fits(self.name, q, k, v, cache, layer, pos, n_heads, n_kv_heads,
                           head_dim, table)
        end = pos + n
        rows = cache_rows(table, np.arange(end))  # position -> cache row (paged: via table)
        cache.k[layer, rows[pos:]] = k  # stored as f16, as llama.cpp does
        cache.v[layer, rows[pos:]] = v
        group = n_heads // n_kv_heads
        keys = cache.k[layer, rows].astype(np.float32).reshape(end, n_kv_heads, head_dim)
        vals = cache.v[layer, rows].astype(np.float32).reshape(end, n_kv_heads, head_dim)
        # queries go through f16 too, like ggml's f16 dot (and bitnet's reference backend)
        qh = q.astype(np.float16).astype(np.float32).reshape(n, n_heads, head_dim)
        out = np.empty((n, n_heads, head_dim), np.float32)  # [n, H, D]
        for h in range(n_heads):
            kv = h // group
            scores = qh[:, h] @ keys[:, kv].T / np.float32(np.sqrt(head_dim))  # [n, T]
            future = np.arange(end)[None, :] > (pos + np.arange(n))[:, None]
            scores[future] = -np.inf
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[:, h] = (p / p.sum(axis=1, keepdims=True)) @ vals[:, kv]
        return out.reshape(n, n_heads * head_dim)

    def relu2_mul(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        r = np.maximum(gate, np.float32(0))
        return r * r * up

    def silu_mul(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return gate / (np.float32(1) + np.exp(-gate)) * up

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def slice_rows(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        return x[start:stop].copy()

    def concat_rows(self, parts: list[np.ndarray]) -> np.ndarray:
        # optional (so is attention_rows, which the base class composes from rope, attention,
        # slice_rows and this): with both, `bitnet serve` batches concurrent requests here
        return np.concatenate(parts, axis=0)


class ExampleDescriptor(BackendDescriptor):
    name = "example"
    version = __version__
    api_version = (3, 3)  # the bitnet.hal.API_VERSION range this plugin speaks
    kind = DeviceKind.CPU
    priority = 1  # static rank when nothing was measured: just above the reference (0)
    distribution = "bitnet-example"

    def probe(self) -> list[DeviceInfo]:
        # A GPU plugin imports its driver binding here and returns Unavailable(reason, remedy)
        # when it is missing; it must not open contexts or build kernels yet.
        return [DeviceInfo(self.name, 0, "numpy (example plugin)", DeviceKind.CPU)]

    def create(self, device: DeviceInfo, options: CreateOptions) -> ExampleBackend:
        return ExampleBackend(device)


descriptor = ExampleDescriptor()
