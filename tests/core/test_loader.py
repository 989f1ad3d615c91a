"""bitnet.core.loader: fixtures map onto LayerWeights; every structural problem is named."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitnet.core.config import ModelConfig
from bitnet.core.errors import ModelFormatError
from bitnet.core.gguf import open_gguf
from bitnet.convert.gguf_writer import rewrite_gguf
from bitnet.core.loader import load_weights, model_requirements
from bitnet.hal.weight_formats import WeightFormat
from bitnet.hal.ops import Op
from bitnet.testing.fixtures import MODELS as FIXTURE_MODELS

MODELS_DIR = FIXTURE_MODELS
MODELS = sorted(MODELS_DIR.glob("*.gguf"))
pytestmark = pytest.mark.skipif(not MODELS, reason="fixture models not present")


def load(path: Path, ternarize: bool = False) -> tuple[ModelConfig, Any]:
    f = open_gguf(path)
    config = ModelConfig.from_metadata(f.metadata)
    return config, load_weights(f, config, ternarize=ternarize)


def edited(tmp_path: Path, fixture: str, **edits: Any) -> Path:
    return rewrite_gguf(MODELS_DIR / f"{fixture}.gguf", tmp_path / "edited.gguf", **edits)


def f32(*values: float) -> tuple[WeightFormat, tuple[int, ...], np.ndarray]:
    return WeightFormat.F32, (len(values),), np.array(values, dtype="<f4")


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_fixture_loads_with_shapes_and_formats(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fixtures are ternary-valued: no warning
        config, w = load(path)
    assert len(w.layers) == config.n_layers and w.output is None and w.head is w.token_embd
    assert (w.token_embd.rows, w.token_embd.cols) == (config.n_vocab, config.d_model)
    assert w.output_norm.dtype == np.float32 and w.output_norm.shape == (config.d_model,)
    fmt = {"i2_s": WeightFormat.I2_S, "tq1_0": WeightFormat.TQ1_0, "tq2_0": WeightFormat.TQ2_0,
           "f16": WeightFormat.F16}[path.stem.split("-")[2]]
    layer = w.layers[-1]
    assert all(t.format is fmt and t.out_scale == 1.0 for t in layer.linears())
    assert (layer.attn_q.rows, layer.attn_q.cols) == (config.q_dim, config.d_model)
    assert (layer.attn_k.rows, layer.attn_v.rows) == (config.kv_dim, config.kv_dim)
    assert (layer.attn_output.rows, layer.attn_output.cols) == (config.d_model, config.q_dim)
    assert (layer.ffn_gate.rows, layer.ffn_up.rows) == (config.d_ff, config.d_ff)
    assert (layer.ffn_down.rows, layer.ffn_down.cols) == (config.d_model, config.d_ff)
    assert layer.attn_sub_norm.shape == (config.q_dim,)
    assert layer.ffn_sub_norm.shape == (config.d_ff,)
    assert all(n.dtype == np.float32 for n in layer.norms())
    assert isinstance(layer.ffn_down.data, np.memmap)  # no copy


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_requirements(path: Path) -> None:
    config, w = load(path)
    needs = model_requirements(config, w)
    ternary = path.stem.split("-")[2] != "f16"
    assert (Op.LINEAR_TERNARY in needs.ops) == ternary
    assert Op.LINEAR_FLOAT in needs.ops  # the head
    gate = Op.SILU_MUL if config.arch == "bitnet" else Op.RELU2_MUL
    assert gate in needs.ops and ({Op.SILU_MUL, Op.RELU2_MUL} - {gate}).isdisjoint(needs.ops)
    assert needs.float_formats >= {w.token_embd.format}
    assert needs.n_ctx == config.n_ctx
    assert needs.weight_bytes >= sum(t.data.nbytes for t in w.tensors())
    assert needs.weight_bytes <= path.stat().st_size
    shapes = {(s.rows, s.cols) for s in needs.linear_shapes}
    assert (config.n_vocab, config.d_model) in shapes and (config.d_ff, config.d_model) in shapes


@pytest.mark.parametrize("shape", ["tiny", "mid"])
def test_ternarized_f16_equals_the_forks_i2s_file(shape: str) -> None:
    _, from_f16 = load(MODELS_DIR / f"{shape}-b158-f16.gguf", ternarize=True)
    _, i2s = load(MODELS_DIR / f"{shape}-b158-i2_s.gguf")
    for a, b in zip(from_f16.layers, i2s.layers):
        for x, y in zip(a.linears(), b.linears()):
            assert x.format is WeightFormat.I2_S
            # codes and scale identical; the fork leaves garbage in the 28 padding bytes
            assert np.array_equal(np.asarray(x.data)[:-28], np.asarray(y.data)[:-28]), x.name


def test_ternarize_leaves_ternary_files_alone() -> None:
    _, w = load(MODELS_DIR / "tiny-bitnet-tq2_0.gguf", ternarize=True)
    assert w.layers[0].attn_q.format is WeightFormat.TQ2_0
    assert w.token_embd.format is WeightFormat.Q6_K


def test_non_ternary_float_weights_warn_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = rng.standard_normal((256, 256)).astype("<f2")
    path = edited(tmp_path, "tiny-b158-f16", tensors={
        "blk.0.attn_q.weight": (WeightFormat.F16, (256, 256), noisy),
        "blk.1.attn_q.weight": (WeightFormat.F16, (256, 256), noisy),
    })
    with pytest.warns(UserWarning, match="2 of 14 float matmul weights are not ternary") as rec:
        load(path)
    assert len(rec) == 1
    with pytest.warns(UserWarning, match="ternarize=True rounds them"):
        _, w = load(path, ternarize=True)
    assert w.layers[0].attn_q.format is WeightFormat.I2_S


def test_scale_tensors_of_arch_bitnet(tmp_path: Path) -> None:
    path = edited(tmp_path, "tiny-bitnet-tq2_0",
                  tensors={"blk.1.ffn_down.scale": f32(0.25), "blk.0.attn_q.scale": f32(2.0)})
    _, w = load(path)
    assert w.layers[1].ffn_down.out_scale == 0.25 and w.layers[0].attn_q.out_scale == 2.0
    assert w.layers[0].attn_k.out_scale == 1.0


@pytest.mark.parametrize("fixture, edits, match", [
    ("tiny-b158-i2_s", {"drop_tensors": ["blk.1.ffn_up.weight"]},
     "'blk.1.ffn_up.weight' is missing"),
    ("tiny-b158-i2_s", {"drop_tensors": ["output_norm.weight"]}, "'output_norm.weight' is missing"),
    ("tiny-b158-i2_s", {"tensors": {"blk.0.attn_q.bias": f32(*[0.0] * 256)}},
     "bias tensors are not supported.*blk.0.attn_q.bias"),
    ("tiny-b158-i2_s", {"tensors": {"rope_freqs.weight": f32(*[1.0] * 31, 2.0)}},
     "'rope_freqs.weight' holds RoPE frequency factors other than 1.*Llama-3.1-style"),
    ("tiny-b158-i2_s", {"tensors": {"rope_freqs.weight": f32(*[1.0] * 16)}},
     "'rope_freqs.weight' has shape \\[16\\], expected \\[32\\]"),
    ("tiny-b158-i2_s", {"tensors": {"blk.2.attn_norm.weight": f32(*[1.0] * 256)}},
     "unexpected tensors for a 2-layer.*blk.2.attn_norm.weight"),
    ("tiny-b158-i2_s", {"tensors": {"blk.0.attn_q.scale": f32(1.0)}},
     ".scale tensors belong to arch bitnet"),
    ("tiny-bitnet-f16", {"tensors": {"output.weight": (WeightFormat.F16, (256, 512),
                                                        np.zeros((512, 256), "<f2"))}},
     "'output.weight' is not expected in arch bitnet"),
    ("tiny-b158-i2_s", {"tensors": {"blk.0.attn_norm.weight": f32(*[1.0] * 128)}},
     "'blk.0.attn_norm.weight' has shape \\[128\\], expected \\[256\\]"),
    ("tiny-b158-i2_s", {"tensors": {"blk.0.attn_norm.weight": f32(*[np.nan] * 256)}},
     "NaN"),
    ("tiny-b158-i2_s", {"metadata": {"bitnet-b1.58.vocab_size": 500}},
     "'token_embd.weight' has shape \\[256, 512\\], expected \\[256, 500\\]"),
    ("tiny-b158-i2_s", {"metadata": {"bitnet-b1.58.feed_forward_length": 512}},
     "'blk.0.ffn_gate.weight' has shape \\[256, 768\\], expected \\[256, 512\\]"),
    ("tiny-b158-f16", {"tensors": {"blk.0.attn_norm.weight": (
        WeightFormat.Q8_0, (256,), np.zeros(8 * 34, np.uint8))}},
     "norms must be f32, f16 or bf16"),
])
def test_structural_errors_name_the_tensor(tmp_path: Path, fixture: str, edits: dict[str, Any],
                                           match: str) -> None:
    path = edited(tmp_path, fixture, **edits)
    with pytest.raises(ModelFormatError, match=match):
        load(path)


def test_ternary_embedding_is_rejected(tmp_path: Path) -> None:
    with open_gguf(MODELS_DIR / "tiny-bitnet-tq2_0.gguf") as f:
        q = np.asarray(f.tensor_bytes("blk.0.ffn_gate.weight"))  # TQ2_0 [768, 256]
    tq2 = q[:512]  # 512 rows of 256: the embedding's shape
    path = edited(tmp_path, "tiny-bitnet-tq2_0",
                  tensors={"token_embd.weight": (WeightFormat.TQ2_0, (256, 512), tq2)})
    with pytest.raises(ModelFormatError, match="'token_embd.weight' is tq2_0.*float format"):
        load(path)


def test_unsupported_ggml_type_in_a_weight(tmp_path: Path) -> None:
    # a Q4_K tensor can be read (format None) but not run; the writer only emits our formats,
    # so patch the type id in a copy of a fixture
    src = MODELS_DIR / "tiny-b158-f16.gguf"
    raw = bytearray(src.read_bytes())
    with open_gguf(src) as f:
        info = f.tensors["blk.0.attn_norm.weight"]
    # the tensor-info type field sits right before the u64 offset; find it by the name
    name = b"blk.0.attn_norm.weight"
    at = raw.index(name) + len(name) + 4 + 8  # n_dims (1) and one dim
    assert int.from_bytes(raw[at:at + 4], "little") == 0  # F32
    raw[at:at + 4] = (12).to_bytes(4, "little")  # Q4_K: 144 bytes per 256 -> fits in 1024
    path = tmp_path / "q4k.gguf"
    path.write_bytes(bytes(raw))
    assert info.nbytes == 1024
    with pytest.raises(ModelFormatError, match="'blk.0.attn_norm.weight' is q4_k, a format"):
        load(path)


def test_ternarize_needs_k_multiple_of_128(tmp_path: Path) -> None:
    # a float weight whose row length is not a multiple of 128 cannot become I2_S
    path = edited(tmp_path, "tiny-b158-f16", metadata={
        "bitnet-b1.58.feed_forward_length": 192,
    }, tensors={
        "blk.0.ffn_gate.weight": (WeightFormat.F16, (256, 192), np.zeros((192, 256), "<f2")),
        "blk.0.ffn_up.weight": (WeightFormat.F16, (256, 192), np.zeros((192, 256), "<f2")),
        "blk.0.ffn_down.weight": (WeightFormat.F16, (192, 256), np.zeros((256, 192), "<f2")),
        "blk.0.ffn_sub_norm.weight": f32(*[1.0] * 192),
    })
    with pytest.raises(ModelFormatError, match="'blk.0.ffn_down.weight': cannot ternarize"):
        load(path, ternarize=True)


def test_i2s_code_3_and_bad_scale_are_corrupt(tmp_path: Path) -> None:
    with open_gguf(MODELS_DIR / "tiny-b158-i2_s.gguf") as f:
        good = np.array(f.tensor_bytes("blk.1.ffn_up.weight"))  # I2_S [768, 256]
    bad_code = good.copy()
    bad_code[100] |= 0b00110000  # one field of byte 100 becomes 3
    path = edited(tmp_path, "tiny-b158-i2_s", tensors={
        "blk.1.ffn_up.weight": (WeightFormat.I2_S, (256, 768), bad_code)})
    with pytest.raises(ModelFormatError, match="'blk.1.ffn_up.weight': I2_S code 3"):
        load(path)
    bad_scale = good.copy()
    bad_scale[256 * 768 // 4:][:4] = np.array([np.inf], "<f4").view(np.uint8)
    path = edited(tmp_path, "tiny-b158-i2_s", tensors={
        "blk.1.ffn_up.weight": (WeightFormat.I2_S, (256, 768), bad_scale)})
    with pytest.raises(ModelFormatError, match="'blk.1.ffn_up.weight': I2_S scale is inf"):
        load(path)
