"""The bundled demo model (bitnet/data/demo-b158-i2_s.gguf): packaged, loads, tokenizes like its
SentencePiece model, generates on every available backend, and its held-out perplexity is the
documented figure on every backend (docs/demo-model.md).

The held-out data (``heldout.json``) is the first 8 x 256-token windows of the validation split,
written with the engine's figure by tools/eval_demo.py; ``torch_logits.npz`` holds the PyTorch
float model's logits at a few positions of two of those windows.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bitnet
from bitnet.core.gguf import open_gguf
from bitnet.hal.weight_formats import WeightFormat

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[1] / "docs" / "demo-model.md"
HELDOUT = json.loads((HERE / "heldout.json").read_text())
BOS_ID = 1
EOS_ID = 2
PROMPT = "It is a truth universally acknowledged, that"


def demo_path() -> Path:
    return Path(str(resources.files("bitnet.data") / "demo-b158-i2_s.gguf"))


def heldout_windows() -> np.ndarray:
    """int32 [n_windows, seq_len]: the BOS/EOS paragraph stream cut into windows."""
    stream: list[int] = []
    for ids in HELDOUT["ids"]:
        stream += [BOS_ID] + ids + [EOS_ID]
    n, t = HELDOUT["n_windows"], HELDOUT["seq_len"]
    return np.asarray(stream[: n * t], dtype=np.int32).reshape(n, t)


def perplexity(logits: list[np.ndarray], windows: np.ndarray) -> float:
    """exp(mean next-token NLL) of logits [T, V] per window, in float64."""
    total = 0.0
    count = 0
    for lg, w in zip(logits, windows):
        lg = np.asarray(lg, dtype=np.float64)[:-1]
        m = lg.max(axis=1, keepdims=True)
        logz = m[:, 0] + np.log(np.exp(lg - m).sum(axis=1))
        total += float((logz - lg[np.arange(len(w) - 1), w[1:]]).sum())
        count += len(w) - 1
    return math.exp(total / count)


def available_devices() -> list[str]:
    rows = bitnet.list_devices()
    return [r.device for r in rows if r.status == "ok"]


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    """Per available device: backend name, held-out logits and perplexity, a greedy sample."""
    windows = heldout_windows()
    out: dict[str, dict[str, Any]] = {}
    for device in available_devices():
        with bitnet.load(demo_path(), device=device) as model:
            logits = [model.logits(w) for w in windows]
            out[device] = {
                "backend": model.backend.name,
                "logits": logits,
                "ppl": perplexity(logits, windows),
                "sample": model.generate(PROMPT, max_tokens=24, temperature=0.0),
            }
    return out


def test_demo_file_is_package_data() -> None:
    path = demo_path()
    assert path.is_file(), f"{path} is missing"
    assert path.stat().st_size < 8 * 1024 * 1024  # "a few MB"
    g = open_gguf(path)
    assert g.metadata["general.architecture"] == "bitnet-b1.58"
    assert g.metadata["tokenizer.ggml.model"] == "llama"
    ternary = [t for t in g.tensors.values() if t.format is WeightFormat.I2_S]
    assert len(ternary) == 7 * g.metadata["bitnet-b1.58.block_count"]


def test_tokenizer_matches_sentencepiece_ids() -> None:
    with bitnet.load(demo_path(), device="reference") as model:
        for text, ids in zip(HELDOUT["paragraphs"], HELDOUT["ids"]):
            assert model.tokenizer.encode(text, add_bos=False) == ids
            assert model.tokenizer.decode(ids) == text


@pytest.mark.slow  # shares the per-backend runs (~3 s per backend)
def test_reference_backend_is_available(runs: dict[str, dict[str, Any]]) -> None:
    assert any(r["backend"] == "reference" for r in runs.values())


@pytest.mark.slow  # shares the per-backend runs (~3 s per backend)
def test_generates_text_on_every_backend(runs: dict[str, dict[str, Any]]) -> None:
    for device, r in runs.items():
        words = re.findall(r"[A-Za-z]+", r["sample"])
        assert len(words) >= 3, f"{device}: {r['sample']!r}"


@pytest.mark.slow  # shares the per-backend runs (~3 s per backend)
def test_perplexity_is_the_documented_figure(runs: dict[str, dict[str, Any]]) -> None:
    ref = next(r for r in runs.values() if r["backend"] == "reference")
    assert ref["ppl"] == pytest.approx(HELDOUT["engine_ppl"], rel=1e-4)
    # docs/demo-model.md states the same figure (rounded to 2 decimals)
    match = re.search(r"held-out test windows[^\n]*?\*\*([0-9.]+)\*\*", DOCS.read_text())
    assert match, "docs/demo-model.md does not state the held-out test-window perplexity"
    assert float(match.group(1)) == pytest.approx(HELDOUT["engine_ppl"], abs=0.006)


@pytest.mark.slow  # shares the per-backend runs (~3 s per backend)
def test_perplexity_is_the_same_on_every_backend(runs: dict[str, dict[str, Any]]) -> None:
    for device, r in runs.items():
        assert r["ppl"] == pytest.approx(HELDOUT["engine_ppl"], rel=1e-3), device


@pytest.mark.slow  # shares the per-backend runs (~3 s per backend)
def test_engine_logits_match_pytorch_model(runs: dict[str, dict[str, Any]]) -> None:
    data = np.load(HERE / "torch_logits.npz")
    for device, r in runs.items():
        for i, w in enumerate(data["windows"]):
            got = np.asarray(r["logits"][int(w)], dtype=np.float64)[data["positions"]]
            want = data["logits"][i].astype(np.float64)
            cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
            assert cos.min() >= 0.999, f"{device} window {w}: cosine {cos.min():.6f}"
