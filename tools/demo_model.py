"""The demo BitNet b1.58 language model in PyTorch, with quantization-aware training.

The forward pass is the one the engine runs (docs/formats.md 4.4, bitnet/core/model.py):

    h = embed(tokens)
    for each layer:
        x = rmsnorm(h) * attn_norm
        q, k, v = BitLinear(x);  q, k = rope_neox(q), rope_neox(k)
        a = rmsnorm(causal_attention(q, k, v)) * attn_sub_norm   # sub-norm before o_proj
        h = h + BitLinear_o(a)
        x = rmsnorm(h) * ffn_norm
        f = rmsnorm(relu(gate(x))**2 * up(x)) * ffn_sub_norm     # sub-norm before down_proj
        h = h + BitLinear_down(f)
    logits = (rmsnorm(h) * output_norm) @ embed.T                 # tied embeddings

BitLinear (the paper, and the converters' rule in docs/formats.md 1.4 / 2.5): the latent float
weight W is ternarized per tensor, ``s = max(mean|W|, 1e-5)``, ``W_q = clamp(round(W / s), -1, 1) *
s``; the input is quantized per token, ``a = 127 / max(max|x|, 1e-5)``, ``x_q = clamp(round(x * a),
-128, 127) / a``; both with a straight-through estimator (the forward pass sees the quantized
values, the backward pass the identity). Exporting W_q as I2_S (codes + the f32 scale s) is
therefore exact, and the engine's per-token int8 matmul computes the same numbers as this module up
to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_EPS = 1e-5  # clamp of the absmean scale (converters' weight_quant)
ACT_EPS = 1e-5  # clamp of the per-token absmax (bitnet.cpp quantize_row_i8_s)


@dataclass
class DemoConfig:
    """Model hyper-parameters; every ternary matmul's K (d_model, n_heads*head_dim, d_ff) must
    be a multiple of 256 so I2_S (128) and TQ2_0 (256) can both hold it."""

    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    head_dim: int = 64
    d_ff: int = 768
    context_length: int = 256
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5

    def check(self) -> None:
        """Raise ValueError if a ternary matmul's input width is not a multiple of 256."""
        for name, k in (("d_model", self.d_model), ("n_heads*head_dim",
                        self.n_heads * self.head_dim), ("d_ff", self.d_ff)):
            if k % 256:
                raise ValueError(f"{name} = {k} is not a multiple of 256 (I2_S/TQ2_0 need it)")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def ternarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor absmean ternarization: returns (codes in {-1,0,1} as w's dtype, scale s)."""
    s = w.abs().mean().clamp(min=WEIGHT_EPS)
    codes = torch.clamp(torch.round(w / s), -1, 1)
    return codes, s


def weight_codes_ste(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, s): ternary codes of w [M, K] (values exactly -1/0/+1, gradient of w / s) and the
    detached absmean scale s, so ``codes * s`` is the ternary weight with an identity STE."""
    s = w.detach().abs().mean().clamp(min=WEIGHT_EPS)
    scaled = w / s
    # scaled + (r - scaled) is exactly r in float arithmetic here (|r| <= 1, r - scaled exact)
    return scaled + (torch.clamp(torch.round(scaled), -1, 1) - scaled).detach(), s


def activation_int8_ste(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, a): per-token int8 values of x [..., K] (exact integers in f32, gradient of x * a)
    and the detached reciprocal scale a [..., 1] = float32(127 / max(max|x|, 1e-5)), exactly as
    bitnet.formats.activations.quantize_per_token_i8 computes them."""
    m = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=ACT_EPS)
    # in float64 then rounded: torch's f32 "127 / m" is not always the correctly rounded quotient
    a = (127.0 / m.double()).float()
    scaled = x * a
    return scaled + (torch.clamp(torch.round(scaled), -128, 127) - scaled).detach(), a


class BitLinear(nn.Linear):
    """A bias-free linear layer with ternary weights and int8 activations (QAT).

    The matmul runs on the integer values (int8 activations x ternary codes, both exact in
    bfloat16) and applies ``s / a`` afterwards, like the engine's kernels; so bf16 autocast in
    training loses nothing in the products. The scales are detached, which makes the gradients
    exactly those of the plain STE (identity through both quantizers).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, s = weight_codes_ste(self.weight)
        q, a = activation_int8_ste(x)
        return F.linear(q, codes).float() * (s / a)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last dim."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [seq_len, head_dim/2] for angles ``p * theta**(-2i/D)`` (computed in float64)."""
    inv = theta ** (-torch.arange(0, head_dim // 2, dtype=torch.float64) * 2.0 / head_dim)
    angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv[None, :]
    return angles.cos().float(), angles.sin().float()


def rope_neox(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x [B, H, T, D] (NEOX style, no Q/K permutation)."""
    half = x.shape[-1] // 2
    a = x[..., :half]
    b = x[..., half:]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


class Block(nn.Module):
    """One transformer layer; parameter names are the GGUF tensor names of docs/formats.md 4.3."""

    def __init__(self, c: DemoConfig) -> None:
        super().__init__()
        width = c.n_heads * c.head_dim
        self.c = c
        self.attn_norm = RMSNorm(c.d_model, c.rms_eps)
        self.attn_q = BitLinear(c.d_model, width)
        self.attn_k = BitLinear(c.d_model, width)
        self.attn_v = BitLinear(c.d_model, width)
        self.attn_sub_norm = RMSNorm(width, c.rms_eps)
        self.attn_output = BitLinear(width, c.d_model)
        self.ffn_norm = RMSNorm(c.d_model, c.rms_eps)
        self.ffn_gate = BitLinear(c.d_model, c.d_ff)
        self.ffn_up = BitLinear(c.d_model, c.d_ff)
        self.ffn_sub_norm = RMSNorm(c.d_ff, c.rms_eps)
        self.ffn_down = BitLinear(c.d_ff, c.d_model)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """h f32 [B, T, d] -> [B, T, d]."""
        c = self.c
        bsz, t, _ = h.shape
        x = self.attn_norm(h)
        q = self.attn_q(x).view(bsz, t, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.attn_k(x).view(bsz, t, c.n_heads, c.head_dim).transpose(1, 2)
        v = self.attn_v(x).view(bsz, t, c.n_heads, c.head_dim).transpose(1, 2)
        q = rope_neox(q, cos, sin)
        k = rope_neox(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(D)
        a = a.transpose(1, 2).reshape(bsz, t, c.n_heads * c.head_dim)
        h = h + self.attn_output(self.attn_sub_norm(a))
        x = self.ffn_norm(h)
        f = F.relu(self.ffn_gate(x)).square() * self.ffn_up(x)
        return h + self.ffn_down(self.ffn_sub_norm(f))


class DemoLM(nn.Module):
    """The whole model: token_embd [V, d] (tied head), layers, output_norm."""

    def __init__(self, c: DemoConfig) -> None:
        super().__init__()
        c.check()
        self.c = c
        self.token_embd = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.output_norm = RMSNorm(c.d_model, c.rms_eps)
        cos, sin = rope_tables(c.context_length, c.head_dim, c.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small normal init; output projections scaled down by depth (GPT-2 style)."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            std = 0.02
            if name.endswith(("attn_output.weight", "ffn_down.weight")):
                std = 0.02 / math.sqrt(2 * self.c.n_layers)
            nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 tokens [B, T] (T <= context_length) -> f32 logits [B, T, V]."""
        t = tokens.shape[1]
        cos = self.rope_cos[:t]
        sin = self.rope_sin[:t]
        h = self.token_embd(tokens)
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.output_norm(h) @ self.token_embd.weight.T

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
