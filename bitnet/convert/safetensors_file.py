"""Memory-mapped tensors of one ``.safetensors`` file, bf16 included.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the
header), then the raw little-endian bytes. The ``safetensors`` library's numpy API cannot return
bf16 tensors (numpy has no bf16 dtype: ``TypeError: data type 'bfloat16' not understood`` with
safetensors 0.8), and its torch API would make torch a runtime dependency, so this reader maps
the file itself: every tensor is a read-only ``np.memmap`` view, bf16 as its raw uint16 bits,
and nothing is read until a tensor is used. Each header entry is checked against the file size,
so a truncated or corrupt file is a clear error, never a huge allocation.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.convert.errors import ConvertError

__all__ = ["SafetensorsFile", "TensorEntry", "to_f32"]

_MAX_HEADER_BYTES = 100 << 20  # the library's own limit: 100 MB of JSON
# safetensors dtype -> numpy dtype holding its bits (BF16 as raw uint16)
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # the safetensors spelling: "BF16", "U8", ...
    shape: tuple[int, ...]  # numpy order (rows first)
    begin: int  # absolute byte offset in the file
    nbytes: int


class SafetensorsFile:
    """Header of one file plus lazy, zero-copy access to its tensors."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise self.error("too short to hold a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER_BYTES, size - 8):
                raise self.error(f"header length {n} is larger than the file allows")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise self.error(f"header is not valid JSON ({err})") from None
        if not isinstance(header, dict):
            raise self.error("header is not a JSON object")
        meta = header.pop("__metadata__", None)
        self.metadata: dict[str, str] = meta if isinstance(meta, dict) else {}
        self.entries = {name: self._entry(name, spec, 8 + n, size)
                        for name, spec in header.items()}
        self._map: np.memmap | None = None

    def error(self, reason: str) -> ConvertError:
        return ConvertError(f"{self.path}: {reason}")

    def _entry(self, name: str, spec: object, data_start: int, size: int) -> TensorEntry:
        if not isinstance(spec, dict):
            raise self.error(f"tensor {name!r}: header entry is not an object")
        dtype = spec.get("dtype")
        shape = spec.get("shape")
        offsets = spec.get("data_offsets")
        if dtype not in _DTYPES:
            raise self.error(f"tensor {name!r}: dtype {dtype!r} is not supported")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise self.error(f"tensor {name!r}: bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets)):
            raise self.error(f"tensor {name!r}: bad data_offsets {offsets!r}")
        begin, end = offsets
        nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if not 0 <= begin <= end or end - begin != nbytes or data_start + end > size:
            raise self.error(f"tensor {name!r}: data_offsets {offsets} do not fit its "
                             f"{dtype} shape {shape} inside the file ({size} bytes)")
        return TensorEntry(name, dtype, tuple(shape), data_start + begin, nbytes)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor's bits as a read-only memory-mapped array (BF16 as uint16)."""
        entry = self.entries[name]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._map[entry.begin:entry.begin + entry.nbytes]
        return raw.view(_DTYPES[entry.dtype]).reshape(entry.shape)


def to_f32(bits: np.ndarray, dtype: str) -> np.ndarray:
    """A float tensor's bits (as ``SafetensorsFile.tensor`` returns them) -> f32 copy."""
    if dtype == "BF16":
        # bf16 is the top half of an f32
        return (bits.astype(np.uint32) << 16).view(np.float32)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"to_f32: {dtype} is not a float dtype")
    return bits.astype(np.float32)
