"""Decode the quantized fixture files (written by bitnet.cpp and llama.cpp) and compare them with
the F16 files holding the same weights (shared/fixtures/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf_tensors import read_tensor, tensor_names

from bitnet.formats import dequantize
from bitnet.formats.floats import dequantize_rows, quantize_rows
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack, tq_quantize
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import WeightFormat as F
from bitnet.testing.fixtures import MODELS as FIXTURE_MODELS

MODELS = FIXTURE_MODELS
pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason=f"fixtures not found at {MODELS}")

MATMULS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# (quantized file, F16 file with the same tensors, expected format)
PAIRS = [
    ("tiny-b158-i2_s", "tiny-b158-f16", F.I2_S),
    ("mid-b158-i2_s", "mid-b158-f16", F.I2_S),
    ("tiny-bitnet-tq2_0", "tiny-bitnet-f16", F.TQ2_0),
    ("tiny-bitnet-tq1_0", "tiny-bitnet-f16", F.TQ1_0),
    ("mid-bitnet-tq1_0", "mid-bitnet-f16", F.TQ1_0),
]


def load(stem: str, name: str) -> WeightTensor:
    fmt, rows, cols, data = read_tensor(MODELS / f"{stem}.gguf", name)
    return WeightTensor(name, fmt, rows, cols, data)


def f16_values(stem: str, name: str) -> np.ndarray:
    t = load(stem, name)
    assert t.format is F.F16
    return dequantize_rows(F.F16, t.data, t.rows, t.cols)


@pytest.mark.parametrize("quantized, reference, fmt", PAIRS, ids=[p[0] for p in PAIRS])
def test_ternary_tensors_decode_to_the_f16_weights(quantized, reference, fmt):
    names = [n for n in tensor_names(MODELS / f"{quantized}.gguf") if n.split(".")[-2] in MATMULS]
    assert len(names) == 7 * (2 if quantized.startswith("tiny") else 3)
    for name in names:
        tensor = load(quantized, name)
        assert tensor.format is fmt, name
        np.testing.assert_array_equal(dequantize(tensor), f16_values(reference, name), err_msg=name)


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"])
def test_our_packers_reproduce_the_engines_bytes(name):
    w = f16_values("tiny-b158-f16", name)
    # bitnet.cpp's quantize_i2_s: scale = max|W|, codes by sign; its padding bytes are not data
    fork = load("tiny-b158-i2_s", name).data
    scale = np.abs(w).max()
    ours = i2s_pack(np.sign(w).astype(np.int8), scale)
    n_data = w.size // 4 + 4
    np.testing.assert_array_equal(ours[:n_data], fork[:n_data])
    # llama.cpp's TQ quantizers: per-block absmax
    values, d = tq_quantize(w)
    np.testing.assert_array_equal(tq2_pack(values, d), load("tiny-bitnet-tq2_0", name).data)
    np.testing.assert_array_equal(tq1_pack(values, d), load("tiny-bitnet-tq1_0", name).data)


@pytest.mark.parametrize("quantized, reference", [
    ("tiny-bitnet-tq2_0", "tiny-bitnet-f16"),
    ("mid-bitnet-tq2_0", "mid-bitnet-f16"),
])
def test_q6_k_embedding_matches_llama_quantize_byte_for_byte(quantized, reference):
    table = load(quantized, "token_embd.weight")
    assert table.format is F.Q6_K
    embd = f16_values(reference, "token_embd.weight")
    np.testing.assert_array_equal(quantize_rows(F.Q6_K, embd), table.data)
    decoded = dequantize(table)
    assert decoded.shape == embd.shape
    assert np.abs(decoded - embd).max() <= np.abs(embd).max() / 32


def test_q6_k_embedding_nearly_matches_bitnet_cpp():
    # bitnet.cpp's llama-quantize runs the same C code, yet picks another sub-block scale in 9
    # of 2000 blocks (its build's float code generation, not the algorithm: the source is
    # identical); every other block is byte-identical
    table = load("mid-b158-i2_s-embq6k", "token_embd.weight")
    ours = quantize_rows(F.Q6_K, f16_values("mid-b158-f16", "token_embd.weight"))
    differing = (ours.reshape(-1, 210) != table.data.reshape(-1, 210)).any(axis=1)
    assert differing.sum() <= 9
