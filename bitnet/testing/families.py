"""Small random models shaped like every ternary family, and an independent numpy forward pass.

``FAMILIES`` lists one ``Family`` per model family of docs/model-facts.md section 1, with dimensions
scaled down but keeping what the kernels and the loader care about: arch, head dim, GQA ratio, tied
or untied head, sub-norms, activation and weight type. ``Family.write`` makes the GGUF file as that
family's converter writes it (``make_synthetic_model``: arch ``llama`` files carry llama.cpp's
RoPE-NORM permutation of the Q/K rows).

``oracle_logits`` runs a file from its bytes with no code of the engine beyond the GGUF container
reader: values decoded by gguf-py (``gguf.quants``; I2_S, which gguf-py lacks, by the few lines here
from docs/formats.md 2.3), the HF-style definition of the block (docs/model-facts.md 3): rotate-half
RoPE on the Q/K rows in HF order (the file's NORM permutation undone here), or, with
``rope="norm"``, llama.cpp's RoPE NORM (adjacent pairs) on the rows as stored, which must agree.
Activation quantization follows the weight type as the peers do it: I2_S per-token int8
(docs/formats.md 2.5), TQ1_0 / TQ2_0 Q8_K per 256-block (1.5), float weights none. Queries, keys and
values are rounded to f16 before attention (the engine's and llama.cpp's f16 KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.hal.weight_formats import WeightFormat

I2S, TQ2, TQ1 = WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0
F16 = WeightFormat.F16


@dataclass(frozen=True)
class Family:
    """One family's shape, scaled down: d_model, heads, KV heads, head dim, FFN width, vocab."""

    name: str
    arch: str
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    weights: WeightFormat
    tied: bool
    n_layers: int = 2
    n_vocab: int = 320
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def write(self, path: str | Path, **extra: Any) -> Path:
        from bitnet.testing.synthetic import make_synthetic_model

        return make_synthetic_model(
            path, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads, d_ff=self.d_ff, n_vocab=self.n_vocab, n_ctx=64,
            arch=self.arch, weight_format=self.weights, embed_format=F16,
            output_format=None if self.tied else F16, seed=self.seed, **extra)

    def tokens(self, n: int = 12) -> list[int]:
        rng = np.random.default_rng(1000 + self.seed)
        return [1] + rng.integers(3, self.n_vocab, n - 1).tolist()


# docs/model-facts.md 1 and 3: the real shapes these keep
FAMILIES = [
    # TriLM (llama.cpp: TQ1_0 / TQ2_0, untied, MHA 24 x 128)
    Family("trilm-tq2_0", "llama", 512, 4, 4, 768, TQ2, tied=False, seed=1),
    Family("trilm-tq1_0", "llama", 512, 4, 4, 768, TQ1, tied=False, seed=2),
    # Falcon3-3B/7B/10B-1.58bit (bitnet.cpp I2_S, GQA 12/4, head dim 256)
    Family("falcon3-i2_s", "llama", 768, 3, 1, 1024, I2S, tied=False, seed=3),
    # Falcon3-1B-1.58bit / Falcon-E (GQA 8/4, head dim 256, tied head)
    Family("falcon3-1b-i2_s", "llama", 512, 2, 1, 768, I2S, tied=True, seed=4),
    # Llama3-8B-1.58 (GQA 32/8, head dim 128, untied): bitnet.cpp I2_S, llama.cpp F16 / TQ2_0
    Family("llama3-8b-i2_s", "llama", 512, 4, 1, 1024, I2S, tied=False, seed=5),
    Family("llama3-8b-f16", "llama", 512, 4, 1, 1024, F16, tied=False, seed=6),
    # 1bitLLM bitnet_b1_58-large (arch bitnet: sub-norms, SiLU, MHA 16 x 96, tied)
    Family("1bitllm-large-tq2_0", "bitnet", 768, 8, 8, 1024, TQ2, tied=True, seed=7),
    Family("1bitllm-large-i2_s", "bitnet", 384, 4, 4, 512, I2S, tied=True, seed=8),
    # 1bitLLM bitnet_b1_58-3B (MHA 32 x 100): only float files hold K = 400
    Family("1bitllm-3b-f16", "bitnet", 400, 4, 4, 512, F16, tied=True, seed=9),
    # BitNet b1.58 2B-4T (bitnet-b1.58: sub-norms, relu2, GQA 20/5, head dim 128)
    Family("b158-2b-i2_s", "bitnet-b1.58", 512, 4, 1, 768, I2S, tied=True, seed=10),
]


# ---------------------------------------------------------------------------------------------
# the oracle


def _i2s_values(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """I2_S bytes -> f32 [rows, cols] (docs/formats.md 2.2, 2.3): 128-element groups of 32
    bytes over the flattened tensor, group g's byte b holds element 128g + 32j + b at shift
    6 - 2j; code c means c - 1; then one f32 scale."""
    n = rows * cols
    packed = raw[:n // 4].reshape(-1, 32)  # [groups, 32]
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8)
    codes = (packed[:, None, :] >> shifts[None, :, None]) & 3  # [groups, 4, 32]
    scale = raw[n // 4:n // 4 + 4].view("<f4")[0]
    return (codes.reshape(rows, cols).astype(np.float32) - 1) * scale


def _dequantize(f: Any, name: str) -> tuple[np.ndarray, str]:
    """A tensor's values in file order, f64 [rows, cols] (or [n]), and its type name."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    info = f.tensors[name]
    raw = f.tensor_bytes(name)
    if info.ggml_type == 36:
        return _i2s_values(raw, info.rows, info.shape[0]).astype(np.float64), "I2_S"
    kind = GGMLQuantizationType(info.ggml_type)
    values = dequantize(np.asarray(raw).reshape(info.rows, -1), kind)
    values = values.reshape(info.rows, info.shape[0]).astype(np.float64)
    return (values[0] if len(info.shape) == 1 else values), kind.name


def quantize_per_token_i8(x: np.ndarray) -> np.ndarray:
    """bitnet.cpp's I2_S activations (docs/formats.md 2.5), dequantized: f64 [n, K]."""
    x32 = x.astype(np.float32)
    m = np.maximum(np.abs(x32).max(axis=1, keepdims=True).astype(np.float64), 1e-5)
    s = (127.0 / m).astype(np.float32)
    q = np.clip(np.rint(x32 * s), -128, 127)
    return q.astype(np.float64) / s.astype(np.float64)


def quantize_q8_k(x: np.ndarray) -> np.ndarray:
    """llama.cpp's Q8_K activations per 256-block (docs/formats.md 1.5), dequantized: f64 [n, K]."""
    x32 = x.astype(np.float32).reshape(x.shape[0], -1, 256)  # [n, blocks, 256]
    idx = np.abs(x32).argmax(axis=2)[..., None]
    signed_max = np.take_along_axis(x32, idx, axis=2)  # [n, blocks, 1]
    with np.errstate(divide="ignore"):
        iscale = np.where(signed_max == 0, 0, np.float32(-127) / signed_max).astype(np.float32)
        d = np.where(iscale == 0, 0, np.float32(1) / iscale).astype(np.float32)
    q = np.minimum(127, np.rint(iscale * x32))
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(x.shape)


def _rope_rotate_half(x: np.ndarray, pos: np.ndarray, n_heads: int, d: int,
                      theta: float) -> np.ndarray:
    """HF rotate-half RoPE: pairs (i, i + D/2) of each head. x f64 [n, H*D]."""
    half = d // 2
    angle = pos[:, None] * theta ** (-2.0 * np.arange(half) / d)  # [n, D/2]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    h = x.reshape(len(x), n_heads, d)
    a, b = h[..., :half], h[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=2).reshape(x.shape)


def _rope_norm(x: np.ndarray, pos: np.ndarray, n_heads: int, d: int, theta: float) -> np.ndarray:
    """llama.cpp's RoPE NORM: adjacent pairs (2i, 2i + 1) of each head. x f64 [n, H*D]."""
    angle = pos[:, None] * theta ** (-2.0 * np.arange(d // 2) / d)  # [n, D/2]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    h = x.reshape(len(x), n_heads, d // 2, 2)
    a, b = h[..., 0], h[..., 1]
    return np.stack([a * cos - b * sin, a * sin + b * cos], axis=3).reshape(x.shape)


def _hf_order(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's ``LlamaModel.permute``: it stored HF row j*D/2 + i of each head at
    2i + j; read each head's rows 0, 2, 4, ... then 1, 3, 5, ..."""
    rows, cols = w.shape
    heads = w.reshape(n_heads, rows // n_heads, cols)  # [H, D, K]
    return np.concatenate([heads[:, 0::2], heads[:, 1::2]], axis=1).reshape(w.shape)


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float64)


def oracle_logits(path: str | Path, tokens: list[int], rope: str = "hf",
                  activation: str | None = None, act_quant: str | None = None) -> np.ndarray:
    """Logits f64 [n, V] of ``tokens`` at positions 0..n-1 (see the module docstring).
    ``rope``: "hf" (rotate-half on HF-order rows) or "norm" (arch llama only: NORM on the
    stored rows). ``activation``: "silu" / "relu2" instead of the file's. ``act_quant``:
    "per_token" / "q8_k" / "none" for every ternary matmul instead of the weight type's rule."""
    from bitnet.core.gguf import open_gguf

    with open_gguf(path) as f:
        md = f.metadata
        arch = md["general.architecture"]

        def key(suffix: str, default: Any = None) -> Any:
            return md.get(f"{arch}.{suffix}", default)

        n_heads = key("attention.head_count")
        n_kv = key("attention.head_count_kv", n_heads)
        d = key("attention.key_length", key("embedding_length") // n_heads)
        eps = key("attention.layer_norm_rms_epsilon")
        theta = key("rope.freq_base", 10000.0)
        act = activation or key("hidden_activation") or (
            "relu2" if arch in ("bitnet-b1.58", "bitnet-25") else "silu")
        stored_norm = arch == "llama"
        if rope == "norm" and not stored_norm:
            raise ValueError("rope='norm' needs an arch llama file")

        def tensor(name: str) -> np.ndarray:
            return _dequantize(f, name)[0]

        def linear(name: str, x: np.ndarray, heads: int | None = None) -> np.ndarray:
            w, kind = _dequantize(f, name)
            if heads is not None and stored_norm and rope == "hf":
                w = _hf_order(w, heads)
            rule = {"I2_S": "per_token", "TQ1_0": "q8_k", "TQ2_0": "q8_k"}.get(kind, "none")
            if act_quant is not None and rule != "none":
                rule = act_quant
            if rule == "per_token":
                x = quantize_per_token_i8(x)
            elif rule == "q8_k":
                x = quantize_q8_k(x)
            scale = name.replace(".weight", ".scale")  # arch bitnet: multiplies the output
            return x @ w.T * (tensor(scale)[0] if scale in f.tensors else 1.0)

        def rmsnorm(x: np.ndarray, name: str) -> np.ndarray:
            return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * tensor(name)

        rotate = _rope_norm if rope == "norm" else _rope_rotate_half
        n = len(tokens)
        pos = np.arange(n, dtype=np.float64)
        mask = np.triu(np.full((n, n), -np.inf), 1)  # causal
        h = tensor("token_embd.weight")[tokens]  # [n, d_model]
        for i in range(key("block_count")):
            blk = f"blk.{i}."
            x = rmsnorm(h, blk + "attn_norm.weight")
            q = rotate(linear(blk + "attn_q.weight", x, n_heads), pos, n_heads, d, theta)
            k = rotate(linear(blk + "attn_k.weight", x, n_kv), pos, n_kv, d, theta)
            v = linear(blk + "attn_v.weight", x)
            q, k, v = (_f16(t).reshape(n, -1, d) for t in (q, k, v))  # [n, heads, D]
            group = n_heads // n_kv
            k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # [n, H, D]
            scores = np.einsum("nhd,thd->hnt", q, k) / np.sqrt(d) + mask  # [H, n, n]
            p = np.exp(scores - scores.max(axis=2, keepdims=True))
            p /= p.sum(axis=2, keepdims=True)
            a = np.einsum("hnt,thd->nhd", p, v).reshape(n, n_heads * d)
            if blk + "attn_sub_norm.weight" in f.tensors:
                a = rmsnorm(a, blk + "attn_sub_norm.weight")
            h = h + linear(blk + "attn_output.weight", a)
            x = rmsnorm(h, blk + "ffn_norm.weight")
            g = linear(blk + "ffn_gate.weight", x)
            u = linear(blk + "ffn_up.weight", x)
            g = np.maximum(g, 0) ** 2 if act == "relu2" else g / (1 + np.exp(-g))
            y = g * u
            if blk + "ffn_sub_norm.weight" in f.tensors:
                y = rmsnorm(y, blk + "ffn_sub_norm.weight")
            h = h + linear(blk + "ffn_down.weight", y)
        head = "output.weight" if "output.weight" in f.tensors else "token_embd.weight"
        return rmsnorm(h, "output_norm.weight") @ tensor(head).T

