"""Synthetic ternary models of any shape, as GGUF files: for tests, benchmarks and peers.

``make_synthetic_model`` writes random ternary weights shaped like a real BitNet b1.58 model, or
(arch ``llama``) like a ternary Llama (TriLM, Falcon3-1.58bit, ...): no sub-norms, and Q/K rows
permuted per head as llama.cpp's converters store them for RoPE NORM (``LlamaModel.permute``).
The values depend only on the shape and the seed, never on the format, so the I2_S, TQ2_0,
TQ1_0, F16, F32 and BF16 files of one seed hold identical weights (Q8_0 / Q6_K approximate them).
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.convert.gguf_writer import (
    FILE_TYPES,
    Chunks,
    GGUFModelWriter,
    encode_float,
    encode_ternary,
)
from bitnet.convert.weights import llama_permute
from bitnet.hal.weight_formats import FLOAT_FORMATS, WeightFormat

__all__ = ["SHAPES", "llama_vocab", "make_synthetic_model", "shape_kwargs"]

# (d_model, n_layers, n_heads, n_kv_heads, d_ff, n_vocab, n_ctx)
SHAPES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "tiny": (256, 2, 4, 2, 768, 512, 256),  # the fixtures' shapes (fixtures/README.md)
    "mid": (512, 3, 8, 2, 1280, 1000, 256),
    "2b": (2560, 30, 20, 5, 6912, 128256, 4096),  # microsoft/bitnet-b1.58-2B-4T
}

_EMBED_CHUNK_ROWS = 8192  # rows of the embedding generated and encoded at a time

def llama_vocab(n_vocab: int) -> dict[str, Any]:
    """A SentencePiece-style (``llama``) vocabulary like the fixtures': <unk>, <s>, </s>, the
    256 byte tokens <0x00>..<0xFF>, then pieces. Every piece of length L extends one of length
    L-1 by a character, so a SentencePiece-style merger can reach it. Returns tokenizer.* keys."""
    if n_vocab < 259:
        raise ValueError(f"a llama vocabulary needs at least 259 tokens (3 special + 256 bytes), "
                         f"got {n_vocab}")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # unknown, control, control, byte
    singles = ["\u2581"] + list(string.ascii_lowercase + string.ascii_uppercase + string.digits)
    singles += list(".,!?;:'\"-()")
    pieces = _pieces(singles, string.ascii_lowercase)
    tokens += list(itertools.islice(pieces, n_vocab - len(tokens)))
    types += [1] * (n_vocab - len(types))
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(n_vocab - 259)],
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }


def _pieces(singles: list[str], letters: str) -> Iterable[str]:
    """Single characters, then "▁w" and "w" for lowercase words w of growing length."""
    yield from singles
    for length in itertools.count(1):
        for chars in itertools.product(letters, repeat=length):
            word = "".join(chars)
            yield "\u2581" + word
            if length > 1:  # single letters are already among the singles
                yield word


def make_synthetic_model(
    path: str | Path,
    *,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    d_ff: int,
    n_vocab: int,
    n_ctx: int,
    arch: str = "bitnet-b1.58",
    weight_format: WeightFormat = WeightFormat.I2_S,
    embed_format: WeightFormat = WeightFormat.F16,
    seed: int = 0,
    rope_theta: float | None = None,
    vocab: Mapping[str, Any] | None = None,
    rms_eps: float = 1e-5,
    output_format: WeightFormat | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    head_dim: int | None = None,
    rope_freqs: Sequence[float] | None = None,
) -> Path:
    """Write a random ternary BitNet model and return its path.

    Shapes as in ``SHAPES`` (``make_synthetic_model(p, **shape_kwargs("2b"))``). ``rope_theta``
    defaults to 500000 (bitnet-b1.58 / bitnet-25) or 10000 (bitnet). ``vocab``: tokenizer.*
    metadata to use instead of the generated llama vocabulary (e.g. a gpt2 one); its token list
    must have ``n_vocab`` entries. ``output_format``: write an untied ``output.weight`` in that
    float format (not in arch bitnet); None ties the lm_head to token_embd.

    Arch ``llama`` writes the plain Llama block (no sub-norms) with each head's Q/K rows in
    llama.cpp's RoPE NORM order. ``head_dim``: D when it is not d_model / n_heads (written as
    ``attention.key_length`` / ``value_length``). ``rope_freqs``: a ``rope_freqs.weight``
    tensor of D/2 factors.
    """
    weight_format = WeightFormat(weight_format)
    embed_format = WeightFormat(embed_format)
    if embed_format not in FLOAT_FORMATS:
        raise ValueError(f"embed_format must be a float format, got {embed_format.value}")
    if output_format is not None and arch == "bitnet":
        raise ValueError("arch bitnet ties its lm_head; output_format must be None")
    if (head_dim is None and d_model % n_heads) or n_heads % n_kv_heads:
        raise ValueError(f"n_heads {n_heads} must divide d_model {d_model} and be a multiple "
                         f"of n_kv_heads {n_kv_heads}")
    tokenizer = dict(vocab) if vocab is not None else llama_vocab(n_vocab)
    if len(tokenizer.get("tokenizer.ggml.tokens", [])) != n_vocab:
        raise ValueError(f"vocab has {len(tokenizer.get('tokenizer.ggml.tokens', []))} tokens, "
                         f"n_vocab is {n_vocab}")
    decoupled = head_dim is not None and head_dim * n_heads != d_model
    head_dim = d_model // n_heads if head_dim is None else head_dim
    if rope_theta is None:
        rope_theta = 10000.0 if arch in ("bitnet", "llama") else 500000.0
    llama = arch == "llama"
    writer = GGUFModelWriter(path, arch)
    writer.add_metadata("general.name", f"synthetic-{arch}-{d_model}x{n_layers}-seed{seed}")
    writer.add_metadata("general.file_type", FILE_TYPES[weight_format])
    writer.add_metadata("general.quantization_version", 2)
    hparams = {
        "context_length": n_ctx,
        "embedding_length": d_model,
        "block_count": n_layers,
        "feed_forward_length": d_ff,
        "attention.head_count": n_heads,
        "attention.head_count_kv": n_kv_heads,
        "rope.dimension_count": head_dim,
        "attention.layer_norm_rms_epsilon": float(rms_eps),
        "rope.freq_base": float(rope_theta),
        "vocab_size": n_vocab,
    }
    if decoupled:
        hparams["attention.key_length"] = head_dim
        hparams["attention.value_length"] = head_dim
    for suffix, value in hparams.items():
        writer.add_metadata(f"{arch}.{suffix}", value)
    for key, value in tokenizer.items():
        writer.add_metadata(key, value)
    for key, value in (extra_metadata or {}).items():
        writer.add_metadata(key, value)

    q_dim = n_heads * head_dim
    kv_dim = n_kv_heads * head_dim
    embed_std = 4.0 / np.sqrt(d_model)  # the fixtures' 0.25 at d=256, 0.18 at d=512
    writer.add_tensor("token_embd.weight", embed_format, (d_model, n_vocab),
                      _embedding(embed_format, n_vocab, d_model, embed_std, seed, 0))
    writer.add_tensor("output_norm.weight", WeightFormat.F32, (d_model,),
                      _norm(d_model, seed, 1))
    if output_format is not None:
        writer.add_tensor("output.weight", output_format, (d_model, n_vocab),
                          _embedding(output_format, n_vocab, d_model, embed_std, seed, 2))
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", WeightFormat.F32, (head_dim // 2,),
                          np.asarray(rope_freqs, dtype="<f4"))
    linears = {  # name -> (rows M, cols K)
        "attn_q": (q_dim, d_model),
        "attn_k": (kv_dim, d_model),
        "attn_v": (kv_dim, d_model),
        "attn_output": (d_model, q_dim),
        "ffn_gate": (d_ff, d_model),
        "ffn_up": (d_ff, d_model),
        "ffn_down": (d_model, d_ff),
    }
    norms = {"attn_norm": d_model, "attn_sub_norm": q_dim, "ffn_norm": d_model,
             "ffn_sub_norm": d_ff}
    if llama:
        del norms["attn_sub_norm"], norms["ffn_sub_norm"]
    # llama.cpp permutes each head's Q and K rows for RoPE NORM
    permuted_heads = {"attn_q": n_heads, "attn_k": n_kv_heads} if llama else {}
    stream = 3
    for i in range(n_layers):
        for name, width in norms.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", WeightFormat.F32, (width,),
                              _norm(width, seed, stream))
            stream += 1
        for name, (rows, cols) in linears.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", weight_format, (cols, rows),
                              _ternary(weight_format, rows, cols, seed, stream,
                                       permuted_heads.get(name)))
            stream += 1
    writer.write()
    return Path(path)


def shape_kwargs(name: str) -> dict[str, int]:
    """``SHAPES[name]`` as keyword arguments for ``make_synthetic_model``."""
    d_model, n_layers, n_heads, n_kv_heads, d_ff, n_vocab, n_ctx = SHAPES[name]
    return {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
            "n_kv_heads": n_kv_heads, "d_ff": d_ff, "n_vocab": n_vocab, "n_ctx": n_ctx}


# Each tensor draws from its own stream (seed, stream index), so values depend only on the
# seed and the tensor's position, never on the format or on the other tensors' sizes.


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _norm(width: int, seed: int, stream: int) -> np.ndarray:
    """Norm weights uniform in [0.5, 1.5), f32 [width] as bytes."""
    return _rng(seed, stream).uniform(0.5, 1.5, width).astype("<f4")


def _embedding(fmt: WeightFormat, rows: int, cols: int, std: float, seed: int,
               stream: int) -> Chunks:
    def chunks() -> Iterable[np.ndarray]:
        rng = _rng(seed, stream)
        for start in range(0, rows, _EMBED_CHUNK_ROWS):
            n = min(_EMBED_CHUNK_ROWS, rows - start)
            w = rng.standard_normal((n, cols), dtype=np.float32) * np.float32(std)
            yield encode_float(fmt, w)
    return chunks


def _ternary_scale(cols: int) -> float:
    """An absmean-like scale (mean|N(0, 1/K)| ~ 0.8/sqrt(K)) that f16 and bf16 hold exactly:
    rounded to 8 significant bits, so every ternary and float format stores the same value."""
    s = 0.8 / np.sqrt(cols)
    mantissa, exponent = np.frexp(s)
    return float(np.ldexp(np.round(mantissa * 256) / 256, exponent))


def _ternary(fmt: WeightFormat, rows: int, cols: int, seed: int, stream: int,
             permute_heads: int | None = None) -> Chunks:
    def chunks() -> Iterable[np.ndarray]:
        values = _rng(seed, stream).integers(-1, 2, size=(rows, cols), dtype=np.int8)
        if permute_heads is not None:
            values = llama_permute(values, permute_heads)
        yield encode_ternary(fmt, values, _ternary_scale(cols))
    return chunks
