"""A fake hub on 127.0.0.1 and a temporary HF_HOME for every hub test.

huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE once, when
``huggingface_hub.constants`` is imported; ``hub_env`` sets the variables and re-reads that module,
so the library sees them as a fresh process would (and puts everything back afterwards).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from typing import Iterator

import pytest

from bitnet.core.api import demo_model_path
from tests.hub.fake_hub import FakeHub, Repo

DEMO = "demo-b158-i2_s.gguf"
_HF_VARS = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
            "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_DISABLE_PROGRESS_BARS")


@contextlib.contextmanager
def hub_env(**values: str | None) -> Iterator[None]:
    """Set (str) or unset (None) environment variables and make huggingface_hub re-read them."""
    import huggingface_hub.constants

    saved = {name: os.environ.get(name) for name in values}
    _apply(values)
    importlib.reload(huggingface_hub.constants)
    try:
        yield
    finally:
        _apply(saved)
        importlib.reload(huggingface_hub.constants)


def _apply(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def checkpoint_files() -> dict[str, bytes]:
    """A checkpoint repo as the hub holds one, with files a checkpoint pull must leave out."""
    return {"config.json": b'{"architectures": ["BitNetForCausalLM"]}',
            "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
            "tokenizer.json": b"{}", "tokenizer_config.json": b"{}",
            "README.md": b"# a checkpoint", "pytorch_model.bin": b"\x00" * 64,
            "original/optimizer.pt": b"\x00" * 64}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    """The fake hub with: bitnet/demo (one GGUF), bitnet/several (two GGUFs), bitnet/ckpt (a
    checkpoint), bitnet/gated (needs HF_TOKEN=hf_good), bitnet/empty (no model)."""
    demo = demo_model_path().read_bytes()
    server = FakeHub(repos={
        "bitnet/demo": Repo({DEMO: demo, "README.md": b"# demo"}),
        "bitnet/several": Repo({"a-i2_s.gguf": demo, "b-tq2_0.gguf": demo}),
        "bitnet/ckpt": Repo(checkpoint_files()),
        "bitnet/gated": Repo({DEMO: demo}, token="hf_good"),
        "bitnet/empty": Repo({"README.md": b"nothing here"}),
    }).start()
    home = tmp_path / "hf"
    env = dict.fromkeys(_HF_VARS)
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"))
    try:
        with hub_env(**env):
            yield server
    finally:
        server.stop()
