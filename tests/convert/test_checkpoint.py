"""The checkpoint reader: memory-mapped safetensors (bf16 included) and sharded checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bitnet.convert import ConvertError, convert_checkpoint
from bitnet.convert.checkpoint import Checkpoint
from bitnet.convert.safetensors_file import SafetensorsFile, to_f32
from tests.convert.test_errors import checkpoint

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def test_reader_agrees_with_the_safetensors_library(tmp_path) -> None:
    rng = np.random.default_rng(0)
    tensors = {"f32": rng.standard_normal((3, 5)).astype(np.float32),
               "f16": rng.standard_normal((7,)).astype(np.float16),
               "u8": rng.integers(0, 255, (4, 4), dtype=np.uint8),
               "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
               "empty": np.zeros((0, 4), np.float32)}
    path = tmp_path / "t.safetensors"
    safetensors_numpy.save_file(tensors, str(path), metadata={"format": "np"})
    f = SafetensorsFile(path)
    assert f.metadata == {"format": "np"}
    for name, value in tensors.items():
        got = f.tensor(name)
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)
        assert not got.flags.writeable  # a view of the read-only map, not a copy


def test_bf16_is_read_as_torch_reads_it(tmp_path) -> None:
    torch = pytest.importorskip("torch", reason="torch reads the bf16 we compare with "
                                "(scripts/test.sh installs it)")
    from safetensors.torch import save_file

    value = torch.randn(16, 9).to(torch.bfloat16)
    save_file({"w": value}, str(tmp_path / "b.safetensors"))
    f = SafetensorsFile(tmp_path / "b.safetensors")
    assert f.entries["w"].dtype == "BF16"
    np.testing.assert_array_equal(to_f32(f.tensor("w"), "BF16"), value.float().numpy())


def _header(spec: dict) -> bytes:
    text = json.dumps(spec).encode()
    return len(text).to_bytes(8, "little") + text


@pytest.mark.parametrize("header, match", [
    (b"\xff" * 8, "header length"),
    (b"\x04\0\0\0\0\0\0\0[1,2", "not valid JSON"),
    (b"\x02\0\0\0\0\0\0\0[]", "not a JSON object"),
    (_header({"w": {"dtype": "F8", "shape": [1], "data_offsets": [0, 1]}}), "dtype 'F8'"),
    (_header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}), "do not fit"),
    (_header({"w": {"dtype": "F32", "shape": [99], "data_offsets": [0, 396]}}), "do not fit"),
])
def test_bad_headers_are_named(tmp_path, header, match) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(header + b"\0" * 16)
    with pytest.raises(ConvertError, match=f"bad.safetensors: .*{match}"):
        SafetensorsFile(path)


def shard(src, dst, n_shards: int = 2) -> None:
    """Rewrite src's model.safetensors as n shards + model.safetensors.index.json in dst."""
    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    f = SafetensorsFile(src / "model.safetensors")
    names = sorted(f.entries)
    weight_map = {}
    for i in range(n_shards):
        part = names[i::n_shards]
        file = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        safetensors_numpy.save_file({n: np.array(f.tensor(n)) for n in part}, str(dst / file))
        weight_map.update({n: file for n in part})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_a_sharded_checkpoint_converts_to_the_same_bytes(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    src = checkpoint(tmp_path / "a", layers=2)
    sharded = tmp_path / "b" / src.name
    shard(src, sharded, 3)
    assert len(Checkpoint(sharded).files) == 3
    one = convert_checkpoint(src, tmp_path / "one.gguf", progress=False)
    three = convert_checkpoint(sharded, tmp_path / "three.gguf", progress=False)
    assert one.read_bytes() == three.read_bytes()


def test_sharding_errors(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    src = checkpoint(tmp_path / "a")
    sharded = tmp_path / "b"
    shard(src, sharded)
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConvertError, match="shard 'model-00002-of-00002.safetensors' .*missing"):
        Checkpoint(sharded)
    shard(src, tmp_path / "c")
    first = tmp_path / "c" / "model-00001-of-00002.safetensors"
    shutil.copy(first, tmp_path / "c" / "model-00002-of-00002.safetensors")
    with pytest.raises(ConvertError, match="is in both"):
        Checkpoint(tmp_path / "c")
