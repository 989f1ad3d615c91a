"""The KernelBackend contract: buffers, weights and the ops a BitNet forward pass needs.

Every op works on device-resident buffers so that a GPU backend never round-trips to the host
between ops. Activations are float32 2-D buffers ``[n_tokens, width]``; token ids are int32 1-D.
The numerics below are the contract; ``bitnet.backends.reference`` implements them in plain numpy
and is the oracle every other backend is validated against (``bitnet.registry.validation``).

Shapes use: n = tokens in the batch, K = input features, M = output features, H / Hkv = query /
key-value heads, D = head dim.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np

from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.weight_formats import ActivationMode, WeightFormat, activation_mode_of
from bitnet.hal.arg_checks import attention_rows_fit


class Buffer(Protocol):
    """A backend-owned array. Only ``shape`` is public; read it with ``backend.download``."""

    shape: tuple[int, ...]


class KVCache(Protocol):
    """A backend-owned key/value cache for all layers (see ``kv_cache_alloc``)."""

    n_ctx: int


@dataclass(frozen=True)
class WeightTensor:
    """A weight as the loader found it: raw on-disk bytes, not yet on any device.

    ``data`` is a uint8 array (usually a read-only memmap into the GGUF file):
    - row formats (F32/F16/BF16/Q8_0/Q6_K/TQ1_0/TQ2_0): shape ``[rows, row_bytes]``;
    - I2_S: shape ``[rows * cols // 4 + 32]``: packed codes of the flattened tensor, then the
      f32 tensor scale, then 28 bytes of padding (docs/formats.md 2.2).
    """

    name: str  # GGUF tensor name, e.g. "blk.0.attn_q.weight"
    format: WeightFormat
    rows: int  # M (GGUF ne1)
    cols: int  # K (GGUF ne0)
    data: np.ndarray
    out_scale: float = 1.0  # arch `bitnet` `.scale` tensors: multiplies the matmul output

    @property
    def activation_mode(self) -> ActivationMode:
        return activation_mode_of(self.format)


class Weight(Protocol):
    """A backend-owned weight (possibly repacked). ``format``, ``rows``, ``cols`` as loaded."""

    format: WeightFormat
    rows: int
    cols: int


@dataclass(frozen=True)
class LayerSpec:
    """One transformer block, as the model holds it on a backend, offered to
    ``KernelBackend.prepare_layer``. Sub-norms are None in a block without them."""

    attn_norm: Buffer  # f32 [1, d]
    attn_q: Weight  # [H*D, d]
    attn_k: Weight  # [Hkv*D, d]
    attn_v: Weight  # [Hkv*D, d]
    attn_sub_norm: Buffer | None  # f32 [1, H*D]
    attn_output: Weight  # [d, H*D]
    ffn_norm: Buffer  # f32 [1, d]
    ffn_gate: Weight  # [F, d]
    ffn_up: Weight  # [F, d]
    ffn_sub_norm: Buffer | None  # f32 [1, F]
    ffn_down: Weight  # [d, F]
    activation: str  # "relu2" or "silu"
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    eps: float


class KernelBackend:
    """One backend instance driving one device. Subclass it and fill in every op you claim.

    A required method left out raises NotImplementedError naming itself. An op a backend lacks is
    an op its ``capabilities`` do not list; the engine never silently sends it elsewhere.
    """

    name: str = "unnamed"  # the descriptor's name
    device: DeviceInfo
    capabilities: Capabilities

    # -- buffers -----------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> Buffer:
        """Copy a host array (float32 2-D, or int32 1-D token ids) to the device."""
        raise NotImplementedError(f"{type(self).__name__}.upload")

    def download(self, buf: Buffer) -> np.ndarray:
        """Copy a buffer back to a new host array of the same shape and dtype."""
        raise NotImplementedError(f"{type(self).__name__}.download")

    def load_weight(self, tensor: WeightTensor) -> Weight:
        """Take a weight onto the device, repacking into the backend's own layout if it wants.

        Called once per tensor at load time. Must not keep a reference to ``tensor.data`` unless
        it uses it in place (the memmap stays open as long as the model does).
        """
        raise NotImplementedError(f"{type(self).__name__}.load_weight")

    def kv_cache_alloc(self, n_layers: int, n_ctx: int, n_kv_heads: int, head_dim: int) -> KVCache:
        """Allocate K and V for every layer: ``[n_layers, n_ctx, n_kv_heads * head_dim]`` each,
        stored as float16 (as llama.cpp and bitnet.cpp store them). The cache object has
        ``n_layers``, ``n_ctx`` and ``width`` (= n_kv_heads * head_dim).

        One sequence uses it whole (position p is row p); a server uses it as a pool of blocks
        of ``KV_BLOCK`` rows that sequences address through block tables
        (``bitnet.hal.kv_blocks``: row(p) = table[p // KV_BLOCK] * KV_BLOCK + p % KV_BLOCK)."""
        raise NotImplementedError(f"{type(self).__name__}.kv_cache_alloc")

    # -- ops ---------------------------------------------------------------------------------

    def embed(self, table: Weight, token_ids: Buffer) -> Buffer:
        """Rows of ``table`` [V, K] (any float format) for int32 ids [n] -> f32 [n, K].

        Ids outside [0, V) are the engine's job to reject before this call."""
        raise NotImplementedError(f"{type(self).__name__}.embed")

    def rmsnorm(self, x: Buffer, weight: Buffer, eps: float) -> Buffer:
        """f32 [n, K], f32 [1, K] -> ``x / sqrt(mean(x**2) + eps) * weight`` per row (f32 out;
        the reference sums squares in float64)."""
        raise NotImplementedError(f"{type(self).__name__}.rmsnorm")

    def linear_ternary(self, w: Weight, x: Buffer) -> Buffer:
        """Ternary weight [M, K] times f32 x [n, K] -> f32 [n, M], with the format's activation
        quantization (``bitnet.formats.activations`` is the bit-level reference):

        - I2_S (per-token int8, bitnet.cpp): per row, ``m = max(1e-5, max|x|)`` in float64,
          ``s = float32(127 / m)``, ``q = clip(rint(float32(x * s)), -128, 127)``; then
          ``dot = sum((code - 1) * q)`` exactly in integers and
          ``y = float32(float32(dot) / s) * float32(tensor_scale)``.
        - TQ1_0 / TQ2_0 (Q8_K, llama.cpp): per 256-block of each row, ``amax`` = the element of
          largest |x| (signed, first found), ``iscale = -127 / amax``, ``q = min(127,
          rint(iscale * x))``, ``d_y = 1 / iscale`` (0 and q = 0 for an all-zero block); then per
          output ``y = sum_b float32(sumi_b) * (d_w_b * d_y_b)`` accumulated in float32 in block
          order, where ``sumi_b = sum((t - 1) * q)`` is exact.

        Integer parts are exact in every backend; the float epilogue may differ in the last ulps
        (the validation suite states the tolerance). ``w.out_scale`` (when != 1) multiplies y.
        """
        raise NotImplementedError(f"{type(self).__name__}.linear_ternary")

    def linear_float(self, w: Weight, x: Buffer) -> Buffer:
        """Float-format weight [M, K] (F32/F16/BF16/Q8_0/Q6_K) times f32 x [n, K] -> f32 [n, M].

        - F32/F16/BF16/Q8_0: dequantize w to float32 exactly, then an f32 matmul (any order).
        - Q6_K: as llama.cpp and bitnet.cpp run it (their only path for a Q6_K head): x is
          quantized to Q8_K exactly as in ``linear_ternary``'s TQ path; then per 256-block b
          of each output the exact integer ``isum_b = sum_j sc_j * sum_{k in sub-block j}
          q6_k * q8_k`` (q6 in -32..31, sc_j the block's 16 int8 sub-scales) and
          ``y = sum_b float32(isum_b) * (d_w_b * d_y_b)`` accumulated in float32 in block
          order (``bitnet.hal.device_layout.split_q6_k_ints`` gives the integer parts).
          This matches the engines' logits far closer than f32 activations and is the
          integer-SIMD fast path.
        ``w.out_scale`` (when != 1) multiplies y."""
        raise NotImplementedError(f"{type(self).__name__}.linear_float")

    def rope(self, x: Buffer, pos: int, n_heads: int, head_dim: int, theta: float) -> Buffer:
        """NEOX rotary embedding of f32 x [n, n_heads * head_dim] for positions pos .. pos+n-1.

        For each head, pair (i, i + D/2) for i < D/2 is rotated by angle ``p * theta**(-2i/D)``:
        ``(a, b) -> (a cos - b sin, a sin + b cos)``. The reference computes angles in float64."""
        raise NotImplementedError(f"{type(self).__name__}.rope")

    def attention(
        self,
        q: Buffer,
        k: Buffer,
        v: Buffer,
        cache: KVCache,
        layer: int,
        pos: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        table: np.ndarray | None = None,
    ) -> Buffer:
        """Causal attention with the KV cache. q [n, H*D], k and v [n, Hkv*D] (f32, after RoPE).

        First stores k and v (rounded to float16) at positions pos .. pos+n-1 of ``layer``; then
        for token i (absolute position p = pos + i) and head h, with kv head ``h // (H // Hkv)``:
        ``softmax(q_ih . K[0..p] / sqrt(D)) @ V[0..p]`` over the cached (f16) keys and values,
        the softmax max-subtracted in f32. q is rounded to float16 before the q.K product, as
        ggml's F16 dot converts it (without this, I2_S fixtures drift ~0.5 logits from bitnet.cpp).
        Returns f32 [n, H*D].

        ``table`` None: position p is cache row p (pos + n <= n_ctx). Else a host int32 block
        table [T] (``bitnet.hal.kv_blocks``) places every position, read and written: position
        p is row ``table[p // KV_BLOCK] * KV_BLOCK + p % KV_BLOCK``. The results are the same
        bits as with a contiguous cache holding the same values."""
        raise NotImplementedError(f"{type(self).__name__}.attention")

    def relu2_mul(self, gate: Buffer, up: Buffer) -> Buffer:
        """``max(gate, 0)**2 * up``, f32 [n, F] -> [n, F] (BitNet b1.58's squared-ReLU gating)."""
        raise NotImplementedError(f"{type(self).__name__}.relu2_mul")

    def silu_mul(self, gate: Buffer, up: Buffer) -> Buffer:
        """``gate * sigmoid(gate) * up``, f32 [n, F] -> [n, F] (arch `bitnet` gating)."""
        raise NotImplementedError(f"{type(self).__name__}.silu_mul")

    def add(self, a: Buffer, b: Buffer) -> Buffer:
        """Elementwise ``a + b``, f32 [n, K] -> new [n, K] (residual connections)."""
        raise NotImplementedError(f"{type(self).__name__}.add")

    def slice_rows(self, x: Buffer, start: int, stop: int) -> Buffer:
        """Rows start .. stop-1 of x [n, K] -> [stop - start, K] (the last token, for the head)."""
        raise NotImplementedError(f"{type(self).__name__}.slice_rows")

    def concat_rows(self, parts: list[Buffer]) -> Buffer:
        """Optional. Stack f32 [n_i, K] buffers into [sum n_i, K], in order (the default
        ``attention_rows`` joins its per-sequence rows with it)."""
        raise NotImplementedError(f"{type(self).__name__}.concat_rows")

    def attention_rows(self, q: Buffer, k: Buffer, v: Buffer, cache: KVCache, layer: int,
                       positions: np.ndarray, n_heads: int, n_kv_heads: int, head_dim: int,
                       theta: float, tables: np.ndarray) -> Buffer:
        """Optional. One decode step of B sequences sharing one paged cache: row r of q [B, H*D],
        k and v [B, Hkv*D] (f32, BEFORE RoPE) is the token of sequence r at position
        ``positions[r]`` (host int32 [B]) through block table ``tables[r]`` (host int32 [B, T]).
        No two rows write one cache row; rows may share the blocks of a common prefix.

        Exactly, row by row: ``attention(rope(q_r, p_r, H), rope(k_r, p_r, Hkv), v_r, cache,
        layer, p_r, table=tables[r])``; returns f32 [B, H*D]. This default composes those ops
        (with slice_rows and concat_rows); a backend overrides it to run the B rows in one call,
        which is what makes a batched decode step of a small model cheaper than B single
        steps."""
        who = getattr(self, "name", type(self).__name__)
        tables, positions = attention_rows_fit(who, q, k, v, cache, positions, tables, n_heads,
                                               n_kv_heads, head_dim)
        parts = []
        for r, pos in enumerate(positions.tolist()):
            q_r = self.rope(self.slice_rows(q, r, r + 1), pos, n_heads, head_dim, theta)
            k_r = self.rope(self.slice_rows(k, r, r + 1), pos, n_kv_heads, head_dim, theta)
            parts.append(self.attention(q_r, k_r, self.slice_rows(v, r, r + 1), cache, layer,
                                        pos, n_heads, n_kv_heads, head_dim, table=tables[r]))
        return self.concat_rows(parts)

    def prepare_layer(self, spec: LayerSpec) -> Any | None:
        """Optional. A handle with which ``decode_layer`` runs this whole block for one token,
        or None (the default: the model runs the block op by op). A backend offers it where
        the ops between the matmuls (host calls, thread fork and join) cost a visible share of
        a decode step; the result must be the bits of the op-by-op path."""
        return None

    def decode_layer(self, layer: Any, h: Buffer, cache: KVCache, index: int,
                     pos: int, table: np.ndarray | None = None) -> Buffer:
        """Only for a handle from ``prepare_layer``. One decode token: h f32 [1, d] at position
        ``pos`` -> the block's output f32 [1, d], exactly what the ops give for::

            x = rmsnorm(h, attn_norm); q, k, v = attn_q(x), attn_k(x), attn_v(x)
            a = attention(rope(q, pos, H), rope(k, pos, Hkv), v, cache, index, pos)
            h = add(h, attn_output(rmsnorm(a, attn_sub_norm)))
            x = rmsnorm(h, ffn_norm)
            h = add(h, ffn_down(rmsnorm(act_mul(ffn_gate(x), ffn_up(x)), ffn_sub_norm)))

        (act_mul: relu2_mul or silu_mul; a None sub-norm is skipped), filling position ``pos`` of
        layer ``index`` of the cache (through ``table`` as in ``attention``)."""
        raise NotImplementedError(f"{type(self).__name__}.decode_layer")

    def synchronize(self) -> None:
        """Wait for all queued work (a no-op for synchronous backends)."""

    @contextmanager
    def recording(self) -> Iterator[Any]:
        """Optional. Capture the ops run inside for replay: yields an object whose
        ``replay(pos)`` runs them again at position ``pos`` (below its ``positions``) on the
        same buffers, or None (this default) when the backend cannot: the ops then ran as
        usual. Where the captured ops include ``attention_rows`` (a batched step), the object
        replays with ``replay_rows(positions, tables)`` instead: host int32 [B] and [B, T] of
        the shapes captured. ``bitnet.core.replay`` records decode steps this way."""
        yield None

    def write(self, buf: Buffer, array: np.ndarray) -> None:
        """Optional (needed with ``recording``). Overwrite buf with a host array of its shape
        and dtype: a recorded step's token ids."""
        raise NotImplementedError(f"{type(self).__name__}.write")

    def submission_count(self) -> int | None:
        """Optional. Host submissions so far (kernel launches, queue submits, graph launches),
        for ``bitnet bench``'s submissions per token; None where ops are direct calls."""
        return None

    def close(self) -> None:
        """Free device resources (optional; called when the model is closed)."""

    def info(self) -> dict[str, Any]:
        """Extra facts for receipts and ``bitnet devices`` (kernel variant, threads, ...)."""
        return {}
