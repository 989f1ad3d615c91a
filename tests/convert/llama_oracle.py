"""A numpy forward pass of a GGUF arch ``llama`` file, as llama.cpp's graph runs it.

Independent of bitnet's engine: it checks that a converted file means what transformers' model
means (Q/K permuted for llama.cpp's "normal" RoPE of adjacent pairs, tensor names, scales),
before and besides the engine's own arch llama support. Activations are quantized as the peers
do for the weight type: I2_S per-token int8 (bitnet.cpp), TQ1_0/TQ2_0 Q8_K per 256 block
(llama.cpp), F16 not at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitnet.core.gguf import open_gguf
from bitnet.formats import dequantize
from bitnet.formats.activations import quantize_per_token_i8, quantize_q8_k
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import WeightFormat


def _matmul(x: np.ndarray, w: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """x f32 [n, K] @ w f32 [M, K].T with the peer's activation quantization."""
    if fmt is WeightFormat.I2_S:
        q, s = quantize_per_token_i8(x)
        x = q.astype(np.float32) / s[:, None]
    elif fmt in (WeightFormat.TQ1_0, WeightFormat.TQ2_0):
        q, d = quantize_q8_k(x)
        x = (q.reshape(len(x), -1, 256) * d[:, :, None]).reshape(x.shape)
    return x.astype(np.float64) @ w.T.astype(np.float64)


def _rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * w


def _rope_normal(x: np.ndarray, n_heads: int, theta: float) -> np.ndarray:
    """llama.cpp's NORM rope: rotate adjacent pairs (2i, 2i+1) of each head. x [n, H*D]."""
    n = x.shape[0]
    heads = x.reshape(n, n_heads, -1, 2)  # [n, H, D/2, 2]
    dim = heads.shape[2] * 2
    freqs = theta ** (-np.arange(0, dim, 2) / dim)  # [D/2]
    angle = np.arange(n)[:, None] * freqs[None, :]  # [n, D/2]
    cos = np.cos(angle)[:, None, :]
    sin = np.sin(angle)[:, None, :]
    a, b = heads[..., 0], heads[..., 1]
    return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)


def llama_logits(path: str | Path, ids: list[int]) -> np.ndarray:
    with open_gguf(path) as f:
        meta = f.metadata
        arch = meta["general.architecture"]
        assert arch == "llama", arch
        n_heads = meta["llama.attention.head_count"]
        n_kv = meta["llama.attention.head_count_kv"]
        eps = meta["llama.attention.layer_norm_rms_epsilon"]
        theta = meta["llama.rope.freq_base"]

        def tensor(name: str) -> tuple[np.ndarray, WeightFormat]:
            info = f.tensors[name]
            cols = info.shape[0]
            rows = int(np.prod(info.shape[1:])) if len(info.shape) > 1 else 1
            t = WeightTensor(name, info.format, rows, cols, f.tensor_bytes(name), 1.0)
            w = dequantize(t)
            return (w.reshape(-1) if len(info.shape) == 1 else w), info.format

        embed, _ = tensor("token_embd.weight")
        x = embed[ids].astype(np.float64)
        n = len(ids)
        for i in range(meta["llama.block_count"]):
            def lin(h: np.ndarray, name: str) -> np.ndarray:
                w, fmt = tensor(f"blk.{i}.{name}.weight")
                return _matmul(h.astype(np.float32), w, fmt)
            h = _rmsnorm(x, tensor(f"blk.{i}.attn_norm.weight")[0], eps)
            q = _rope_normal(lin(h, "attn_q"), n_heads, theta)
            k = _rope_normal(lin(h, "attn_k"), n_kv, theta)
            v = lin(h, "attn_v")
            head_dim = q.shape[1] // n_heads
            qh = q.reshape(n, n_heads, head_dim)
            group = n_heads // n_kv
            kh = np.repeat(k.reshape(n, n_kv, head_dim), group, axis=1)
            vh = np.repeat(v.reshape(n, n_kv, head_dim), group, axis=1)
            scores = np.einsum("qhd,khd->hqk", qh, kh) / np.sqrt(head_dim)
            scores += np.triu(np.full((n, n), -np.inf), 1)
            probs = np.exp(scores - scores.max(axis=2, keepdims=True))
            probs /= probs.sum(axis=2, keepdims=True)
            attn = np.einsum("hqk,khd->qhd", probs, vh).reshape(n, -1)
            x = x + lin(attn, "attn_output")
            h = _rmsnorm(x, tensor(f"blk.{i}.ffn_norm.weight")[0], eps)
            g = lin(h, "ffn_gate")
            a = g / (1 + np.exp(-g)) * lin(h, "ffn_up")
            x = x + lin(a, "ffn_down")
        h = _rmsnorm(x, tensor("output_norm.weight")[0], eps)
        head = "output.weight" if "output.weight" in f.tensors else "token_embd.weight"
        return (h @ tensor(head)[0].T.astype(np.float64)).astype(np.float32)
