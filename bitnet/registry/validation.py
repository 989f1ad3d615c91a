"""The validation suite: every op and weight format a backend claims, checked against the reference.

The suite is a table of ``Case`` records (op, parameters, tolerance, seed) with ids built from the
parameters, e.g. ``linear_ternary[tq2_0-n1-k256-m7]``. A case builds its inputs on the host from
its seed, runs them through a backend's ops, and downloads the result; the candidate passes a case
when its output has the reference's shape and dtype, is finite where the reference is, and

    max|candidate - reference| / max|reference|  <=  tolerance.

Tolerances (stated per case): data movement (``add``, ``slice_rows``, ``embed`` of exact formats) is
exact; ``linear_ternary`` has exact integer dots, so only the float epilogue may differ (1e-5);
float ops 1e-5; attention (f16 cache, exp) 1e-4; RoPE at position ~1000 2e-4 (an f32 angle there
is only good to ~6e-5); the end-to-end layer 2e-3, because an ulp of difference before an int8
activation quantizer can move one value by one level.

Edge shapes: K at the smallest legal size, K not a multiple of any SIMD width where the op allows it
(rmsnorm, elementwise), odd M, n = 1 (decode) and n > 1 (prefill), all-zero activation blocks, GQA
and a long context for attention. Head shapes of every ternary family (docs/model-facts.md 1): head
dims 64, 96 (1bitLLM large), 100 (1bitLLM 3B), 128 and 256 (Falcon3), GQA groups of 1 (MHA: TriLM,
1bitLLM), 2, 3 (Falcon3 12/4) and 4 (Llama3-8B 32/8, 2B-4T 20/5); the end-to-end layer in both block
kinds (BitNet: sub-norms, relu2; Llama: neither, SiLU). The same table feeds ``bitnet validate`` and
the conformance pytest plugin (``bitnet.testing.conformance``).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from bitnet.hal.backend import KernelBackend, LayerSpec, WeightTensor
from bitnet.hal.device import Capabilities
from bitnet.hal.kv_blocks import KV_BLOCK, blocks_for
from bitnet.hal.weight_formats import WeightFormat
from bitnet.hal.ops import Op

SUITE_VERSION = 5  # bump when cases or tolerances change: it invalidates cached results

EXACT = 0.0
FLOAT_TOL = 1e-5
LINEAR_TERNARY_TOL = 1e-5
ATTENTION_TOL = 1e-4
ROPE_FAR_TOL = 2e-4
LAYER_TOL = 2e-3

# Formats whose dequantization is a pure conversion (no scale products): embed is exact for them.
_EXACT_DEQUANT = frozenset({WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16})


@dataclass(frozen=True)
class Case:
    """One validation case. ``params`` keep their order; they name the case and feed its runner."""

    op: str  # an Op value, or "layer" for the end-to-end block
    params: tuple[tuple[str, Any], ...]
    tolerance: float
    ops: frozenset[Op]  # ops the case calls: a backend must claim them all to be given the case
    ternary: WeightFormat | None = None
    float_format: WeightFormat | None = None
    seed: int = 0

    @property
    def id(self) -> str:
        parts = []
        for key, value in self.params:
            if isinstance(value, WeightFormat):
                parts.append(value.value)
            elif key in ("edge", "block"):
                parts.append(str(value))
            else:
                parts.append(f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}")
        return f"{self.op}[{'-'.join(parts)}]"

    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def applies_to(self, caps: Capabilities) -> bool:
        if not self.ops <= caps.ops:
            return False
        if self.ternary is not None and self.ternary not in caps.ternary_formats:
            return False
        return self.float_format is None or self.float_format in caps.float_formats


@dataclass
class CaseResult:
    id: str
    passed: bool
    error: float | None  # max abs difference over max |reference|; None when not comparable
    tolerance: float
    message: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        err = "" if self.error is None else f" err={self.error:.2e} tol={self.tolerance:.0e}"
        msg = f"  {self.message}" if self.message else ""
        return f"{verdict} {self.id}{err}{msg}"


@dataclass
class ValidationResult:
    passed: bool
    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        total = len(self.results)
        if self.passed:
            return f"{total}/{total} cases passed"
        first = self.failed[0]
        detail = first.message or f"err {first.error:.2e} > tol {first.tolerance:.0e}"
        return f"{len(self.failed)}/{total} cases failed, first {first.id}: {detail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "seconds": self.seconds,
            "summary": self.summary(),
            "failed": [r.__dict__ for r in self.failed],
            "n_cases": len(self.results),
        }


# ---------------------------------------------------------------------------------------------
# host-side inputs (identical for candidate and reference: both come from the case's seed)


def ternary_weight(fmt: WeightFormat, rows: int, cols: int, rng: np.random.Generator,
                   out_scale: float = 1.0, name: str = "w") -> WeightTensor:
    """A random ternary weight [rows, cols] in ``fmt``, packed by ``bitnet.formats.ternary``."""
    from bitnet.formats import ternary

    values = rng.integers(-1, 2, size=(rows, cols)).astype(np.int8)  # [M, K] in {-1, 0, 1}
    if fmt is WeightFormat.I2_S:
        scale = float(np.float32(rng.uniform(0.01, 0.05)))
        data = ternary.i2s_pack(values, scale)
    else:
        # per-block scales as stored: f16-representable values
        d = rng.uniform(0.005, 0.05, size=(rows, cols // 256)).astype(np.float16)
        pack = ternary.tq2_pack if fmt is WeightFormat.TQ2_0 else ternary.tq1_pack
        data = pack(values, d.astype(np.float32))
    return WeightTensor(name, fmt, rows, cols, data, out_scale=out_scale)


def float_weight(fmt: WeightFormat, rows: int, cols: int, rng: np.random.Generator,
                 std: float = 0.1, name: str = "w") -> WeightTensor:
    """A random float-format weight [rows, cols] in ``fmt``, quantized by ``bitnet.formats``."""
    from bitnet.formats.floats import quantize_rows

    x = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
    return WeightTensor(name, fmt, rows, cols, quantize_rows(fmt, x))


def _act(rng: np.random.Generator, n: int, k: int, std: float = 1.0) -> np.ndarray:
    return (rng.standard_normal((n, k)) * std).astype(np.float32)  # [n, K]


def _norm_weight(rng: np.random.Generator, k: int) -> np.ndarray:
    return rng.uniform(0.5, 1.5, size=(1, k)).astype(np.float32)  # [1, K]


# ---------------------------------------------------------------------------------------------
# runners: one per op, each returns the downloaded f32 result


def _run_embed(b: KernelBackend, rng, fmt, v, k, n) -> np.ndarray:
    table = b.load_weight(float_weight(fmt, v, k, rng, std=0.25, name="token_embd.weight"))
    ids = rng.integers(0, v, size=n).astype(np.int32)  # [n]
    ids[0] = v - 1  # the last row: an off-by-one in row addressing shows here
    return b.download(b.embed(table, b.upload(ids)))


def _run_rmsnorm(b: KernelBackend, rng, n, k) -> np.ndarray:
    x = _act(rng, n, k, std=3.0)
    w = _norm_weight(rng, k)
    return b.download(b.rmsnorm(b.upload(x), b.upload(w), 1e-5))


def _run_linear_ternary(b: KernelBackend, rng, fmt, n, k, m, edge="", scale=1.0):
    w = b.load_weight(ternary_weight(fmt, m, k, rng, out_scale=scale))
    x = _act(rng, n, k)
    if edge == "zero":
        x[0, :] = 0.0  # I2_S: the 1e-5 floor of max|x|
        x[-1, :256] = 0.0  # Q8_K: an all-zero block gets d = 0 and q = 0
    return b.download(b.linear_ternary(w, b.upload(x)))


def _run_linear_float(b: KernelBackend, rng, fmt, n, k, m) -> np.ndarray:
    w = b.load_weight(float_weight(fmt, m, k, rng))
    x = _act(rng, n, k)
    return b.download(b.linear_float(w, b.upload(x)))


def _run_rope(b: KernelBackend, rng, n, h, d, pos, theta) -> np.ndarray:
    x = _act(rng, n, h * d)  # [n, H*D]
    return b.download(b.rope(b.upload(x), pos, h, d, float(theta)))


def _run_attention(b: KernelBackend, rng, n, h, kv, d, pos) -> np.ndarray:
    """Fill the cache for positions 0..pos-1 in chunks, then attend n new tokens; every call's
    output is compared (layer 1 of 2, so a backend that ignores ``layer`` is caught)."""
    n_ctx = pos + n + 3
    cache = b.kv_cache_alloc(2, n_ctx, kv, d)
    outputs = []
    start = 0
    chunks = []
    while start < pos:
        step = min(64, pos - start)
        chunks.append((start, step))
        start += step
    chunks.append((pos, n))
    for layer in (0, 1):
        for at, count in chunks:
            q = _act(rng, count, h * d)
            k = _act(rng, count, kv * d)
            v = _act(rng, count, kv * d)
            out = b.attention(b.upload(q), b.upload(k), b.upload(v), cache, layer, at, h, kv, d)
            if layer == 1:
                outputs.append(b.download(out))
    return np.concatenate(outputs, axis=0)  # [pos + n, H*D]


def _pool_tables(rng, n_blocks: int, lengths: Iterable[int]) -> tuple[int, list[np.ndarray]]:
    """Block tables (int32) for sequences of ``lengths`` positions over a pool whose blocks are
    handed out in a shuffled order (so no table is the identity); returns (pool rows, tables)."""
    need = [blocks_for(n) for n in lengths]
    order = rng.permutation(max(n_blocks, sum(need))).astype(np.int32)
    tables, at = [], 0
    for count in need:
        tables.append(order[at:at + count].copy())
        at += count
    return len(order) * KV_BLOCK, tables


def _run_attention_paged(b: KernelBackend, rng, h, kv, d, chunks) -> np.ndarray:
    """One sequence filled in ``chunks`` (token counts; chunks cross block edges) through a
    shuffled block table of a pool, at layer 1 of 2; the same calls on a contiguous cache must
    give the same bits (else this case fails). Returns the paged outputs [sum, H*D]."""
    total = sum(chunks)
    rows, (table,) = _pool_tables(rng, blocks_for(total) + 2, [total])
    pool = b.kv_cache_alloc(2, rows, kv, d)
    flat = b.kv_cache_alloc(2, total, kv, d)
    paged_out, flat_out = [], []
    pos = 0
    for count in chunks:
        q, k, v = (_act(rng, count, w) for w in (h * d, kv * d, kv * d))
        for layer in (0, 1):
            args = (b.upload(q), b.upload(k), b.upload(v))
            paged = b.attention(*args, pool, layer, pos, h, kv, d, table=table)
            plain = b.attention(*args, flat, layer, pos, h, kv, d)
        paged_out.append(b.download(paged))
        flat_out.append(b.download(plain))
        pos += count
    paged, plain = np.concatenate(paged_out), np.concatenate(flat_out)
    if not np.array_equal(paged, plain):
        raise ValueError("attention through a block table differs from the contiguous cache "
                         f"(max |diff| {np.max(np.abs(paged - plain)):.3g})")
    return paged


def _run_attention_rows(b: KernelBackend, rng, h, kv, d, history, share=False) -> np.ndarray:
    """Sequences of one paged pool with ``history`` tokens each already cached (by
    ``attention`` through their tables) decode two tokens each through ``attention_rows``.
    With ``share``, the last sequence's first block is the first sequence's (a reused prefix:
    it starts writing at position KV_BLOCK). Returns both steps' outputs [2B, H*D]."""
    lengths = [n + 2 for n in history]
    rows, tables = _pool_tables(rng, sum(blocks_for(n) for n in lengths) + 3, lengths)
    starts = [0] * len(history)
    if share:
        tables[-1][0] = tables[0][0]
        starts[-1] = KV_BLOCK
    pool = b.kv_cache_alloc(1, rows, kv, d)
    for table, n, start in zip(tables, history, starts):
        if n > start:
            b.attention(b.upload(_act(rng, n - start, h * d)),
                        b.upload(_act(rng, n - start, kv * d)),
                        b.upload(_act(rng, n - start, kv * d)), pool, 0, start, h, kv, d,
                        table=table)
    width = max(len(t) for t in tables)
    padded = np.stack([np.pad(t, (0, width - len(t))) for t in tables]).astype(np.int32)
    outputs = []
    for step in range(2):
        q, k, v = (_act(rng, len(history), w) for w in (h * d, kv * d, kv * d))
        positions = np.array([n + step for n in history], np.int32)
        out = b.attention_rows(b.upload(q), b.upload(k), b.upload(v), pool, 0, positions, h,
                               kv, d, 10000.0, padded)
        outputs.append(b.download(out))
    return np.concatenate(outputs, axis=0)


def _run_replay(b: KernelBackend, rng, h, kv, d, steps, start=0) -> np.ndarray:
    """A decode step (rope of q and k, attention over the cache) run eagerly on one cache, then
    recorded once (``KernelBackend.recording``) and replayed at each position on another, with
    the same inputs written into the recorded buffers. A replayed step must equal the eager
    step bit for bit (else this case fails); a backend without replay runs both eagerly.
    ``start`` tokens are cached in both first (one attention call), the steps follow them.
    Returns the eager outputs [steps, H*D] (compared with the reference)."""
    theta = 10000.0
    caches = [b.kv_cache_alloc(1, start + steps + 2, kv, d) for _ in range(2)]
    if start:
        prompt = [_act(rng, start, w) for w in (h * d, kv * d, kv * d)]
        for cache in caches:
            b.attention(*(b.upload(x) for x in prompt), cache, 0, 0, h, kv, d)
    inputs = [(_act(rng, 1, h * d), _act(rng, 1, kv * d), _act(rng, 1, kv * d))
              for _ in range(steps)]

    def step(q, k, v, pos, cache):
        q = b.rope(q, pos, h, d, theta)
        k = b.rope(k, pos, kv, d, theta)
        return b.attention(q, k, v, cache, 0, pos, h, kv, d)

    eager = [b.download(step(*(b.upload(x) for x in xs), pos, caches[0]))
             for pos, xs in enumerate(inputs, start)]
    held = [b.upload(np.zeros_like(x)) for x in inputs[0]]
    with b.recording() as recorded:
        out = step(*held, start, caches[1])
    for i, (pos, xs) in enumerate(enumerate(inputs, start)):
        if recorded is None:
            got = b.download(step(*(b.upload(x) for x in xs), pos, caches[1]))
        else:
            for buf, x in zip(held, xs):
                b.write(buf, x)
            recorded.replay(pos)
            got = b.download(out)
        if not np.array_equal(got, eager[i]):
            raise ValueError(f"the replayed step at position {pos} differs from the eager step "
                             f"(max |diff| {np.max(np.abs(got - eager[i])):.3g})")
    return np.concatenate(eager, axis=0)


def _run_pair(op: str):
    def run(b: KernelBackend, rng, n, k) -> np.ndarray:
        gate = _act(rng, n, k)
        up = _act(rng, n, k)
        return b.download(getattr(b, op)(b.upload(gate), b.upload(up)))

    return run


def _run_slice_rows(b: KernelBackend, rng, n, k, start, stop) -> np.ndarray:
    x = _act(rng, n, k)
    return b.download(b.slice_rows(b.upload(x), start, stop))


def _run_layer(b: KernelBackend, rng, fmt, head, hidden, heads, kv, ffn, n,
               block="bitnet") -> np.ndarray:
    """One block plus the head, composed only from backend ops: a prefill of n tokens, then one
    decode step. ``block``: "bitnet" (BitNet b1.58: sub-norms, relu2) or "llama" (no sub-norms,
    SiLU). Returns the logits of both [2, vocab]."""
    d = hidden // heads
    vocab = 96
    embd = b.load_weight(float_weight(head, vocab, hidden, rng, std=0.25))
    wq, wk, wv, wo = (b.load_weight(ternary_weight(fmt, rows, hidden, rng))
                      for rows in (hidden, kv * d, kv * d, hidden))
    w_gate = b.load_weight(ternary_weight(fmt, ffn, hidden, rng))
    w_up = b.load_weight(ternary_weight(fmt, ffn, hidden, rng))
    w_down = b.load_weight(ternary_weight(fmt, hidden, ffn, rng))
    norms = {name: b.upload(_norm_weight(rng, width)) for name, width in
             (("attn", hidden), ("attn_sub", hidden), ("ffn", hidden), ("ffn_sub", ffn),
              ("out", hidden))}
    cache = b.kv_cache_alloc(1, n + 1, kv, d)
    eps = 1e-5
    theta = 500000.0
    logits = []
    for pos, ids in ((0, rng.integers(0, vocab, size=n)), (n, rng.integers(0, vocab, size=1))):
        count = len(ids)
        x = b.embed(embd, b.upload(ids.astype(np.int32)))  # [count, hidden]
        # attention
        h = b.rmsnorm(x, norms["attn"], eps)
        q = b.rope(b.linear_ternary(wq, h), pos, heads, d, theta)  # [count, H*D]
        k = b.rope(b.linear_ternary(wk, h), pos, kv, d, theta)  # [count, Hkv*D]
        v = b.linear_ternary(wv, h)
        a = b.attention(q, k, v, cache, 0, pos, heads, kv, d)
        if block == "bitnet":
            a = b.rmsnorm(a, norms["attn_sub"], eps)
        x = b.add(x, b.linear_ternary(wo, a))
        # feed-forward
        h = b.rmsnorm(x, norms["ffn"], eps)
        gate = b.relu2_mul if block == "bitnet" else b.silu_mul
        f = gate(b.linear_ternary(w_gate, h), b.linear_ternary(w_up, h))  # [count, F]
        if block == "bitnet":
            f = b.rmsnorm(f, norms["ffn_sub"], eps)
        x = b.add(x, b.linear_ternary(w_down, f))
        # head on the last token
        last = b.rmsnorm(b.slice_rows(x, count - 1, count), norms["out"], eps)
        logits.append(b.download(b.linear_float(embd, last)))
    return np.concatenate(logits, axis=0)  # [2, vocab]


def _run_decode_layer(b: KernelBackend, rng, fmt, hidden, heads, kv, ffn, block, prompt,
                      steps, paged) -> np.ndarray:
    """One block's decode steps through the backend's whole-block ``decode_layer`` where it
    offers one (``prepare_layer``), each step also run op by op on a second cache: both must
    give the same bits, output and cached rows (else this case fails: the model switches
    between them freely). ``prompt`` tokens are filled op by op into both caches first, the
    steps then cross a KV_BLOCK edge; ``paged``: both caches are pools behind one shuffled
    block table. ``block`` as in ``_run_layer``. Returns the op-by-op outputs [steps, hidden]
    (compared with the reference, which runs op by op)."""
    d = hidden // heads
    end = prompt + steps
    wq, wk, wv, wo = (b.load_weight(ternary_weight(fmt, rows, hidden, rng))
                      for rows in (hidden, kv * d, kv * d, hidden))
    w_gate, w_up = (b.load_weight(ternary_weight(fmt, ffn, hidden, rng)) for _ in range(2))
    w_down = b.load_weight(ternary_weight(fmt, hidden, ffn, rng))
    bitnet = block == "bitnet"
    attn_norm, ffn_norm = (b.upload(_norm_weight(rng, hidden)) for _ in range(2))
    attn_sub = b.upload(_norm_weight(rng, hidden)) if bitnet else None
    ffn_sub = b.upload(_norm_weight(rng, ffn)) if bitnet else None
    spec = LayerSpec(attn_norm, wq, wk, wv, attn_sub, wo, ffn_norm, w_gate, w_up, ffn_sub,
                     w_down, "relu2" if bitnet else "silu", heads, kv, d, 500000.0, 1e-5)
    table, rows = None, end + 1  # + 1: a last op-by-op step reads what decode_layer cached
    if paged:
        rows, (table,) = _pool_tables(rng, blocks_for(end + 1) + 2, [end + 1])
    caches = [b.kv_cache_alloc(1, rows, kv, d) for _ in range(2)]
    gate = b.relu2_mul if bitnet else b.silu_mul

    def ops(h, cache, pos):  # the block as bitnet.core.model runs it op by op
        x = b.rmsnorm(h, spec.attn_norm, spec.eps)
        q = b.rope(b.linear_ternary(wq, x), pos, heads, d, spec.rope_theta)
        k = b.rope(b.linear_ternary(wk, x), pos, kv, d, spec.rope_theta)
        a = b.attention(q, k, b.linear_ternary(wv, x), cache, 0, pos, heads, kv, d, table)
        if attn_sub is not None:
            a = b.rmsnorm(a, attn_sub, spec.eps)
        h = b.add(h, b.linear_ternary(wo, a))
        x = b.rmsnorm(h, spec.ffn_norm, spec.eps)
        f = gate(b.linear_ternary(w_gate, x), b.linear_ternary(w_up, x))
        if ffn_sub is not None:
            f = b.rmsnorm(f, ffn_sub, spec.eps)
        return b.add(h, b.linear_ternary(w_down, f))

    filled = _act(rng, prompt, hidden)
    for cache in caches:
        ops(b.upload(filled), cache, 0)
    layer = b.prepare_layer(spec)
    outputs = []
    for pos in range(prompt, end):
        h = _act(rng, 1, hidden)
        want = b.download(ops(b.upload(h), caches[0], pos))
        if layer is not None:
            got = b.download(b.decode_layer(layer, b.upload(h), caches[1], 0, pos, table))
            if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
                raise ValueError(f"decode_layer at position {pos} differs from the ops (max "
                                 f"|diff| {np.max(np.abs(got - want)):.3g})")
        outputs.append(want)
    if layer is not None:  # the rows decode_layer cached: one more op-by-op step reads them
        h = _act(rng, 1, hidden)
        seen = [b.download(ops(b.upload(h), cache, end)) for cache in caches]
        if not np.array_equal(seen[0].view(np.uint32), seen[1].view(np.uint32)):
            raise ValueError("decode_layer cached other K / V rows than the ops")
    return np.concatenate(outputs, axis=0)


_RUNNERS: dict[str, Callable[..., np.ndarray]] = {
    "embed": _run_embed,
    "rmsnorm": _run_rmsnorm,
    "linear_ternary": _run_linear_ternary,
    "linear_float": _run_linear_float,
    "rope": _run_rope,
    "attention": _run_attention,
    "attention_paged": _run_attention_paged,
    "attention_rows": _run_attention_rows,
    "relu2_mul": _run_pair("relu2_mul"),
    "silu_mul": _run_pair("silu_mul"),
    "add": _run_pair("add"),
    "slice_rows": _run_slice_rows,
    "layer": _run_layer,
    "replay": _run_replay,
    "decode_layer": _run_decode_layer,
}

# ---------------------------------------------------------------------------------------------
# the table


def make_case(op: str, tolerance: float, ops: Iterable[Op], ternary: WeightFormat | None = None,
              float_format: WeightFormat | None = None, seed: int = 0, **params: Any) -> Case:
    """A case outside the table (conformance edge shapes); ``params`` must match the runner."""
    if op not in _RUNNERS:
        raise ValueError(f"no runner for op {op!r}; known: {sorted(_RUNNERS)}")
    return Case(op, tuple(params.items()), tolerance, frozenset(ops), ternary, float_format, seed)


def _case(op: str, tol: float, ops: Iterable[Op], ternary=None, float_format=None,
          **params: Any) -> Case:
    return make_case(op, tol, ops, ternary, float_format, len(_TABLE) + 1, **params)


_TABLE: list[Case] = []
_LAYER_OPS = frozenset({Op.EMBED, Op.RMSNORM, Op.LINEAR_TERNARY, Op.ROPE, Op.ATTENTION,
                        Op.ADD, Op.RELU2_MUL, Op.SLICE_ROWS, Op.LINEAR_FLOAT})
_LLAMA_LAYER_OPS = _LAYER_OPS - {Op.RELU2_MUL} | {Op.SILU_MUL}


def _build_table() -> None:
    lt = {Op.LINEAR_TERNARY}
    for fmt in (WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0):
        smallest = fmt.block
        shapes = [(1, smallest, 7), (3, 3 * 256, 33), (17, 512, 64), (4, 1024, 1)]
        for n, k, m in shapes:
            _TABLE.append(_case("linear_ternary", LINEAR_TERNARY_TOL, lt, fmt, None,
                                fmt=fmt, n=n, k=k, m=m))
        _TABLE.append(_case("linear_ternary", LINEAR_TERNARY_TOL, lt, fmt, None,
                            fmt=fmt, n=2, k=512, m=16, edge="zero"))
        _TABLE.append(_case("linear_ternary", LINEAR_TERNARY_TOL, lt, fmt, None,
                            fmt=fmt, n=2, k=256, m=5, scale=1.5))
    for fmt in (WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16, WeightFormat.Q8_0,
                WeightFormat.Q6_K):
        embed_tol = EXACT if fmt in _EXACT_DEQUANT else 1e-6
        for n in (1, 7):
            _TABLE.append(_case("embed", embed_tol, {Op.EMBED}, None, fmt, fmt=fmt, v=50, k=256,
                                n=n))
        for n, k, m in ((1, 256, 9), (5, 512, 31)):
            _TABLE.append(_case("linear_float", FLOAT_TOL, {Op.LINEAR_FLOAT}, None, fmt,
                                fmt=fmt, n=n, k=k, m=m))
    for n, k in ((1, 256), (5, 2560), (3, 100)):
        _TABLE.append(_case("rmsnorm", FLOAT_TOL, {Op.RMSNORM}, n=n, k=k))
    for n, h, d, pos, theta, tol in ((1, 4, 64, 0, 10000.0, FLOAT_TOL),
                                     (5, 2, 128, 7, 500000.0, FLOAT_TOL),
                                     (1, 3, 64, 1000, 10000.0, ROPE_FAR_TOL),
                                     (3, 2, 96, 5, 10000.0, FLOAT_TOL),
                                     (2, 3, 100, 11, 10000.0, FLOAT_TOL),
                                     (3, 3, 256, 9, 1000042.0, FLOAT_TOL)):
        _TABLE.append(_case("rope", tol, {Op.ROPE}, n=n, h=h, d=d, pos=pos, theta=theta))
    for n, h, kv, d, pos in ((1, 4, 2, 64, 0), (6, 4, 4, 64, 3), (3, 8, 2, 128, 0),
                             (1, 4, 1, 64, 500), (32, 4, 2, 64, 100),
                             (5, 3, 3, 96, 4), (1, 2, 2, 100, 70), (4, 6, 2, 256, 9),
                             (1, 8, 2, 128, 40), (2, 4, 2, 256, 0)):
        _TABLE.append(_case("attention", ATTENTION_TOL, {Op.ATTENTION}, n=n, h=h, kv=kv, d=d,
                            pos=pos))
    # paged: chunks crossing block edges, bit-identical to the contiguous cache
    for h, kv, d, chunks in ((4, 2, 64, (5, 20, 1, 1)), (3, 1, 256, (17, 16, 1)),
                             (2, 2, 100, (40, 1))):
        _TABLE.append(_case("attention_paged", ATTENTION_TOL, {Op.ATTENTION}, h=h, kv=kv, d=d,
                            chunks=chunks))
    for h, kv, d, history, share in ((4, 2, 64, (5, 0, 17), False),
                                     (6, 2, 256, (3, 9), False),
                                     (2, 2, 100, (4, 1), False), (3, 3, 96, (0, 6), False),
                                     (4, 1, 64, (20, 33, 18), True)):
        _TABLE.append(_case("attention_rows", ATTENTION_TOL, {Op.ATTENTION_ROWS}, h=h, kv=kv,
                            d=d, history=history, share=share))
    for h, kv, d, steps in ((4, 2, 64, 5), (3, 1, 256, 3)):  # replayed == eager, bit for bit
        _TABLE.append(_case("replay", ATTENTION_TOL, {Op.ROPE, Op.ATTENTION}, h=h, kv=kv, d=d,
                            steps=steps))
    for op, tol in (("relu2_mul", 1e-6), ("silu_mul", 1e-6), ("add", EXACT)):
        for n, k in ((1, 256), (3, 37)):
            _TABLE.append(_case(op, tol, {Op(op)}, n=n, k=k))
    for n, k, start, stop in ((5, 64, 4, 5), (5, 37, 1, 4)):
        _TABLE.append(_case("slice_rows", EXACT, {Op.SLICE_ROWS}, n=n, k=k, start=start,
                            stop=stop))
    for fmt in (WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0):
        _TABLE.append(_case("layer", LAYER_TOL, _LAYER_OPS, fmt, WeightFormat.F16, fmt=fmt,
                            head=WeightFormat.F16, hidden=256, heads=4, kv=2, ffn=512, n=5))
    # a whole decode block (decode_layer, where a backend offers it) == the ops, bit for bit:
    # BitNet blocks in each ternary family, Llama blocks (GQA 3 at D 256; MHA), paged
    for fmt, hidden, heads, kv, block, paged in (
            (WeightFormat.I2_S, 256, 4, 2, "bitnet", False),
            (WeightFormat.TQ2_0, 256, 4, 2, "bitnet", True),
            (WeightFormat.TQ1_0, 256, 4, 1, "bitnet", False),
            (WeightFormat.I2_S, 768, 3, 1, "llama", True),
            (WeightFormat.TQ2_0, 512, 4, 4, "llama", False)):
        ops = (_LAYER_OPS if block == "bitnet" else _LLAMA_LAYER_OPS) - {
            Op.EMBED, Op.SLICE_ROWS, Op.LINEAR_FLOAT}
        _TABLE.append(_case("decode_layer", LAYER_TOL, ops, fmt, None, fmt=fmt, hidden=hidden,
                            heads=heads, kv=kv, ffn=512, block=block, prompt=14, steps=4,
                            paged=paged))
    # the plain Llama block at Falcon3's head shape (D 256, GQA 3) and 1bitLLM-large's (D 96)
    for fmt, hidden, heads, kv in ((WeightFormat.I2_S, 768, 3, 1),
                                   (WeightFormat.TQ2_0, 768, 3, 1),
                                   (WeightFormat.I2_S, 384, 4, 4)):
        _TABLE.append(_case("layer", LAYER_TOL, _LLAMA_LAYER_OPS, fmt, WeightFormat.F16,
                            fmt=fmt, head=WeightFormat.F16, hidden=hidden, heads=heads, kv=kv,
                            ffn=512, n=5, block="llama"))
    # long contexts across split-K attention runs (ATTENTION_SPLIT, 256 positions), GQA: the
    # op (one token, prompt rows across an edge) and decode_layer's steps across an edge, paged
    for n, h, kv, d, pos in ((1, 2, 1, 64, 300), (3, 4, 2, 64, 254), (1, 8, 2, 128, 1100)):
        _TABLE.append(_case("attention", ATTENTION_TOL, {Op.ATTENTION}, n=n, h=h, kv=kv, d=d,
                            pos=pos))
    _TABLE.append(_case("replay", ATTENTION_TOL, {Op.ROPE, Op.ATTENTION}, h=4, kv=2, d=64,
                        steps=3, start=255))
    decode_ops = _LAYER_OPS - {Op.EMBED, Op.SLICE_ROWS, Op.LINEAR_FLOAT}
    _TABLE.append(_case("decode_layer", LAYER_TOL, decode_ops, WeightFormat.I2_S, None,
                        fmt=WeightFormat.I2_S, hidden=256, heads=4, kv=2, ffn=512,
                        block="bitnet", prompt=254, steps=4, paged=True))


_build_table()


def all_cases() -> list[Case]:
    """The whole table (what the reference backend itself is checked with)."""
    return list(_TABLE)


def cases_for(caps: Capabilities) -> list[Case]:
    """The cases covering what ``caps`` claims."""
    return [c for c in _TABLE if c.applies_to(caps)]


# ---------------------------------------------------------------------------------------------
# running


def run_case(case: Case, backend: KernelBackend) -> np.ndarray:
    """Run ``case`` on ``backend`` with inputs from the case's seed; returns the host result."""
    rng = np.random.default_rng(case.seed)
    return _RUNNERS[case.op](backend, rng, **case.kwargs())


def compare(got: Any, want: np.ndarray) -> tuple[float | None, str]:
    """(error, problem): the scaled max difference, and what makes ``got`` not comparable
    with ``want`` ("" when it is: right type, shape, dtype and finiteness)."""
    if not isinstance(got, np.ndarray):
        return None, f"returned {type(got).__name__}, not a numpy array"
    if got.shape != want.shape:
        return None, f"shape {got.shape}, expected {want.shape}"
    if got.dtype != want.dtype:
        return None, f"dtype {got.dtype}, expected {want.dtype}"
    finite = np.isfinite(want)
    if not np.array_equal(np.isfinite(got), finite):
        return None, "non-finite values where the reference has finite ones (or the reverse)"
    if not finite.any():
        return 0.0, ""
    diff = np.abs(got[finite].astype(np.float64) - want[finite].astype(np.float64))
    scale = max(float(np.abs(want[finite]).max()), 1e-30)
    return float(diff.max()) / scale, ""


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"raised {type(exc).__name__}: {exc}{where}"


def check_case(case: Case, candidate: KernelBackend, expected: np.ndarray) -> CaseResult:
    """Run ``case`` on ``candidate`` and compare with the reference output ``expected``."""
    start = time.perf_counter()
    try:
        got = run_case(case, candidate)
    except Exception as exc:
        return CaseResult(case.id, False, None, case.tolerance, _describe(exc),
                          time.perf_counter() - start)
    error, problem = compare(got, expected)
    passed = not problem and error is not None and error <= case.tolerance
    return CaseResult(case.id, passed, error, case.tolerance, problem,
                      time.perf_counter() - start)


_EXPECTED: dict[tuple[str, int], np.ndarray] = {}  # reference outputs, computed once per process


def expected_output(case: Case) -> np.ndarray:
    """The reference backend's output for ``case`` (cached by id and seed)."""
    key = (case.id, case.seed)
    if key not in _EXPECTED:
        _EXPECTED[key] = run_case(case, oracle())
    return _EXPECTED[key]


_ORACLE: list[KernelBackend] = []


def oracle() -> KernelBackend:
    """The reference backend on the CPU, created once per process."""
    if not _ORACLE:
        from bitnet.backends.reference.descriptor import descriptor
        from bitnet.hal.descriptor import CreateOptions

        devices = descriptor.probe()
        _ORACLE.append(descriptor.create(devices[0], CreateOptions()))
    return _ORACLE[0]


def validate_backend(candidate: KernelBackend, cases: list[Case] | None = None,
                     on_result: Callable[[CaseResult], None] | None = None) -> ValidationResult:
    """Run ``cases`` (default: all that ``candidate.capabilities`` claims) and collect results."""
    start = time.perf_counter()
    chosen = cases_for(candidate.capabilities) if cases is None else cases
    results = []
    for case in chosen:
        result = check_case(case, candidate, expected_output(case))
        results.append(result)
        if on_result is not None:
            on_result(result)
    passed = bool(results) and all(r.passed for r in results)
    if not results:
        results.append(CaseResult("suite", False, None, 0.0, "the backend claims no op"))
    return ValidationResult(passed, results, time.perf_counter() - start)
