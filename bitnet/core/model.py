"""The ternary transformer, written over backend ops only (docs/formats.md 4.4, 4.5;
docs/model-facts.md 3).

    h = embed(tokens)
    for each layer:
        h = h + attn_output(sub_norm(attention(rope(q(x)), rope(k(x)), v(x))))  x = rmsnorm(h)
        h = h + ffn_down(sub_norm(act(ffn_gate(x)) * ffn_up(x)))                 x = rmsnorm(h)
    logits = head(rmsnorm(h))

The BitNet block's sub-norms are RMSNorms; the plain Llama block (arch llama) has none, and its
sub_norm is the identity. Every choice that depends on the file (ternary or float matmul, squared
ReLU or SiLU, sub-norms or not, tied head; Q/K row order is settled by the loader) is made once
at load time, so the forward pass never branches on a format, a device or a dtype.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from bitnet.core.replay import DecodeReplay
from bitnet.hal import (TERNARY_FORMATS, Buffer, KernelBackend, KVCache, LayerSpec, Weight,
                        WeightTensor)

# the ops a forward pass calls, counted for receipts
COUNTED_OPS = ("embed", "rmsnorm", "linear_ternary", "linear_float", "rope", "attention",
               "attention_rows", "relu2_mul", "silu_mul", "add", "slice_rows", "concat_rows",
               "decode_layer", "upload", "download")


class CountingBackend:
    """Forwards to a backend and counts the kernels that actually ran, by op and weight format."""

    def __init__(self, backend: KernelBackend) -> None:
        self.inner = backend
        self.counts: Counter[str] = Counter()
        for name in COUNTED_OPS:
            if hasattr(backend, name):
                setattr(self, name, self._counted(name, getattr(backend, name)))

    def _counted(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        counts = self.counts
        if name.startswith("linear") or name == "embed":
            def by_format(w: Weight, x: Buffer) -> Buffer:
                counts[f"{name}[{w.format.value}]"] += 1
                return fn(w, x)
            return by_format

        def plain(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)
        return plain

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def matmul_op(ops: Any, fmt: Any) -> Callable[[Weight, Buffer], Buffer]:
    """The op of ``ops`` that runs a weight of format ``fmt``: ternary formats with their
    activation quantization; float formats (an F16 file, or a Q8_0 head) as plain float
    matmuls, as llama.cpp and bitnet.cpp run them."""
    return ops.linear_ternary if fmt in TERNARY_FORMATS else ops.linear_float


@dataclass
class Linear:
    """One matmul: a device weight and the op that runs it, chosen at load from its format."""

    weight: Weight
    run: Callable[[Weight, Buffer], Buffer]

    def __call__(self, x: Buffer) -> Buffer:
        return self.run(self.weight, x)


@dataclass
class SubNorm:
    """A BitNet sub-norm: RMSNorm with a learned weight, or (weight None: the plain Llama block
    has none) the identity, which runs no kernel."""

    weight: Buffer | None  # f32 [1, width]
    ops: Any  # the (counting) backend whose rmsnorm runs it
    eps: float

    def __call__(self, x: Buffer) -> Buffer:
        if self.weight is None:
            return x
        return self.ops.rmsnorm(x, self.weight, self.eps)


@dataclass
class Layer:
    """One transformer block on the device. d = d_model, F = d_ff, H/Hkv heads, D head dim."""

    attn_norm: Buffer  # f32 [1, d]
    attn_q: Linear  # [H*D, d]
    attn_k: Linear  # [Hkv*D, d]
    attn_v: Linear  # [Hkv*D, d]
    attn_sub_norm: SubNorm  # [H*D]: RMSNorm, or identity in the plain Llama block
    attn_output: Linear  # [d, H*D]
    ffn_norm: Buffer  # f32 [1, d]
    ffn_gate: Linear  # [F, d]
    ffn_up: Linear  # [F, d]
    ffn_sub_norm: SubNorm  # [F]: RMSNorm, or identity in the plain Llama block
    ffn_down: Linear  # [d, F]


class Transformer:
    """Weights and KV cache on one backend, and the forward pass over them."""

    def __init__(self, config: Any, weights: Any, backend: KernelBackend, n_ctx: int,
                 progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> None:
        self.config = config
        self.ops = CountingBackend(backend)
        b = self.ops
        self.n_ctx = n_ctx
        self.token_embd = b.load_weight(weights.token_embd)  # [V, d], a float format
        self.head = self.token_embd if weights.output is None else b.load_weight(weights.output)
        self.output_norm = self._norm(weights.output_norm)
        self.gate = b.relu2_mul if config.activation == "relu2" else b.silu_mul
        layers = weights.layers if progress is None else progress(weights.layers)
        self.layers = [self._layer(lw) for lw in layers]
        # where the backend can run a whole block of one decode token in one call (the same
        # bits as the ops in _run), its handle per layer; None: op by op
        self.fused = [b.prepare_layer(self._spec(layer)) for layer in self.layers]
        self.no_fused = [None] * len(self.layers)
        self._cache: KVCache | None = None  # the one sequence's cache, made on first use
        self.replay = DecodeReplay(self)  # decode steps replayed where the backend records

    def _norm(self, w: np.ndarray) -> Buffer:
        return self.ops.upload(np.ascontiguousarray(w, dtype=np.float32).reshape(1, -1))

    def _sub_norm(self, w: np.ndarray | None) -> SubNorm:
        weight = None if w is None else self._norm(w)
        return SubNorm(weight, self.ops, self.config.rms_eps)

    def _linear(self, t: WeightTensor) -> Linear:
        return Linear(self.ops.load_weight(t), matmul_op(self.ops, t.format))

    def _layer(self, lw: Any) -> Layer:
        return Layer(
            attn_norm=self._norm(lw.attn_norm),
            attn_q=self._linear(lw.attn_q),
            attn_k=self._linear(lw.attn_k),
            attn_v=self._linear(lw.attn_v),
            attn_sub_norm=self._sub_norm(lw.attn_sub_norm),
            attn_output=self._linear(lw.attn_output),
            ffn_norm=self._norm(lw.ffn_norm),
            ffn_gate=self._linear(lw.ffn_gate),
            ffn_up=self._linear(lw.ffn_up),
            ffn_sub_norm=self._sub_norm(lw.ffn_sub_norm),
            ffn_down=self._linear(lw.ffn_down),
        )

    def _spec(self, layer: Layer) -> LayerSpec:
        c = self.config
        return LayerSpec(
            attn_norm=layer.attn_norm, attn_q=layer.attn_q.weight, attn_k=layer.attn_k.weight,
            attn_v=layer.attn_v.weight, attn_sub_norm=layer.attn_sub_norm.weight,
            attn_output=layer.attn_output.weight, ffn_norm=layer.ffn_norm,
            ffn_gate=layer.ffn_gate.weight, ffn_up=layer.ffn_up.weight,
            ffn_sub_norm=layer.ffn_sub_norm.weight, ffn_down=layer.ffn_down.weight,
            activation=c.activation, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
            head_dim=c.head_dim, rope_theta=c.rope_theta, eps=c.rms_eps)

    @property
    def cache(self) -> KVCache:
        """The KV cache of the one sequence ``forward`` runs by default (allocated on first
        use: a server that runs every sequence in its own pool never pays for it)."""
        if self._cache is None:
            self._cache = self.new_cache()
        return self._cache

    def new_cache(self, rows: int | None = None) -> KVCache:
        """A KV cache of ``rows`` positions per layer (default: the context), for one more
        sequence, or a pool of KV blocks (``bitnet.hal.kv_blocks``) shared through block
        tables."""
        c = self.config
        return self.ops.kv_cache_alloc(c.n_layers, self.n_ctx if rows is None else rows,
                                       c.n_kv_heads, c.head_dim)

    def forward(self, tokens: np.ndarray, pos: int, last_only: bool,
                cache: KVCache | None = None, table: np.ndarray | None = None) -> Buffer:
        """Run ``tokens`` (int32 [n]) of one sequence at positions pos .. pos+n-1, filling its KV
        cache (through its block table, int32 [T], where the cache is a shared pool:
        ``bitnet.hal.kv_blocks``). Returns logits f32 [n, V], or [1, V] for the last token
        when ``last_only``."""
        seg = Segment(pos, self.cache if cache is None else cache, table)
        return self._run(tokens, seg, last_only and len(tokens) > 1)

    def fill(self, tokens: np.ndarray, pos: int, cache: KVCache | None = None,
             table: np.ndarray | None = None) -> None:
        """``forward`` without the head: only fills the KV cache at pos .. pos+n-1 (a prompt's
        leading chunks, whose logits nobody samples: the head is a large share of a step)."""
        seg = Segment(pos, self.cache if cache is None else cache, table)
        self._run(tokens, seg, False, head=False)

    def forward_batch(self, tokens: np.ndarray, positions: np.ndarray, cache: KVCache,
                      tables: np.ndarray) -> Buffer:
        """One decode step for several sequences of one paged cache: token r (int32 [B]) sits
        at positions[r] (int32 [B]) through block table tables[r] (int32 [B, T]). The matmuls
        run batched, and attention runs for all B rows in one op (``attention_rows``).
        -> logits f32 [B, V]."""
        return self._run(tokens, Rows(np.asarray(positions, np.int32), cache,
                                      np.asarray(tables, np.int32)), last_only=False)

    def run_ids(self, ids: Buffer, n: int, pos: int, cache: KVCache) -> Buffer:
        """``forward`` of n token ids already on the device (int32 [n]), all logits [n, V]:
        what ``bitnet.core.replay`` records."""
        return self._run(np.empty(n, np.int32), Segment(pos, cache), False, ids)

    def run_rows_ids(self, ids: Buffer, positions: np.ndarray, cache: KVCache,
                     tables: np.ndarray) -> Buffer:
        """``forward_batch`` of B token ids already on the device (int32 [B]): what
        ``bitnet.core.replay`` records for a batched step."""
        return self._run(np.empty(len(positions), np.int32),
                         Rows(np.asarray(positions, np.int32), cache,
                              np.asarray(tables, np.int32)), False, ids)

    def _run(self, tokens: np.ndarray, where: "Segment | Rows", last_only: bool,
             ids: Buffer | None = None, head: bool = True) -> Buffer | None:
        c = self.config
        b = self.ops
        eps = c.rms_eps
        h = b.embed(self.token_embd, b.upload(tokens) if ids is None else ids)  # [n, d]
        # one decode token of one sequence: blocks the backend runs whole (the same bits)
        whole = self.fused if isinstance(where, Segment) and len(tokens) == 1 else self.no_fused
        for i, layer in enumerate(self.layers):
            if whole[i] is not None:
                h = b.decode_layer(whole[i], h, where.cache, i, where.pos, where.table)
                continue
            # attention: pre-norm, q/k/v, rotary positions, causal attention over the cache
            x = b.rmsnorm(h, layer.attn_norm, eps)
            a = self._attention(i, layer.attn_q(x), layer.attn_k(x), layer.attn_v(x), where)
            # BitNet's sub-norm sits before the output projection (none in a Llama block)
            a = layer.attn_sub_norm(a)
            h = b.add(h, layer.attn_output(a))
            # feed-forward: gated (squared ReLU or SiLU), sub-norm, down projection
            x = b.rmsnorm(h, layer.ffn_norm, eps)
            f = self.gate(layer.ffn_gate(x), layer.ffn_up(x))  # [n, F]
            f = layer.ffn_sub_norm(f)
            h = b.add(h, layer.ffn_down(f))
        if not head:
            return None
        if last_only:
            n = len(tokens)
            h = b.slice_rows(h, n - 1, n)  # [1, d]: only the next token's logits are needed
        h = b.rmsnorm(h, self.output_norm, eps)
        return b.linear_float(self.head, h)  # [n or 1, V]

    def _attention(self, layer: int, q: Buffer, k: Buffer, v: Buffer,
                   where: "Segment | Rows") -> Buffer:
        """RoPE + causal attention for q [n, H*D], k and v [n, Hkv*D]: n tokens of one sequence,
        or one token of each of n sequences."""
        c = self.config
        b = self.ops
        if isinstance(where, Rows):
            return b.attention_rows(q, k, v, where.cache, layer, where.positions, c.n_heads,
                                    c.n_kv_heads, c.head_dim, c.rope_theta, where.tables)
        q = b.rope(q, where.pos, c.n_heads, c.head_dim, c.rope_theta)
        k = b.rope(k, where.pos, c.n_kv_heads, c.head_dim, c.rope_theta)
        return b.attention(q, k, v, where.cache, layer, where.pos, c.n_heads, c.n_kv_heads,
                           c.head_dim, where.table)


@dataclass(frozen=True)
class Segment:
    """The tokens of one sequence: the position of the first, the sequence's KV cache and,
    where that cache is a pool, the sequence's block table."""

    pos: int
    cache: KVCache
    table: np.ndarray | None = None


@dataclass(frozen=True)
class Rows:
    """One token of each of several sequences of one paged cache: row r at positions[r]
    through block table tables[r]."""

    positions: np.ndarray  # int32 [B]
    cache: KVCache
    tables: np.ndarray  # int32 [B, T]
