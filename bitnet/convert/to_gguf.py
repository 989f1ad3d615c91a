"""Checkpoint directory -> GGUF file: plan every tensor, check it all, then stream it out.

Everything that can be checked from the config and the safetensors headers (family, sizes,
tensor names and shapes, whether the type can hold each row length) is checked before a byte is
written. Tensor data is read, decoded and encoded one tensor at a time while ``GGUFModelWriter``
streams the file, so memory holds one tensor (the embedding in slices of rows), never the model.
The file is written to a temporary name in the output directory and renamed at the end, so a
failure leaves nothing behind and an existing file is replaced only with ``force``.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.convert import weights
from bitnet.convert.checkpoint import Checkpoint
from bitnet.convert.errors import ConvertError
from bitnet.convert.families import (IGNORED, LINEARS, NORMS, Family, Hparams, detect_family,
                                     modules_not_converted, read_hparams)
from bitnet.convert.vocab import vocab_metadata
from bitnet.convert.gguf_writer import FILE_TYPES, Chunks, GGUFModelWriter
from bitnet.formats.ternary import ternarize_absmean
from bitnet.hal.weight_formats import WeightFormat

__all__ = ["TYPES", "convert_checkpoint", "parse_type"]

TYPES = (WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0, WeightFormat.F16)
_EMBED_CHUNK_BYTES = 16 << 20  # f32 bytes of embedding rows converted at a time

log = logging.getLogger("bitnet.convert")


@dataclass(frozen=True)
class _Linear:
    hf: str  # HF module path, e.g. model.layers.0.self_attn.q_proj
    gguf: str  # e.g. blk.0.attn_q.weight
    rows: int
    cols: int
    permute_heads: int  # 0: keep row order; else llama.cpp's Q/K permute with this many heads


def convert_checkpoint(src: str | os.PathLike[str], out: str | os.PathLike[str],
                       fmt: WeightFormat | str | None = None, force: bool = False,
                       pre: str | None = None, progress: bool | None = None) -> Path:
    """Convert a Hugging Face checkpoint directory to a GGUF file; returns its path.

    fmt: i2_s, tq2_0, tq1_0 or f16 (None: the family's default: TQ2_0 for TriLM, else I2_S).
    force: replace an existing ``out``. pre: override the detected BPE pre-tokenizer name.
    progress: a progress bar on stderr (None: only on a terminal).
    """
    out = Path(out)
    if out.is_dir():
        raise ConvertError(f"{out} is a directory; give the output file's path")
    if out.exists() and not force:
        raise ConvertError(f"{out} exists; pass --force (force=True) to replace it")
    ckpt = Checkpoint(src)
    try:
        plan = _Plan(ckpt, fmt, pre)
    except ConvertError as err:
        raise _in(ckpt, err) from None
    log.info("%s: %s -> GGUF arch %s, %s", ckpt.dir, plan.family.label, plan.family.arch,
             plan.fmt.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a name of our own beside the output (same file system: the rename is atomic); created
    # by the writer, so the file gets the user's umask, not mkstemp's 0600
    tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        plan.write(tmp, progress)
        os.replace(tmp, out)
    except ConvertError as err:
        raise _in(ckpt, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _in(ckpt: Checkpoint, err: ConvertError) -> ConvertError:
    """An error that names the checkpoint, for messages that name only a key or tensor."""
    if str(err).startswith(str(ckpt.dir)):
        return err
    return ConvertError(f"cannot convert checkpoint {ckpt.dir}: {err}")


def parse_type(fmt: WeightFormat | str | None) -> WeightFormat | None:
    """"i2_s", "TQ2_0", WeightFormat.F16 ... -> one of TYPES; None stays None (the default)."""
    if fmt is None:
        return None
    name = fmt.value if isinstance(fmt, WeightFormat) else str(fmt).lower()
    chosen = next((t for t in TYPES if t.value == name), None)
    if chosen is None:
        raise ConvertError(f"--type {name}: choose one of {', '.join(t.value for t in TYPES)}")
    return chosen


class _Plan:
    """The checked conversion of one checkpoint: metadata and a recipe per tensor."""

    def __init__(self, ckpt: Checkpoint, fmt: WeightFormat | str | None, pre: str | None) -> None:
        self.ckpt = ckpt
        self.hp = read_hparams(ckpt.config)
        first = "model.layers.0.self_attn.q_proj.weight"
        self.family = detect_family(ckpt.config, ckpt.entry(first).dtype)
        self.fmt = self._format(fmt)
        self.not_converted = modules_not_converted(ckpt.config)
        self.linears = self._linears()
        self.used: set[str] = set()
        self.tensors: dict[str, tuple[WeightFormat, tuple[int, ...], Chunks]] = {}
        self._plan_tensors()
        self._check_unused()
        # after the shape checks: vocab_size is then the embedding's real row count
        peer = "bitnet.cpp" if self.fmt is WeightFormat.I2_S else "llama.cpp"
        self.vocab = vocab_metadata(ckpt.dir, ckpt.config, self.hp.n_vocab, pre, peer)

    def _format(self, fmt: WeightFormat | str | None) -> WeightFormat:
        chosen = parse_type(fmt)
        return self.family.default_type if chosen is None else chosen

    # planning

    def _linears(self) -> list[_Linear]:
        hp = self.hp
        shapes = {  # GGUF name -> (rows M, cols K, heads for the Q/K permute)
            "attn_q": (hp.n_heads * hp.head_dim, hp.d_model, hp.n_heads),
            "attn_k": (hp.n_kv_heads * hp.head_dim, hp.d_model, hp.n_kv_heads),
            "attn_v": (hp.n_kv_heads * hp.head_dim, hp.d_model, 0),
            "attn_output": (hp.d_model, hp.n_heads * hp.head_dim, 0),
            "ffn_gate": (hp.d_ff, hp.d_model, 0),
            "ffn_up": (hp.d_ff, hp.d_model, 0),
            "ffn_down": (hp.d_model, hp.d_ff, 0),
        }
        out = []
        for i in range(hp.n_layers):
            for hf, name in LINEARS.items():
                rows, cols, heads = shapes[name]
                out.append(_Linear(f"model.layers.{i}.{hf}", f"blk.{i}.{name}.weight", rows,
                                   cols, heads if self.family.permute_qk else 0))
        return out

    def _plan_tensors(self) -> None:
        hp = self.hp
        self._embedding("model.embed_tokens.weight", "token_embd.weight")
        self._vector("model.norm.weight", "output_norm.weight", hp.d_model)
        self._head()
        norms = dict(NORMS)
        norms.update(self.family.sub_norms)
        widths = {"attn_norm": hp.d_model, "ffn_norm": hp.d_model,
                  "attn_sub_norm": hp.n_heads * hp.head_dim, "ffn_sub_norm": hp.d_ff}
        for i in range(hp.n_layers):
            for hf, name in norms.items():
                self._vector(f"model.layers.{i}.{hf}.weight", f"blk.{i}.{name}.weight",
                             widths[name])
        for linear in self.linears:
            self._linear(linear)

    def _take(self, name: str, shape: tuple[int, ...]) -> str:
        entry = self.ckpt.entry(name)
        if entry.shape != shape:
            raise ConvertError(f"tensor {name!r} has shape {list(entry.shape)}, config.json "
                               f"implies {list(shape)}")
        self.used.add(name)
        return entry.dtype

    def _vector(self, hf: str, gguf: str, width: int) -> None:
        self._take(hf, (width,))
        chunks = lambda: [self.ckpt.f32(hf)]  # noqa: E731 (a tiny deferred read)
        self.tensors[gguf] = (WeightFormat.F32, (width,), chunks)

    def _embedding(self, hf: str, gguf: str) -> None:
        hp = self.hp
        self._take(hf, (hp.n_vocab, hp.d_model))

        step = max(1, _EMBED_CHUNK_BYTES // (4 * hp.d_model))

        def chunks() -> Iterable[np.ndarray]:
            for start in range(0, hp.n_vocab, step):
                rows = slice(start, min(start + step, hp.n_vocab))
                yield self.ckpt.f32(hf, rows).astype("<f2")
        # llama-quantize keeps token_embd / output at F16 for the ternary file types
        self.tensors[gguf] = (WeightFormat.F16, (hp.d_model, hp.n_vocab), chunks)

    def _head(self) -> None:
        name = "lm_head.weight"
        present = name in self.ckpt
        if present and not self.hp.tied:
            if self.family.arch == "bitnet":
                self._check_head_is_embedding(name)
                return
            self._embedding(name, "output.weight")
        elif present:
            self.used.add(name)  # tied: transformers ignores the stored copy, so do we
        elif not self.hp.tied:
            raise ConvertError(f"{self.ckpt.dir}: tensor 'lm_head.weight' is missing and "
                               "config.json does not tie it (tie_word_embeddings is false)")

    def _check_head_is_embedding(self, name: str) -> None:
        # llama.cpp's arch bitnet has no output tensor: its lm_head is token_embd
        self._take(name, (self.hp.n_vocab, self.hp.d_model))
        if not np.array_equal(self.ckpt.raw(name), self.ckpt.raw("model.embed_tokens.weight")):
            raise ConvertError("tensor 'lm_head.weight' differs from the embedding, but GGUF "
                               "arch bitnet ties its lm_head to token_embd (no output tensor)")

    def _linear(self, linear: _Linear) -> None:
        weight_name = f"{linear.hf}.weight"
        dtype = self.ckpt.entry(weight_name).dtype
        if dtype == "U8":
            if linear.rows % 4:
                raise ConvertError(f"tensor {weight_name!r}: {linear.rows} rows cannot be "
                                   "packed 4 to a byte")
            self._take(weight_name, (linear.rows // 4, linear.cols))
            self._take(f"{linear.hf}.weight_scale", self.ckpt.entry(
                f"{linear.hf}.weight_scale").shape)
        else:
            self._take(weight_name, (linear.rows, linear.cols))
            if self.family.storage == "packed" and not self._kept_float(linear.hf):
                raise ConvertError(f"tensor {weight_name!r} is {dtype} in a packed checkpoint "
                                   "and not listed in quantization_config."
                                   "modules_to_not_convert")
        fmt = self.fmt
        if dtype != "U8" and self._kept_float(linear.hf):
            fmt = WeightFormat.F16
        weights.check_row_length(linear.gguf, weight_name, linear.cols, fmt)

        def chunks() -> Iterable[np.ndarray]:
            written, data = weights.encode_linear(linear.gguf, self._decode(linear), fmt)
            assert written is fmt
            yield data
        self.tensors[linear.gguf] = (fmt, (linear.cols, linear.rows), chunks)

    def _kept_float(self, module: str) -> bool:
        return self.family.storage == "packed" and any(m in module for m in self.not_converted)

    def _check_unused(self) -> None:
        left = [n for n in self.ckpt.names() if n not in self.used and not IGNORED.fullmatch(n)]
        if left:
            more = f" and {len(left) - 1} more" if len(left) > 1 else ""
            raise ConvertError(f"tensor {left[0]!r}{more} has no place in a GGUF "
                               f"{self.family.arch} model (biases and extra modules are not "
                               "supported)")

    # decoding (runs while writing, one tensor at a time)

    def _decode(self, linear: _Linear) -> weights.Weight:
        name = f"{linear.hf}.weight"
        dtype = self.ckpt.entry(name).dtype
        weight: weights.Weight
        if dtype == "U8":
            values = weights.unpack_hf(name, np.asarray(self.ckpt.raw(name)))
            scale_name = f"{linear.hf}.weight_scale"
            scale = weights.weight_scale(scale_name, self.ckpt.f32(scale_name),
                                         self.family.scale_multiplies)
            weight = weights.TernaryWeight(values, scale)
        elif self._kept_float(linear.hf):
            weight = weights.FloatWeight(self.ckpt.f32(name), ternary=False)
        elif self.family.storage == "ternary":
            weight = weights.FloatWeight(self.ckpt.f32(name), ternary=True)
        else:
            values, scale = ternarize_absmean(self.ckpt.f32(name))
            weight = weights.TernaryWeight(values, scale)
        if linear.permute_heads:
            weight = _permuted(weight, linear.permute_heads)
        return weight

    # writing

    def metadata(self) -> dict[str, Any]:
        hp = self.hp
        arch = self.family.arch
        meta: dict[str, Any] = {
            "general.name": _model_name(self.ckpt),
            "general.file_type": FILE_TYPES[self.fmt],
            "general.quantization_version": 2,
            f"{arch}.vocab_size": hp.n_vocab,
            f"{arch}.context_length": hp.n_ctx,
            f"{arch}.embedding_length": hp.d_model,
            f"{arch}.block_count": hp.n_layers,
            f"{arch}.feed_forward_length": hp.d_ff,
            f"{arch}.rope.dimension_count": hp.head_dim,
            f"{arch}.attention.head_count": hp.n_heads,
            f"{arch}.attention.head_count_kv": hp.n_kv_heads,
            f"{arch}.attention.layer_norm_rms_epsilon": hp.rms_eps,
            f"{arch}.rope.freq_base": hp.rope_theta,
        }
        if arch == "bitnet":
            # llama.cpp's graph for arch bitnet gates with SiLU, as 1bitLLM does; say so in the
            # file, so no reader has to guess (docs/model-facts.md 5.2, 7.3)
            meta["bitnet.hidden_activation"] = self.family.activation
        meta.update(self.vocab)
        return meta

    def write(self, path: Path, progress: bool | None) -> None:
        writer = GGUFModelWriter(path, self.family.arch)
        for key, value in self.metadata().items():
            writer.add_metadata(key, value)
        bar = _progress(progress, len(self.tensors), self.ckpt.dir.name)
        for name, (fmt, shape, chunks) in self.tensors.items():
            writer.add_tensor(name, fmt, shape, _counted(chunks, bar))
        try:
            writer.write()
        finally:
            if bar is not None:
                bar.close()


def _permuted(weight: weights.Weight, heads: int) -> weights.Weight:
    if isinstance(weight, weights.TernaryWeight):
        return weights.TernaryWeight(weights.llama_permute(weight.values, heads), weight.scale)
    return weights.FloatWeight(weights.llama_permute(weight.w, heads), weight.ternary)


def _counted(chunks: Chunks, bar: Any) -> Chunks:
    def counted() -> Iterable[np.ndarray]:
        yield from chunks()
        if bar is not None:
            bar.update(1)
    return counted


def _progress(enabled: bool | None, total: int, label: str) -> Any:
    if enabled is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"converting {label}", unit="tensor", file=sys.stderr,
                disable=None if enabled is None else not enabled, leave=False)


def _model_name(ckpt: Checkpoint) -> str:
    name = ckpt.config.get("_name_or_path")
    if isinstance(name, str) and name and not name.startswith(("/", ".")):
        return name.rstrip("/").split("/")[-1]
    return ckpt.dir.resolve().name
