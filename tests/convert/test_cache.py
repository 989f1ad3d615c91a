"""``bitnet.load(CHECKPOINT_DIR)`` / ``bitnet run -m CHECKPOINT_DIR``: converted once into the
cache (BITNET_CACHE_DIR, a per-session directory under tests/conftest.py), then reused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import bitnet
from bitnet.cli.main import main
from bitnet.convert.cache import cached_gguf
from tests.convert.test_errors import checkpoint


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BITNET_CACHE_DIR", str(root))
    return root / "converted"


def test_load_converts_once_and_reuses_the_file(tmp_path, cache) -> None:
    src = checkpoint(tmp_path)
    with bitnet.load(src, device="reference", progress=False) as model:
        first = model.logits([1, 2, 3])
        path = model.path
    assert path.parent == cache and path.suffix == ".gguf"
    stamp = path.stat().st_mtime_ns
    with bitnet.load(src, device="reference", progress=False) as model:
        assert model.path == path
        np.testing.assert_array_equal(model.logits([1, 2, 3]), first)
    assert path.stat().st_mtime_ns == stamp  # not converted again
    assert list(cache.iterdir()) == [path]


def test_a_changed_checkpoint_gets_a_new_file(tmp_path, cache) -> None:
    src = checkpoint(tmp_path)
    first = cached_gguf(src, progress=False)
    config = json.loads((src / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (src / "config.json").write_text(json.dumps(config))
    second = cached_gguf(src, progress=False)
    assert second != first and second.is_file()
    # a rewritten shard (same bytes, new mtime) also counts as changed: content is not hashed
    shard = src / "model.safetensors"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert cached_gguf(src, progress=False) not in (first, second)
    # another type is another file
    assert cached_gguf(src, "f16", progress=False) != cached_gguf(src, progress=False)


def test_run_accepts_a_checkpoint_dir(tmp_path, cache, capsys) -> None:
    src = checkpoint(tmp_path)
    rc = main(["run", "-m", str(src), "--device", "reference", "-p", "Once", "-n", "3",
               "--temp", "0", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 3 or out["finish_reason"] != "length"
    assert len(list(cache.iterdir())) == 1


def test_a_bad_checkpoint_dir_is_a_one_line_error(tmp_path, cache, capsys) -> None:
    src = checkpoint(tmp_path, config={"architectures": ["Qwen2ForCausalLM"]})
    assert main(["run", "-m", str(src), "--device", "reference", "-n", "1"]) == 2
    assert "Qwen2ForCausalLM" in capsys.readouterr().err
    assert not cache.exists() or list(cache.iterdir()) == []
