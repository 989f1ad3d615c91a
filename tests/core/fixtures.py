"""Where the parity fixtures live (shared/fixtures beside the repository) and how to read them."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from bitnet.testing.fixtures import FIXTURES  # noqa: E402


@lru_cache(maxsize=1)
def manifest() -> dict:
    path = FIXTURES / "manifest.json"
    if not path.is_file():
        pytest.skip(f"parity fixtures not found at {FIXTURES} (set BITNET_FIXTURES)")
    return json.loads(path.read_text())


def model_path(name: str) -> Path:
    return FIXTURES / "models" / f"{name}.gguf"


def engine_of(name: str) -> str:
    return "fork" if "-b158-" in name else "mainline"


def tokens_of(name: str) -> list[int]:
    return manifest()["inputs"][f"{name.split('-')[0]}_tokens"]


def engine_logits(name: str, path: str = "batch") -> np.ndarray:
    return np.load(FIXTURES / "logits" / f"{name}.{engine_of(name)}.{path}.npy")


def is_float_file(name: str) -> bool:
    return name.endswith("-f16")




MODEL_NAMES = [
    "tiny-b158-f16", "tiny-b158-i2_s", "tiny-bitnet-f16", "tiny-bitnet-tq2_0", "tiny-bitnet-tq1_0",
    "mid-b158-f16", "mid-b158-i2_s", "mid-b158-i2_s-embq6k", "mid-bitnet-f16",
    "mid-bitnet-tq2_0", "mid-bitnet-tq1_0",
]
