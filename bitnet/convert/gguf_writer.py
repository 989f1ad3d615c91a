"""Write GGUF files in every format bitnet reads, I2_S included.

``GGUFModelWriter`` serializes the header, metadata and tensor infos with ``gguf.GGUFWriter`` and
then streams each tensor's bytes itself, chunk by chunk, so a 2B-shaped model never has more than
one tensor (or one slice of the embedding) in memory. gguf-py cannot size I2_S (type 36 is not in
``GGML_QUANT_SIZES``), so tensor infos are registered with the logical shape and the byte size
computed by ``bitnet.hal.weight_formats.tensor_bytes`` (docs/formats.md 2.2: n/4 + 32).

Its users: the checkpoint converter (``bitnet.convert.to_gguf``), the synthetic models of tests
and benchmarks (``bitnet.testing.synthetic``), ``rewrite_gguf`` for edited copies of a file, and
the demo model's export (``tools/export_demo.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGUFValueType

from bitnet.hal.weight_formats import FLOAT_FORMATS, WeightFormat, tensor_bytes

__all__ = ["FILE_TYPES", "Chunks", "GGUFModelWriter", "encode_float", "encode_ternary",
           "rewrite_gguf"]

# general.file_type per weight format: llama.cpp's LLAMA_FTYPE ids, and the BitNet fork's
# MOSTLY_I2_S = 40 (which upstream calls MOSTLY_Q1_0: docs/formats.md 2.1)
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
