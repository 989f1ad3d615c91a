"""Write GGUF files in every format bitnet reads, I2_S included, and synthetic BitNet models.

``GGUFModelWriter`` serializes the header, metadata and tensor infos with ``gguf.GGUFWriter``
and then streams each tensor's bytes itself, chunk by chunk, so a 2B-shaped model never has
more than one tensor (or one slice of the embedding) in memory. gguf-py cannot size I2_S
(type 36 is not in ``GGML_QUANT_SIZES``), so tensor infos are registered with the logical shape
and the byte size computed by ``bitnet.hal.formats.tensor_bytes`` (formats.md 2.2: n/4 + 32).

``make_synthetic_model`` writes random ternary weights shaped like a real BitNet b1.58 model, or
(arch ``llama``) like a ternary Llama (TriLM, Falcon3-1.58bit, ...): no sub-norms, and Q/K rows
permuted per head as llama.cpp's converters store them for RoPE NORM (``LlamaModel.permute``).
The values depend only on the shape and the seed, never on the format, so the I2_S, TQ2_0,
TQ1_0, F16, F32 and BF16 files of one seed hold identical weights (Q8_0 / Q6_K approximate them).
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGUFValueType

from bitnet.hal.formats import FLOAT_FORMATS, WeightFormat, tensor_bytes

__all__ = [
    "SHAPES",
    "GGUFModelWriter",
    "encode_float",
    "encode_ternary",
    "llama_permute",
    "llama_vocab",
    "make_synthetic_model",
    "rewrite_gguf",
    "shape_kwargs",
]

# (d_model, n_layers, n_heads, n_kv_heads, d_ff, n_vocab, n_ctx)
SHAPES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "tiny": (256, 2, 4, 2, 768, 512, 256),  # the fixtures' shapes (fixtures/README.md)
    "mid": (512, 3, 8, 2, 1280, 1000, 256),
    "2b": (2560, 30, 20, 5, 6912, 128256, 4096),  # microsoft/bitnet-b1.58-2B-4T
}

# general.file_type per weight format: llama.cpp's LLAMA_FTYPE ids, and the BitNet fork's
# MOSTLY_I2_S = 40 (which upstream calls MOSTLY_Q1_0: formats.md 2.1)
FILE_TYPES = {
    WeightFormat.F32: 0,
    WeightFormat.F16: 1,
    WeightFormat.Q8_0: 7,
    WeightFormat.Q6_K: 18,
    WeightFormat.BF16: 32,
    WeightFormat.TQ1_0: 36,
    WeightFormat.TQ2_0: 37,
    WeightFormat.I2_S: 40,
}

# Value types of the metadata keys we write, where Python's int/float would be ambiguous.
_KEY_TYPES: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {
    "tokenizer.ggml.scores": (GGUFValueType.ARRAY, GGUFValueType.FLOAT32),
    "tokenizer.ggml.token_type": (GGUFValueType.ARRAY, GGUFValueType.INT32),
    "tokenizer.ggml.tokens": (GGUFValueType.ARRAY, GGUFValueType.STRING),
    "tokenizer.ggml.merges": (GGUFValueType.ARRAY, GGUFValueType.STRING),
}

_EMBED_CHUNK_ROWS = 8192  # rows of the embedding generated and encoded at a time

Chunks = Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class _PlannedTensor:
    name: str
    format: WeightFormat
    shape: tuple[int, ...]  # ggml order, ne0 first
    nbytes: int
    chunks: Chunks  # yields the on-disk bytes (uint8, any shape) in order


class GGUFModelWriter:
    """Declare metadata and tensors, then ``write()`` streams them to ``path``.

    Tensor data comes from a callable returning an iterable of uint8 chunks in on-disk layout
    (``encode_float`` / ``encode_ternary`` produce them); it is called only during ``write()``.
    """

    def __init__(self, path: str | Path, arch: str, alignment: int = 32) -> None:
        self.path = Path(path)
        self.arch = arch
        self.alignment = alignment
        self._metadata: list[tuple[str, Any, GGUFValueType | None, GGUFValueType | None]] = []
        self._tensors: dict[str, _PlannedTensor] = {}

    def add_metadata(self, key: str, value: Any, vtype: GGUFValueType | None = None,
                     sub_type: GGUFValueType | None = None) -> None:
        """Add one key. The value type is inferred unless given: str -> STRING, bool -> BOOL,
        int -> UINT32 (INT32 if negative, 64-bit if large), float -> FLOAT32, list -> ARRAY."""
        self._metadata.append((key, value, vtype, sub_type))

    def add_tensor(self, name: str, fmt: WeightFormat, shape: Sequence[int],
                   data: np.ndarray | Chunks) -> None:
        """``shape`` in ggml order (ne0 = row length first); ``data`` the on-disk bytes or a
        callable yielding them in chunks (for tensors too large to hold at once)."""
        if name in self._tensors:
            raise ValueError(f"tensor {name!r} added twice")
        shape = tuple(int(d) for d in shape)
        rows = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        nbytes = tensor_bytes(fmt, rows, shape[0])
        chunks: Chunks
        if callable(data):
            chunks = data
        else:
            array = np.ascontiguousarray(data).view(np.uint8)
            if array.nbytes != nbytes:
                raise ValueError(f"tensor {name!r}: {fmt.value} {list(shape)} needs {nbytes} "
                                 f"bytes, got {array.nbytes}")
            chunks = lambda: [array]
        self._tensors[name] = _PlannedTensor(name, fmt, shape, nbytes, chunks)

    def write(self) -> None:
        writer = GGUFWriter(self.path, self.arch)
        try:
            self._write(writer)
        finally:
            writer.close()

    def _write(self, writer: GGUFWriter) -> None:
        if self.alignment != 32:
            writer.add_custom_alignment(self.alignment)
        for key, value, vtype, sub_type in self._metadata:
            vtype, sub_type = _value_types(key, value, vtype, sub_type)
            writer.add_key_value(key, value, vtype, sub_type)
        for t in self._tensors.values():
            # raw_dtype with a non-uint8 dtype: gguf-py takes the shape as given and never
            # looks the type up in GGML_QUANT_SIZES, so type 36 (I2_S) passes through
            numpy_shape = tuple(reversed(t.shape))
            writer.add_tensor_info(t.name, numpy_shape, np.dtype(np.float32), t.nbytes,
                                   raw_dtype=t.format.ggml_type)  # type: ignore[arg-type]
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        out = writer.fout[0]
        for t in self._tensors.values():
            writer.write_padding(out, out.tell())
            written = 0
            for chunk in t.chunks():
                chunk = np.ascontiguousarray(chunk).view(np.uint8)
                chunk.tofile(out)
                written += chunk.nbytes
            if written != t.nbytes:
                raise ValueError(f"tensor {t.name!r}: wrote {written} bytes, its {t.format.value} "
                                 f"shape {list(t.shape)} needs {t.nbytes}")
            writer.write_padding(out, t.nbytes)
        out.flush()


def _value_types(key: str, value: Any, vtype: GGUFValueType | None,
                 sub_type: GGUFValueType | None) -> tuple[GGUFValueType, GGUFValueType | None]:
    if vtype is not None:
        return vtype, sub_type
    if key in _KEY_TYPES:
        return _KEY_TYPES[key]
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"metadata {key!r}: empty arrays cannot be typed; pass vtype")
        return GGUFValueType.ARRAY, _scalar_type(key, value[0], array=True)
    return _scalar_type(key, value, array=False), None


def _scalar_type(key: str, value: Any, array: bool) -> GGUFValueType:
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, bool):
        return GGUFValueType.BOOL
    if isinstance(value, (int, np.integer)):
        if array:
            return GGUFValueType.INT32
        if value < 0:
            return GGUFValueType.INT32 if value >= -(1 << 31) else GGUFValueType.INT64
        return GGUFValueType.UINT32 if value < (1 << 32) else GGUFValueType.UINT64
    if isinstance(value, (float, np.floating)):
        return GGUFValueType.FLOAT32
    raise ValueError(f"metadata {key!r}: cannot infer a GGUF type for {type(value).__name__}")


# -- encoding ----------------------------------------------------------------------------------


def encode_float(fmt: WeightFormat, w: np.ndarray) -> np.ndarray:
    """f32 [rows, cols] -> on-disk bytes of a float format, uint8 [rows, row_bytes]."""
    from bitnet.formats.floats import quantize_rows

    if fmt not in FLOAT_FORMATS:
        raise ValueError(f"encode_float: {fmt.value} is not a float format")
    return quantize_rows(fmt, np.asarray(w, dtype=np.float32))


def encode_ternary(fmt: WeightFormat, values: np.ndarray, scale: float) -> np.ndarray:
    """Ternary int8 [rows, cols] times one tensor scale -> on-disk bytes in any format.

    I2_S stores the scale once (uint8 [rows*cols/4 + 32]); TQ1_0 / TQ2_0 store it per 256-block
    (exact when ``scale`` is an f16 value); float formats store ``values * scale``.
    """
    from bitnet.formats import ternary

    rows, cols = values.shape
    if fmt is WeightFormat.I2_S:
        return ternary.i2s_pack(values, scale)
    if fmt in (WeightFormat.TQ1_0, WeightFormat.TQ2_0):
        d = np.full((rows, cols // 256), scale, dtype=np.float32)
        pack = ternary.tq2_pack if fmt is WeightFormat.TQ2_0 else ternary.tq1_pack
        return pack(values, d)
    return encode_float(fmt, values.astype(np.float32) * np.float32(scale))


# -- synthetic models --------------------------------------------------------------------------


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


def llama_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF (rotate-half) Q or K rows [H*D, K] -> the order llama.cpp's converters store for RoPE
    NORM: within each head, row ``j * D/2 + i`` moves to ``2i + j`` (``LlamaModel.permute``)."""
    rows = w.shape[0]
    return (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])  # [H, 2, D/2, K]
            .swapaxes(1, 2)  # [H, D/2, 2, K]
            .reshape(w.shape))



def rewrite_gguf(
    src: str | Path,
    dst: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    drop_keys: Iterable[str] = (),
    drop_tensors: Iterable[str] = (),
    tensors: Mapping[str, tuple[WeightFormat, Sequence[int], np.ndarray]] | None = None,
) -> Path:
    """Copy a GGUF file with edits: set or drop metadata keys, drop tensors, add or replace
    tensors (name -> (format, ggml shape, on-disk bytes)). Untouched values keep their stored
    types; tensor bytes are streamed from the source map. E.g. add ``tokenizer.ggml.pre`` to a
    file that lacks it, or build a broken model for a test."""
    from bitnet.core.gguf import open_gguf

    metadata = dict(metadata or {})
    dropped_keys = set(drop_keys)
    dropped = set(drop_tensors)
    replaced = dict(tensors or {})
    with open_gguf(src) as f:
        arch = metadata.pop("general.architecture", f.arch) or ""
        writer = GGUFModelWriter(dst, arch, alignment=f.alignment)
        for key, value in f.metadata.items():
            if key in ("general.architecture", "general.alignment") or key in dropped_keys:
                continue
            if key in metadata:
                continue
            vtype, item_type = f.value_types[key]
            writer.add_metadata(key, value, vtype, item_type)
        for key, value in metadata.items():
            writer.add_metadata(key, value)
        for name, info in f.tensors.items():
            if name in dropped:
                continue
            if name in replaced:
                writer.add_tensor(name, *replaced.pop(name))
            elif info.format is None:
                raise ValueError(f"{name}: cannot copy {info.type_name} tensors")
            else:
                writer.add_tensor(name, info.format, info.shape, f.tensor_bytes(name))
        for name, (fmt, shape, data) in replaced.items():
            writer.add_tensor(name, fmt, shape, data)
        writer.write()
    return Path(dst)
