"""ModelConfig: the hyperparameters of a BitNet model, read only from GGUF metadata.

Keys are prefixed by the architecture (``{arch}.embedding_length`` ...), as llama.cpp writes
them. Three architectures share one block structure (formats.md 4.4, 4.5):

- ``bitnet-b1.58`` (bitnet.cpp, e.g. microsoft/bitnet-b1.58-2B-4T) and ``bitnet-25`` (its older
  name): squared-ReLU gating;
- ``bitnet`` (llama.cpp, 1bitLLM models): SiLU gating unless ``bitnet.hidden_activation`` is
  ``"relu2"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bitnet.core.errors import ModelFormatError

ARCHS = ("bitnet-b1.58", "bitnet-25", "bitnet")
ACTIVATIONS = ("relu2", "silu")

# Sanity bounds: far above any real BitNet model, low enough that a corrupt value cannot make
# the engine allocate absurd buffers (KV cache, activations) before anything else fails.
_MAX_WIDTH = 1 << 17  # d_model, d_ff
_MAX_LAYERS = 1024
_MAX_HEADS = 4096
_MAX_CTX = 1 << 22
_MAX_VOCAB = 1 << 22
_DEFAULT_ROPE_THETA = 10000.0  # llama.cpp's default when rope.freq_base is absent


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # "bitnet-b1.58" | "bitnet-25" | "bitnet"
    n_vocab: int  # V: rows of token_embd
    n_ctx: int  # training context length (the largest KV cache the engine allocates)
    d_model: int  # d: hidden width
    n_layers: int
    d_ff: int  # F: FFN width
    n_heads: int  # H
    n_kv_heads: int  # Hkv (GQA: H % Hkv == 0)
    head_dim: int  # D = d_model // n_heads
    rope_theta: float
    rms_eps: float
    activation: str  # "relu2" (b1.58 / 25) | "silu" (arch bitnet, by default)
    file_type: int | None = None  # general.file_type; ids collide between forks (formats.md 2.1)
    name: str | None = None  # general.name

    @property
    def q_dim(self) -> int:
        """Width of the query projection output, H * D."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of each of the key and value projection outputs, Hkv * D."""
        return self.n_kv_heads * self.head_dim

    @property
    def gqa_group(self) -> int:
        """Query heads per KV head: query head h reads KV head h // gqa_group."""
        return self.n_heads // self.n_kv_heads

    @property
    def n_linear_params(self) -> int:
        """Parameters of the 7 matmuls of all layers (the ternary weights)."""
        per_layer = (2 * self.d_model * self.q_dim + 2 * self.d_model * self.kv_dim
                     + 3 * self.d_model * self.d_ff)
        return per_layer * self.n_layers

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ModelConfig:
        """Build from a GGUF metadata dict; ModelFormatError names any missing or bad key."""
        arch = metadata.get("general.architecture")
        if arch is None:
            raise ModelFormatError("metadata key 'general.architecture' is missing")
        if arch not in ARCHS:
            raise ModelFormatError(f"general.architecture is {arch!r}; bitnet runs "
                                   f"{', '.join(ARCHS)}")
        read = _Reader(metadata, arch)
        d_model = read.integer("embedding_length", 1, _MAX_WIDTH)
        n_heads = read.integer("attention.head_count", 1, _MAX_HEADS)
        n_kv_heads = read.integer("attention.head_count_kv", 1, n_heads, default=n_heads)
        if d_model % n_heads:
            raise read.bad("attention.head_count", f"{n_heads} does not divide embedding_length "
                           f"{d_model}")
        if n_heads % n_kv_heads:
            raise read.bad("attention.head_count_kv", f"{n_kv_heads} does not divide "
                           f"head_count {n_heads}")
        head_dim = d_model // n_heads
        if head_dim % 2:
            raise read.bad("attention.head_count", f"head dim {head_dim} is odd (RoPE pairs "
                           "dims)")
        _check_head_dims(read, head_dim)
        _check_rope_scaling(read)
        return cls(
            arch=arch,
            n_vocab=_vocab_size(read, metadata),
            n_ctx=read.integer("context_length", 1, _MAX_CTX),
            d_model=d_model,
            n_layers=read.integer("block_count", 1, _MAX_LAYERS),
            d_ff=read.integer("feed_forward_length", 1, _MAX_WIDTH),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            rope_theta=read.number("rope.freq_base", 1.0, 1e12, default=_DEFAULT_ROPE_THETA),
            rms_eps=read.number("attention.layer_norm_rms_epsilon", 1e-12, 0.1),
            activation=_activation(read, arch),
            file_type=_optional_int(metadata, "general.file_type"),
            name=_optional_str(metadata, "general.name"),
        )


class _Reader:
    """Typed, bounded reads of ``{arch}.<suffix>`` keys."""

    def __init__(self, metadata: Mapping[str, Any], arch: str) -> None:
        self.metadata = metadata
        self.arch = arch

    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    def bad(self, suffix: str, reason: str) -> ModelFormatError:
        return ModelFormatError(f"metadata key {self.key(suffix)!r}: {reason}")

    def get(self, suffix: str) -> Any:
        return self.metadata.get(self.key(suffix))

    def integer(self, suffix: str, low: int, high: int, default: int | None = None) -> int:
        value = self.get(suffix)
        if value is None:
            if default is None:
                raise ModelFormatError(f"metadata key {self.key(suffix)!r} is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(suffix, f"expected an integer, found {value!r}")
        if not low <= value <= high:
            raise self.bad(suffix, f"{value} is outside the sane range {low}..{high}")
        return value

    def number(self, suffix: str, low: float, high: float, default: float | None = None) -> float:
        value = self.get(suffix)
        if value is None:
            if default is None:
                raise ModelFormatError(f"metadata key {self.key(suffix)!r} is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(suffix, f"expected a number, found {value!r}")
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            raise self.bad(suffix, f"{value} is outside the sane range {low}..{high}")
        return value


def _vocab_size(read: _Reader, metadata: Mapping[str, Any]) -> int:
    tokens = metadata.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens) if isinstance(tokens, list) else None
    if read.get("vocab_size") is None:
        if n_tokens is None:
            raise ModelFormatError(f"neither {read.key('vocab_size')!r} nor "
                                   "'tokenizer.ggml.tokens' is present: vocabulary size unknown")
        if not 1 <= n_tokens <= _MAX_VOCAB:
            raise ModelFormatError(f"'tokenizer.ggml.tokens' has {n_tokens} entries, outside "
                                   f"1..{_MAX_VOCAB}")
        return n_tokens
    return read.integer("vocab_size", 1, _MAX_VOCAB)


def _activation(read: _Reader, arch: str) -> str:
    value = read.get("hidden_activation")
    if value is not None and value not in ACTIVATIONS:
        raise read.bad("hidden_activation", f"{value!r} is not one of {', '.join(ACTIVATIONS)}")
    if arch == "bitnet":
        # llama.cpp's bitnet graph gates with SiLU; bitnet.hidden_activation opts into relu2
        return "relu2" if value == "relu2" else "silu"
    if value == "silu":
        raise read.bad("hidden_activation", f"arch {arch} is defined with relu2 gating")
    return "relu2"


def _check_head_dims(read: _Reader, head_dim: int) -> None:
    # we rotate and attend over whole heads of width d_model // n_heads; a file that says
    # otherwise needs partial RoPE or decoupled head sizes, which the engine does not have
    for suffix in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        value = read.get(suffix)
        if value is not None and value != head_dim:
            raise read.bad(suffix, f"{value} != head dim {head_dim} (embedding_length / "
                           "head_count); partial RoPE and decoupled head sizes are not supported")


def _check_rope_scaling(read: _Reader) -> None:
    kind = read.get("rope.scaling.type")
    factor = read.get("rope.scaling.factor")
    if kind in (None, "none"):
        return
    if kind == "linear" and factor in (None, 1.0):
        return
    raise read.bad("rope.scaling.type", f"RoPE scaling {kind!r} (factor {factor}) is not "
                   "supported")


def _optional_int(metadata: Mapping[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(f"metadata key {key!r}: expected an integer, found {value!r}")
    return value


def _optional_str(metadata: Mapping[str, Any], key: str) -> str | None:
    value = metadata.get(key)
    return value if isinstance(value, str) else None
