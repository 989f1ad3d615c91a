"""ModelConfig: the hyperparameters of a ternary model, read only from GGUF metadata.

Keys are prefixed by the architecture (``{arch}.embedding_length`` ...), as llama.cpp writes
them. Two block kinds (docs/model-facts.md 1, 3):

- the BitNet block, with sub-norms before the output and down projections:
  ``bitnet-b1.58`` (bitnet.cpp, e.g. microsoft/bitnet-b1.58-2B-4T) and ``bitnet-25`` (its older
  name) gate with squared ReLU; ``bitnet`` (llama.cpp, 1bitLLM models) gates with SiLU;
- the plain Llama block, no sub-norms, SiLU: ``llama`` with ternary weights (TriLM, Falcon3-1.58bit,
  Falcon-E, Llama3-8B-1.58). Its converters permute the Q/K rows of each head for RoPE "NORM"
  (adjacent pairs); the loader permutes them back so that the one rope op (NEOX) applies.

A ``{arch}.hidden_activation`` key overrides the arch's gating. A ``bitnet-b1.58`` file that looks
like a 1bitLLM model (bitnet.cpp's converter labels those ``bitnet-b1.58`` since 2026-07;
docs/model-facts.md 4.1) gets SiLU, with a warning saying why; ``activation=`` overrides every rule.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bitnet.core.errors import ModelFormatError

ARCHS = ("bitnet-b1.58", "bitnet-25", "bitnet", "llama")
ACTIVATIONS = ("relu2", "silu")
# archs whose converters permute Q/K rows for RoPE NORM (docs/model-facts.md 4.1, 4.2, 5.1);
# the others are NEOX
NORM_ROPE_ARCHS = ("llama",)
PLAIN_BLOCK_ARCHS = ("llama",)  # no sub-norms
# 1bitLLM files: SentencePiece vocabulary of 32000 + 2 added tokens, or a name that says so
_ONE_BIT_LLM_VOCAB = 32002
_ONE_BIT_LLM_NAME = re.compile(r"1bitllm|bitnet[_-]?b1[._]?58[_-](large|3b)", re.IGNORECASE)

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
    arch: str  # "bitnet-b1.58" | "bitnet-25" | "bitnet" | "llama"
    n_vocab: int  # V: rows of token_embd
    n_ctx: int  # training context length (the largest KV cache the engine allocates)
    d_model: int  # d: hidden width
    n_layers: int
    d_ff: int  # F: FFN width
    n_heads: int  # H
    n_kv_heads: int  # Hkv (GQA: H % Hkv == 0)
    head_dim: int  # D: attention.key_length, else d_model // n_heads
    rope_theta: float
    rms_eps: float
    activation: str  # "relu2" (b1.58 / 25) | "silu" (bitnet, llama, 1bitLLM files)
    # general.file_type; its ids collide between forks (docs/formats.md 2.1)
    file_type: int | None = None
    name: str | None = None  # general.name
    sub_norms: bool = True  # BitNet block (attn_sub_norm, ffn_sub_norm); False: plain Llama
    rope_order: str = "neox"  # the file's Q/K row order: "neox" pairs (i, i+D/2); "norm" pairs
    #                           (2i, 2i+1), which the loader permutes to neox at load
    activation_source: str = ""  # why this activation (shown by inspect and the load warning)

    @property
    def block(self) -> str:
        """The block kind in words."""
        return "bitnet (sub-norms)" if self.sub_norms else "llama (no sub-norms)"

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
    def from_metadata(cls, metadata: Mapping[str, Any],
                      activation: str | None = None) -> ModelConfig:
        """Build from a GGUF metadata dict; ModelFormatError names any missing or bad key.

        ``activation``: "silu" or "relu2" to override the file's gating (e.g. a 1bitLLM model a
        converter labelled ``bitnet-b1.58``); None decides from the file (module docstring).
        """
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
        head_dim = _head_dim(read, d_model, n_heads)
        if n_heads % n_kv_heads:
            raise read.bad("attention.head_count_kv", f"{n_kv_heads} does not divide "
                           f"head_count {n_heads}")
        _check_rope_scaling(read)
        chosen, source = _activation(read, arch, metadata, activation)
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
            activation=chosen,
            file_type=_optional_int(metadata, "general.file_type"),
            name=_optional_str(metadata, "general.name"),
            sub_norms=arch not in PLAIN_BLOCK_ARCHS,
            rope_order="norm" if arch in NORM_ROPE_ARCHS else "neox",
            activation_source=source,
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


def _activation(read: _Reader, arch: str, metadata: Mapping[str, Any],
                override: str | None) -> tuple[str, str]:
    """(activation, why): the caller's choice, else the file's key, else the arch's gating,
    except that a relu2 arch holding what looks like a 1bitLLM model gets SiLU (warned)."""
    if override is not None:
        if override not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got "
                             f"{override!r}")
        return override, "chosen by the caller"
    value = read.get("hidden_activation")
    if value is not None:
        if value not in ACTIVATIONS:
            raise read.bad("hidden_activation", f"{value!r} is not one of "
                           f"{', '.join(ACTIVATIONS)}")
        return value, f"metadata key {read.key('hidden_activation')!r}"
    if arch in ("bitnet", "llama"):
        return "silu", f"arch {arch} gates with SiLU (llama.cpp's graph)"
    hint = _one_bit_llm_hint(metadata)
    if hint is None:
        return "relu2", f"arch {arch} gates with squared ReLU (bitnet.cpp's graph)"
    why = (f"{hint}: a 1bitLLM model, which gates with SiLU, although arch {arch} means squared "
           f"ReLU (bitnet.cpp's converter labels 1bitLLM models {arch}); pass "
           f"activation='relu2' (--activation relu2) to run it as {arch}")
    warnings.warn(f"running with SiLU gating: {why}", UserWarning, stacklevel=3)
    return "silu", why


def _one_bit_llm_hint(metadata: Mapping[str, Any]) -> str | None:
    """What marks a file as a 1bitLLM model (docs/model-facts.md 2.3, 6), or None."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens) if isinstance(tokens, list) else None
    if metadata.get("tokenizer.ggml.model") == "llama" and n_tokens == _ONE_BIT_LLM_VOCAB:
        return f"its SentencePiece vocabulary has {_ONE_BIT_LLM_VOCAB} tokens (1bitLLM's)"
    name = metadata.get("general.name")
    if isinstance(name, str) and _ONE_BIT_LLM_NAME.search(name):
        return f"general.name {name!r} names a 1bitLLM model"
    return None


def _head_dim(read: _Reader, d_model: int, n_heads: int) -> int:
    """D: ``attention.key_length`` where present (llama.cpp's n_embd_head_k), else d / H.
    The engine rotates whole heads and has one head size: rope.dimension_count and
    attention.value_length must equal D."""
    head_dim = read.integer("attention.key_length", 2, _MAX_WIDTH, default=0)
    if not head_dim:
        if d_model % n_heads:
            raise read.bad("attention.head_count", f"{n_heads} does not divide "
                           f"embedding_length {d_model}")
        head_dim = d_model // n_heads
    if head_dim % 2:
        raise read.bad("attention.head_count", f"head dim {head_dim} is odd (RoPE pairs dims)")
    for suffix in ("rope.dimension_count", "attention.value_length"):
        value = read.get(suffix)
        if value is not None and value != head_dim:
            raise read.bad(suffix, f"{value} != head dim {head_dim}; partial RoPE and decoupled "
                           "key/value head sizes are not supported")
    return head_dim


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
