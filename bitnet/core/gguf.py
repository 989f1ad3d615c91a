"""Read GGUF files: metadata as plain Python values, tensors as read-only memory maps.

    with open_gguf("model.gguf") as f:
        f.metadata["general.architecture"]      # "bitnet-b1.58"
        f.tensors["blk.0.attn_q.weight"]        # TensorInfo(shape=(K, M), format=I2_S, ...)
        f.tensor_bytes("blk.0.attn_q.weight")   # uint8 memmap, no copy

The header (metadata and tensor infos) is parsed here rather than by ``gguf.GGUFReader``, using
the ``gguf`` package only for its constants (magic, value types, ggml type ids and block sizes).
Why: GGUFReader rejects the whole file on the BitNet fork's I2_S type (36); it loops once per
declared array element without checking the count against the file size, so a hostile header
with a 2**60-element array hangs it; and it builds numpy objects per array element, which took
18 s on a 128256-token vocabulary with 280147 merges (this parser: well under a second).

Every length and count is checked against the bytes left in the file BEFORE anything is read or
allocated, so a hostile file ends in a GGUFError naming the key or tensor, never a crash, a hang
or a huge allocation. Format facts are in docs/formats.md (sections 2.1, 2.2, 5, 7).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
)

from bitnet.core.errors import GGUFError
from bitnet.hal.weight_formats import WeightFormat, tensor_bytes

__all__ = ["BITNET_ARCHS", "GGUFError", "GGUFFile", "TensorInfo", "open_gguf"]

SUPPORTED_VERSIONS = (2, 3)  # v3 only added big-endian files; v2 has the same layout
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_STRING_BYTES = 16 << 20  # one metadata string; chat templates are a few KiB
INT64_MAX = (1 << 63) - 1
BITNET_ARCHS = frozenset({"bitnet-b1.58", "bitnet-25", "bitnet"})

# Smallest possible encodings, used to bound counts by the bytes left before looping.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset

# GGUF scalar value types: (struct format, numpy dtype for arrays).
_SCALARS: dict[GGUFValueType, tuple[struct.Struct, str]] = {
    GGUFValueType.UINT8: (struct.Struct("<B"), "<u1"),
    GGUFValueType.INT8: (struct.Struct("<b"), "<i1"),
    GGUFValueType.UINT16: (struct.Struct("<H"), "<u2"),
    GGUFValueType.INT16: (struct.Struct("<h"), "<i2"),
    GGUFValueType.UINT32: (struct.Struct("<I"), "<u4"),
    GGUFValueType.INT32: (struct.Struct("<i"), "<i4"),
    GGUFValueType.FLOAT32: (struct.Struct("<f"), "<f4"),
    GGUFValueType.UINT64: (struct.Struct("<Q"), "<u8"),
    GGUFValueType.INT64: (struct.Struct("<q"), "<i8"),
    GGUFValueType.FLOAT64: (struct.Struct("<d"), "<f8"),
    GGUFValueType.BOOL: (struct.Struct("<B"), "<u1"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# (value type, item type of an array or None), as stored in the file
ValueType = tuple[GGUFValueType, GGUFValueType | None]

_TL_ADVICE = "TL1/TL2 LUT files are built for one kernel build; convert to I2_S"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the file describes it. Sizes are computed by us, never trusted."""

    name: str
    ggml_type: int  # raw id from the file (36 = the BitNet fork's I2_S)
    format: WeightFormat | None  # None: a ggml type bitnet recognises but cannot run (Q4_K, ...)
    shape: tuple[int, ...]  # ggml order: ne0 (row length, K) first, then ne1 (rows, M), ...
    offset: int  # absolute byte offset of the data in the file
    nbytes: int  # bytes of data (I2_S: n/4 + 32)

    @property
    def cols(self) -> int:
        """Row length K (ne0)."""
        return self.shape[0]

    @property
    def rows(self) -> int:
        """Number of rows: the product of every dim after ne0 (1 for a 1-D tensor)."""
        return _product(self.shape[1:])

    @property
    def n_elements(self) -> int:
        return _product(self.shape)

    @property
    def type_name(self) -> str:
        """Human name of the ggml type: "i2_s", "tq2_0", "q4_k", ..."""
        if self.format is not None:
            return self.format.value
        return GGMLQuantizationType(self.ggml_type).name.lower()


class GGUFFile:
    """An open GGUF file: parsed header plus one read-only memory map of the whole file.

    Views returned by ``tensor_bytes`` keep the mapping alive on their own, so they stay valid
    after ``close()``; closing only drops this object's reference.
    """

    def __init__(self, path: Path, data: np.ndarray, version: int, alignment: int,
                 data_offset: int, metadata: dict[str, Any],
                 value_types: dict[str, ValueType], tensors: dict[str, TensorInfo]) -> None:
        self.path = path
        self.version = version
        self.alignment = alignment
        self.data_offset = data_offset  # absolute start of the tensor-data section
        self.metadata = metadata  # key -> str | int | float | bool | list of those
        self.value_types = value_types  # key -> (GGUF value type, array item type or None)
        self.tensors = tensors  # name -> TensorInfo, in file order
        self.file_size = int(data.shape[0])
        self._data: np.ndarray | None = data

    @property
    def arch(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def tensor_bytes(self, name: str) -> np.ndarray:
        """Read-only uint8 memmap of one tensor's data, no copy.

        Shape ``[rows, row_bytes]`` for row formats; flat ``[n/4 + 32]`` for I2_S (codes of the
        flattened tensor, then the f32 scale and padding), as ``WeightTensor.data`` expects.
        """
        if self._data is None:
            raise ValueError(f"{self.path.name}: the GGUF file is closed")
        info = self.tensors.get(name)
        if info is None:
            raise KeyError(f"{self.path.name} has no tensor named {name!r}")
        flat = self._data[info.offset:info.offset + info.nbytes]
        if info.format is WeightFormat.I2_S:
            return flat
        return flat.reshape(info.rows, info.nbytes // info.rows)

    def close(self) -> None:
        self._data = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<GGUFFile {self.path.name} v{self.version} arch={self.arch!r} "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors>")


def open_gguf(path: str | Path) -> GGUFFile:
    """Open and validate a GGUF file. Raises GGUFError naming the reason for any bad file;
    OSErrors (missing file, permissions) pass through unchanged."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a GGUF file")
    if path.stat().st_size == 0:
        raise GGUFError(f"{path.name}: the file is empty (0 bytes), not a GGUF file")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    return _HeaderParser(path, data).parse()


# -- header parsing ---------------------------------------------------------------------------


class _HeaderParser:
    """Walks the header with a cursor; every read is bounds-checked first."""

    def __init__(self, path: Path, data: np.ndarray) -> None:
        self.path = path
        self.data = data
        self.view = data.data  # a memoryview: struct.unpack_from and str() read the map
        self.size = int(data.shape[0])
        self.pos = 0
        self.item_type: GGUFValueType | None = None  # of the last array read

    def error(self, message: str) -> GGUFError:
        return GGUFError(f"{self.path.name}: {message}")

    # cursor primitives

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.error(f"truncated in {what}: needs {n} bytes at offset {self.pos}, "
                             f"but the file ends at {self.size}")

    def u32(self, what: str) -> int:
        self.need(4, what)
        value = _U32.unpack_from(self.view, self.pos)[0]
        self.pos += 4
        return int(value)

    def u64(self, what: str) -> int:
        self.need(8, what)
        value = _U64.unpack_from(self.view, self.pos)[0]
        self.pos += 8
        return int(value)

    def string(self, what: str) -> str:
        length = self.u64(f"{what} (string length)")
        if length > MAX_STRING_BYTES:
            raise self.error(f"{what}: string length {length} exceeds the {MAX_STRING_BYTES}-byte "
                             "limit (corrupt length?)")
        self.need(length, what)
        raw = self.view[self.pos:self.pos + length]
        self.pos += length
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what}: string is not valid UTF-8 ({e.reason} at byte {e.start})")

    # values

    def value_type(self, raw: int, what: str) -> GGUFValueType:
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.error(f"{what}: unknown GGUF value type {raw}") from None

    def value(self, vtype: GGUFValueType, what: str) -> Any:
        if vtype is GGUFValueType.STRING:
            return self.string(what)
        if vtype is GGUFValueType.ARRAY:
            return self.array(what)
        fmt, _ = _SCALARS[vtype]
        self.need(fmt.size, what)
        value = fmt.unpack_from(self.view, self.pos)[0]
        self.pos += fmt.size
        if vtype is GGUFValueType.BOOL:
            return self.boolean(value, what)
        return value

    def boolean(self, value: int, what: str) -> bool:
        if value not in (0, 1):
            raise self.error(f"{what}: bool value must be 0 or 1, found {value}")
        return bool(value)

    def array(self, what: str) -> list[Any]:
        item_type = self.value_type(self.u32(f"{what} (array element type)"), what)
        self.item_type = item_type
        count = self.u64(f"{what} (array length)")
        if item_type is GGUFValueType.ARRAY:
            raise self.error(f"{what}: arrays of arrays are not supported")
        min_item = 8 if item_type is GGUFValueType.STRING else _SCALARS[item_type][0].size
        left = self.size - self.pos
        # bound the count by the file before looping or allocating anything
        if count * min_item > left:
            raise self.error(f"{what}: array of {count} {item_type.name} elements cannot fit in "
                             f"the {left} bytes left in the file")
        if item_type is GGUFValueType.STRING:
            return self.strings(count, what)
        fmt, dtype = _SCALARS[item_type]
        items = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * fmt.size
        if item_type is GGUFValueType.BOOL:
            if count and int(items.max()) > 1:
                raise self.error(f"{what}: bool array holds a value other than 0 or 1")
            return [bool(v) for v in items.tolist()]
        return items.tolist()

    def strings(self, count: int, what: str) -> list[str]:
        # the hot loop for vocabularies (hundreds of thousands of strings): locals only
        view = self.view
        size = self.size
        pos = self.pos
        unpack = _U64.unpack_from
        out: list[str] = []
        append = out.append
        for i in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"{what}[{i}] (string length)")
            length = unpack(view, pos)[0]
            pos += 8
            if length > size - pos:
                raise self.error(f"{what}[{i}]: string of {length} bytes runs past the end of "
                                 "the file")
            try:
                append(str(view[pos:pos + length], "utf-8"))
            except UnicodeDecodeError as e:
                raise self.error(f"{what}[{i}]: string is not valid UTF-8 ({e.reason})") from None
            pos += length
        self.pos = pos
        return out

    # sections

    def parse(self) -> GGUFFile:
        version = self.parse_preamble()
        n_tensors = self.u64("header (tensor count)")
        n_kv = self.u64("header (metadata count)")
        left = self.size - self.pos
        if n_kv * _MIN_KV_BYTES > left:
            raise self.error(f"header: metadata count {n_kv} cannot fit in the {left} bytes of "
                             "the file")
        metadata, value_types = self.parse_metadata(n_kv)
        left = self.size - self.pos
        if n_tensors * _MIN_TENSOR_INFO_BYTES > left:
            raise self.error(f"header: tensor count {n_tensors} cannot fit in the {left} bytes "
                             "left in the file")
        raw_infos = [self.parse_tensor_info(i) for i in range(n_tensors)]
        alignment = self.alignment(metadata, value_types)
        data_offset = _align_up(self.pos, alignment)
        arch = metadata.get("general.architecture")
        tensors: dict[str, TensorInfo] = {}
        for name, dims, type_id, rel_offset in raw_infos:
            if name in tensors:
                raise self.error(f"tensor {name!r} appears twice")
            tensors[name] = self.check_tensor(name, dims, type_id, rel_offset, data_offset,
                                              alignment, arch)
        return GGUFFile(self.path, self.data, version, alignment, data_offset, metadata,
                        value_types, tensors)

    def parse_preamble(self) -> int:
        self.need(8, "header (magic and version)")
        magic = bytes(self.view[0:4])
        if _U32.unpack(magic)[0] != GGUF_MAGIC:
            raise self.error(f"bad magic {magic!r}: not a GGUF file (expected b'GGUF')")
        self.pos = 4
        version = self.u32("header (version)")
        if version in SUPPORTED_VERSIONS:
            return version
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            raise self.error("big-endian GGUF files are not supported (convert on a "
                             "little-endian machine)")
        if version == 1:
            raise self.error("GGUF version 1 (2023) is not supported; re-convert the model")
        raise self.error(f"unsupported GGUF version {version} (bitnet reads versions 2 and 3)")

    def parse_metadata(self, n_kv: int) -> tuple[dict[str, Any], dict[str, ValueType]]:
        metadata: dict[str, Any] = {}
        value_types: dict[str, ValueType] = {}
        for i in range(n_kv):
            key = self.string(f"metadata key #{i}")
            if not key:
                raise self.error(f"metadata key #{i} is empty")
            if key in metadata:
                raise self.error(f"metadata key {key!r} appears twice")
            what = f"metadata {key!r}"
            vtype = self.value_type(self.u32(f"{what} (value type)"), what)
            metadata[key] = self.value(vtype, what)
            item_type = self.item_type if vtype is GGUFValueType.ARRAY else None
            value_types[key] = (vtype, item_type)
        return metadata, value_types

    def parse_tensor_info(self, index: int) -> tuple[str, tuple[int, ...], int, int]:
        name = self.string(f"tensor #{index} name")
        if not name:
            raise self.error(f"tensor #{index} has an empty name")
        what = f"tensor {name!r}"
        n_dims = self.u32(f"{what} (dimension count)")
        if not 1 <= n_dims <= MAX_DIMS:
            raise self.error(f"{what}: {n_dims} dimensions (must be 1..{MAX_DIMS})")
        dims = tuple(self.u64(f"{what} (dimension {j})") for j in range(n_dims))
        for j, d in enumerate(dims):
            if d == 0:
                raise self.error(f"{what}: dimension {j} is 0")
            if d > INT64_MAX:
                raise self.error(f"{what}: dimension {j} is {d}, beyond INT64_MAX (a negative "
                                 "size written as unsigned?)")
        type_id = self.u32(f"{what} (type)")
        rel_offset = self.u64(f"{what} (data offset)")
        return name, dims, type_id, rel_offset

    def alignment(self, metadata: dict[str, Any], value_types: dict[str, ValueType]) -> int:
        key = "general.alignment"
        if key not in metadata:
            return GGUF_DEFAULT_ALIGNMENT
        value = metadata[key]
        vtype = value_types[key][0]
        if vtype is not GGUFValueType.UINT32:
            raise self.error(f"metadata {key!r} must be a UINT32, found {vtype.name}")
        if value == 0 or value & (value - 1):
            raise self.error(f"metadata {key!r} = {value} is not a power of two")
        return int(value)

    def check_tensor(self, name: str, dims: tuple[int, ...], type_id: int, rel_offset: int,
                     data_offset: int, alignment: int, arch: Any) -> TensorInfo:
        what = f"tensor {name!r}"
        fmt = _tensor_format(type_id, arch, what, self.error)
        n_elements = _product(dims)
        if n_elements > INT64_MAX:
            raise self.error(f"{what}: {n_elements} elements overflow a 64-bit count")
        nbytes = _tensor_nbytes(fmt, type_id, dims, what, self.error)
        if rel_offset % alignment:
            raise self.error(f"{what}: data offset {rel_offset} is not a multiple of the "
                             f"alignment {alignment}")
        start = data_offset + rel_offset
        if start + nbytes > self.size:
            raise self.error(f"{what}: data [{start}, {start + nbytes}) lies beyond the end of "
                             f"the file ({self.size} bytes; truncated?)")
        return TensorInfo(name, type_id, fmt, dims, start, nbytes)


def _tensor_format(type_id: int, arch: Any, what: str, error: Any) -> WeightFormat | None:
    """WeightFormat for a ggml type id, None for types we recognise but cannot run, or raise."""
    fmt = WeightFormat.from_ggml_type(type_id)
    if fmt is not None:
        return fmt
    if type_id == 37:
        raise error(f"{what}: ggml type 37 is bitnet.cpp's I8_S activation type, not a weight "
                    "format")
    if type_id == 38:
        raise error(f"{what}: ggml type 38 is bitnet.cpp's TL1; {_TL_ADVICE}")
    if type_id == 39:
        # upstream ggml's MXFP4 and the BitNet fork's TL2 share id 39 (docs/formats.md 2.1)
        if arch in BITNET_ARCHS:
            raise error(f"{what}: ggml type 39 in a {arch} file is bitnet.cpp's TL2; "
                        f"{_TL_ADVICE}")
        raise error(f"{what}: ggml type 39 (MXFP4) is not supported by bitnet")
    try:
        GGMLQuantizationType(type_id)
    except ValueError:
        raise error(f"{what}: unknown ggml tensor type {type_id}") from None
    return None


def _tensor_nbytes(fmt: WeightFormat | None, type_id: int, dims: tuple[int, ...], what: str,
                   error: Any) -> int:
    k = dims[0]
    rows = _product(dims[1:])
    if fmt is WeightFormat.I2_S and k % 128:
        # I2_S packs 128-element groups of the flattened tensor: rows only start on a byte
        # boundary of their own when K is a multiple of 128 (docs/formats.md 2.3)
        raise error(f"{what}: I2_S needs a row length (ne0) that is a multiple of 128, got {k}")
    if fmt is not None:
        if k % fmt.block:
            raise error(f"{what}: row length (ne0) {k} is not a multiple of the {fmt.value} "
                        f"block ({fmt.block})")
        return tensor_bytes(fmt, rows, k)
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    name = GGMLQuantizationType(type_id).name
    if k % block:
        raise error(f"{what}: row length (ne0) {k} is not a multiple of the {name} block "
                    f"({block})")
    return rows * (k // block) * type_size


def _product(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _align_up(x: int, n: int) -> int:
    return (x + n - 1) // n * n
