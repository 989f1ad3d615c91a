"""A minimal GGUF tensor-table reader for the formats tests.

gguf 0.19's GGUFReader rejects the whole file when a tensor has type 36 (I2_S), and
bitnet.core.gguf belongs to another module's tests; this helper only finds a tensor's bytes.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np

from bitnet.hal.weight_formats import WeightFormat, tensor_bytes

# GGUF metadata value types -> struct format of a scalar (8 = string, 9 = array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}


class _Cursor:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        text = self.buf[self.pos : self.pos + n].decode("utf-8")
        self.pos += n
        return text

    def value(self, vtype: int):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            item_type = self.take("<I")
            return [self.value(item_type) for _ in range(self.take("<Q"))]
        return self.take(_SCALARS[vtype])


@functools.cache
def _tensor_table(path: str) -> tuple[np.ndarray, int, dict]:
    """-> (the file as a uint8 memmap, data-section start, name -> (dims, type, offset))."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(bytes(raw[: 16 << 20]))  # the header of a fixture is far smaller
    assert cur.take("<I") == 0x46554747, f"{path} is not a GGUF file"
    cur.take("<I")  # version
    n_tensors = cur.take("<Q")
    n_kv = cur.take("<Q")
    alignment = 32
    for _ in range(n_kv):
        key = cur.string()
        value = cur.value(cur.take("<I"))
        if key == "general.alignment":
            alignment = int(value)
    infos = {}
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
        ggml_type = cur.take("<I")
        infos[name] = (dims, ggml_type, cur.take("<Q"))
    data_start = (cur.pos + alignment - 1) // alignment * alignment
    return raw, data_start, infos


def tensor_names(path: str | Path) -> list[str]:
    return list(_tensor_table(str(path))[2])


def read_tensor(path: str | Path, name: str) -> tuple[WeightFormat, int, int, np.ndarray]:
    """-> (format, rows, cols, raw uint8 bytes: [rows, row_bytes], or flat [n/4 + 32] for I2_S)."""
    raw, data_start, infos = _tensor_table(str(path))
    dims, ggml_type, offset = infos[name]
    fmt = WeightFormat.from_ggml_type(ggml_type)
    cols = int(dims[0])
    rows = int(np.prod(dims[1:])) if len(dims) > 1 else 1
    start = data_start + offset
    data = np.array(raw[start : start + tensor_bytes(fmt, rows, cols)])
    if fmt is not WeightFormat.I2_S:
        data = data.reshape(rows, -1)
    return fmt, rows, cols, data
