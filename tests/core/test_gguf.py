"""bitnet.core.gguf: the fixtures open, match gguf-py, and every hostile header is a GGUFError."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf as gguf_py
import numpy as np
import pytest

from bitnet.core.errors import GGUFError
from bitnet.core.gguf import open_gguf
from bitnet.hal.weight_formats import WeightFormat
from bitnet.testing.fixtures import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
MODELS = sorted((FIXTURES / "models").glob("*.gguf"))
F16_MODELS = [p for p in MODELS if p.name.endswith("-f16.gguf")]
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())

pytestmark = pytest.mark.skipif(not MODELS, reason="fixture models not present")

# -- a raw GGUF builder, so each test can say exactly which bytes are wrong ---------------------

STRING, ARRAY, UINT32, FLOAT32, BOOL = 8, 9, 4, 6, 7


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def kv_str(key: str, value: str | bytes) -> bytes:
    return kv(key, STRING, s(value))


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, UINT32, struct.pack("<I", value))


def tensor_info(name: str | bytes, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return (s(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", ggml_type, offset))


def gguf_bytes(kvs: list[bytes], infos: list[bytes], data: bytes = b"", *, version: int = 3,
               magic: bytes = b"GGUF", n_kv: int | None = None,
               n_tensors: int | None = None) -> bytes:
    head = magic + struct.pack("<I", version)
    head += struct.pack("<QQ", len(infos) if n_tensors is None else n_tensors,
                        len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    pad = (-len(body)) % 32
    return body + b"\0" * pad + data


def write(tmp_path: Path, raw: bytes, name: str = "x.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def valid_file() -> bytes:
    """A small valid file: two metadata keys, one F32 [8] tensor and one I2_S [128, 2] one."""
    f32 = np.arange(8, dtype="<f4").tobytes() + b"\0" * 32
    i2s = bytes(range(64)) + struct.pack("<f", 0.5) + b"\0" * 28
    return gguf_bytes(
        [kv_str("general.architecture", "bitnet-b1.58"), kv_u32("general.alignment", 32)],
        [tensor_info("a", [8], 0, 0), tensor_info("b", [128, 2], 36, 64)],
        f32 + i2s,
    )


def assert_gguf_error(tmp_path: Path, raw: bytes, match: str) -> None:
    with pytest.raises(GGUFError, match=match):
        open_gguf(write(tmp_path, raw))


# -- the fixtures -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_fixture_opens_with_expected_tensors(path: Path) -> None:
    with open_gguf(path) as f:
        entry = MANIFEST["models"][path.stem]
        assert f.arch == entry["architecture"]
        assert f.metadata["general.file_type"] == entry["general_file_type"]
        assert f.version == 3 and f.alignment == 32
        for info in f.tensors.values():
            short = info.name.split(".")[-2]
            assert info.type_name.upper() == entry["tensor_types"][short]
            data = f.tensor_bytes(info.name)
            assert data.dtype == np.uint8 and not data.flags.writeable
            assert isinstance(data, np.memmap)  # mapped, never copied
            assert data.nbytes == info.nbytes
            assert info.offset % 32 == 0
            if info.format is WeightFormat.I2_S:
                assert data.shape == (info.n_elements // 4 + 32,)
            else:
                assert data.shape[0] == info.rows


@pytest.mark.parametrize("path", F16_MODELS, ids=lambda p: p.stem)
def test_f16_fixture_reads_like_gguf_reader(path: Path) -> None:
    reader = gguf_py.GGUFReader(path)
    with open_gguf(path) as f:
        expected = {k: fld.contents() for k, fld in reader.fields.items()
                    if not k.startswith("GGUF.")}
        assert f.metadata == expected
        assert [t.name for t in reader.tensors] == list(f.tensors)
        for t in reader.tensors:
            ours = f.tensors[t.name]
            assert ours.offset == t.data_offset
            assert ours.shape == tuple(int(d) for d in t.shape)
            assert ours.ggml_type == int(t.tensor_type)
            assert ours.nbytes == t.n_bytes
            assert np.array_equal(f.tensor_bytes(t.name).reshape(-1),
                                  np.asarray(t.data).view(np.uint8).reshape(-1))


def test_i2s_fixture_tensor_is_flat_with_scale_tail() -> None:
    with open_gguf(FIXTURES / "models" / "tiny-b158-i2_s.gguf") as f:
        info = f.tensors["blk.0.ffn_down.weight"]
        assert info.shape == (768, 256) and info.ggml_type == 36
        assert (info.cols, info.rows) == (768, 256)
        assert info.nbytes == 768 * 256 // 4 + 32
        data = f.tensor_bytes(info.name)
        scale = data[info.n_elements // 4:][:4].view("<f4")[0]
        expected = MANIFEST["models"]["tiny-b158-i2_s"]
        assert np.isfinite(scale) and scale > 0, expected


def test_views_outlive_close_but_file_refuses_new_reads() -> None:
    f = open_gguf(FIXTURES / "models" / "tiny-bitnet-tq2_0.gguf")
    with f:
        view = f.tensor_bytes("blk.0.attn_q.weight")
    assert view.shape == (256, 66) and int(view.sum()) > 0  # still mapped
    with pytest.raises(ValueError, match="closed"):
        f.tensor_bytes("blk.0.attn_q.weight")
    with pytest.raises(KeyError, match="no tensor named"):
        open_gguf(FIXTURES / "models" / "tiny-bitnet-tq2_0.gguf").tensor_bytes("nope")


def test_valid_builder_file_opens(tmp_path: Path) -> None:
    f = open_gguf(write(tmp_path, valid_file()))
    assert f.tensors["a"].format is WeightFormat.F32
    assert np.array_equal(f.tensor_bytes("a").view("<f4").reshape(-1), np.arange(8))
    assert f.tensors["b"].format is WeightFormat.I2_S and f.tensors["b"].nbytes == 96
    assert f.value_types["general.alignment"][0] == gguf_py.GGUFValueType.UINT32


def test_recognised_but_unsupported_type_opens_with_no_format(tmp_path: Path) -> None:
    q4_0 = tensor_info("q", [32, 2], 2, 0)  # Q4_0: 18 bytes per 32
    f = open_gguf(write(tmp_path, gguf_bytes([], [q4_0], b"\0" * 36)))
    assert f.tensors["q"].format is None and f.tensors["q"].type_name == "q4_0"
    assert f.tensors["q"].nbytes == 36


# -- hostile files ------------------------------------------------------------------------------


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_gguf(tmp_path / "absent.gguf")
    assert_gguf_error(tmp_path, b"", "empty")
    with pytest.raises(IsADirectoryError):
        open_gguf(tmp_path)


def test_bad_magic(tmp_path: Path) -> None:
    assert_gguf_error(tmp_path, gguf_bytes([], [], magic=b"GGML"), "bad magic.*not a GGUF")


@pytest.mark.parametrize("version, match", [
    (1, "version 1"),
    (4, "unsupported GGUF version 4"),
    (0x03000000, "big-endian"),
])
def test_unsupported_versions(tmp_path: Path, version: int, match: str) -> None:
    assert_gguf_error(tmp_path, gguf_bytes([], [], version=version), match)


def test_every_truncation_of_the_header_and_data_is_an_error(tmp_path: Path) -> None:
    raw = valid_file()
    for cut in range(len(raw)):
        with pytest.raises(GGUFError, match="truncated|empty|beyond the end|cannot fit"):
            open_gguf(write(tmp_path, raw[:cut], f"cut{cut}.gguf"))


def test_absurd_counts_fail_before_allocating(tmp_path: Path) -> None:
    assert_gguf_error(tmp_path, gguf_bytes([], [], n_kv=1 << 60), "metadata count")
    assert_gguf_error(tmp_path, gguf_bytes([], [], n_tensors=1 << 62), "tensor count")
    huge_array = kv("k", ARRAY, struct.pack("<IQ", UINT32, 1 << 61))
    assert_gguf_error(tmp_path, gguf_bytes([huge_array], []), "'k'.*array of 2305843009213693952")
    string_array = kv("k", ARRAY, struct.pack("<IQ", STRING, 1 << 40))
    assert_gguf_error(tmp_path, gguf_bytes([string_array], []), "cannot fit")
    long_string = s("k") + struct.pack("<IQ", STRING, 1 << 40)
    assert_gguf_error(tmp_path, gguf_bytes([long_string], []), "'k'.*string length")
    past_end = s("k") + struct.pack("<IQ", STRING, 1000) + b"abc"
    assert_gguf_error(tmp_path, gguf_bytes([past_end], []), "truncated in metadata 'k'")


def test_bad_metadata_values(tmp_path: Path) -> None:
    nested = kv("k", ARRAY, struct.pack("<IQ", ARRAY, 1) + struct.pack("<IQ", UINT32, 0))
    assert_gguf_error(tmp_path, gguf_bytes([nested], []), "arrays of arrays")
    unknown = gguf_bytes([kv("k", 77, b"\0" * 8)], [])
    assert_gguf_error(tmp_path, unknown, "unknown GGUF value type 77")
    assert_gguf_error(tmp_path, gguf_bytes([kv("k", BOOL, b"\x05")], []), "bool value")
    bools = kv("k", ARRAY, struct.pack("<IQ", BOOL, 2) + b"\x01\x02")
    assert_gguf_error(tmp_path, gguf_bytes([bools], []), "bool array")
    twice = gguf_bytes([kv_u32("k", 1), kv_u32("k", 2)], [])
    assert_gguf_error(tmp_path, twice, "'k' appears twice")
    assert_gguf_error(tmp_path, gguf_bytes([kv_u32("", 1)], []), "key #0 is empty")


def test_non_utf8_strings(tmp_path: Path) -> None:
    assert_gguf_error(tmp_path, gguf_bytes([kv_str("k", b"\xff\xfe")], []), "'k'.*UTF-8")
    assert_gguf_error(tmp_path, gguf_bytes([kv_u32(b"\xc3(", 1)], []), "key #0.*UTF-8")
    tokens = kv("tok", ARRAY, struct.pack("<IQ", STRING, 2) + s("ok") + s(b"\x80"))
    assert_gguf_error(tmp_path, gguf_bytes([tokens], []), r"'tok'\[1\].*UTF-8")
    bad_name = tensor_info(b"w\xff", [8], 0, 0)
    assert_gguf_error(tmp_path, gguf_bytes([], [bad_name], b"\0" * 32), "tensor #0 name.*UTF-8")


@pytest.mark.parametrize("dims, match", [
    ([0, 4], "dimension 0 is 0"),
    ([4, (1 << 64) - 3], "dimension 1 .*INT64_MAX"),
    ([1 << 32, 1 << 32], "overflow"),
    ([1 << 20, 1 << 20], "beyond the end"),
    ([], "0 dimensions"),
    ([1, 1, 1, 1, 1], "5 dimensions"),
])
def test_bad_dimensions(tmp_path: Path, dims: list[int], match: str) -> None:
    raw = gguf_bytes([], [tensor_info("w", dims, 0, 0)], b"\0" * 64)
    assert_gguf_error(tmp_path, raw, f"'w'.*{match}")


def test_offsets_beyond_eof_misaligned_and_duplicates(tmp_path: Path) -> None:
    data = b"\0" * 64
    beyond = gguf_bytes([], [tensor_info("w", [8], 0, 1 << 40)], data)
    assert_gguf_error(tmp_path, beyond, "'w'.*beyond the end")
    misaligned = gguf_bytes([], [tensor_info("w", [8], 0, 4)], data)
    assert_gguf_error(tmp_path, misaligned, "'w'.*not a multiple of the alignment 32")
    twice = gguf_bytes([], [tensor_info("w", [8], 0, 0), tensor_info("w", [8], 0, 32)], data)
    assert_gguf_error(tmp_path, twice, "'w' appears twice")
    empty = gguf_bytes([], [tensor_info("", [8], 0, 0)], data)
    assert_gguf_error(tmp_path, empty, "empty name")


def test_bad_alignment(tmp_path: Path) -> None:
    odd = gguf_bytes([kv_u32("general.alignment", 24)], [])
    assert_gguf_error(tmp_path, odd, "not a power of two")
    wrong_type = gguf_bytes([kv("general.alignment", FLOAT32, struct.pack("<f", 32))], [])
    assert_gguf_error(tmp_path, wrong_type, "must be a UINT32")


@pytest.mark.parametrize("type_id, arch, match", [
    (99, "bitnet-b1.58", "unknown ggml tensor type 99"),
    (37, "bitnet-b1.58", "I8_S"),
    (38, "bitnet-b1.58", "TL1.*convert to I2_S"),
    (39, "bitnet-b1.58", "TL2.*convert to I2_S"),
    (39, "bitnet", "TL2"),
    (39, "llama", "MXFP4.*not supported"),
])
def test_unusable_tensor_types(tmp_path: Path, type_id: int, arch: str, match: str) -> None:
    raw = gguf_bytes([kv_str("general.architecture", arch)],
                     [tensor_info("w", [256, 4], type_id, 0)], b"\0" * 4096)
    assert_gguf_error(tmp_path, raw, f"'w'.*{match}")


@pytest.mark.parametrize("type_id, k, match", [
    (35, 100, "not a multiple of the tq2_0 block .256."),
    (34, 384, "not a multiple of the tq1_0 block"),
    (14, 128, "q6_k block"),
    (36, 64, "I2_S needs a row length .* multiple of 128, got 64"),
    (36, 192, "multiple of 128, got 192"),
    (3, 20, "Q4_1 block"),
])
def test_row_length_must_fit_the_block(tmp_path: Path, type_id: int, k: int, match: str) -> None:
    raw = gguf_bytes([], [tensor_info("w", [k, 2], type_id, 0)], b"\0" * 4096)
    assert_gguf_error(tmp_path, raw, match)


def test_gguf_error_is_a_value_error() -> None:
    assert issubclass(GGUFError, ValueError)
