"""bitnet.convert.gguf_writer: every format round-trips; synthetic models are loadable and
format-independent; gguf-py reads what we write."""

from __future__ import annotations

import warnings
from pathlib import Path

import gguf as gguf_py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.core.config import ModelConfig
from bitnet.core.gguf import open_gguf
from bitnet.convert.gguf_writer import GGUFModelWriter, encode_ternary, rewrite_gguf
from bitnet.testing.synthetic import SHAPES, llama_vocab, make_synthetic_model, shape_kwargs
from bitnet.core.loader import load_weights
from bitnet.formats import dequantize
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import WeightFormat

EXACT = [WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0, WeightFormat.F16,
         WeightFormat.F32, WeightFormat.BF16]
ALL = EXACT + [WeightFormat.Q8_0, WeightFormat.Q6_K]
TINY = shape_kwargs("tiny")


def load(path: Path):  # type: ignore[no-untyped-def]
    f = open_gguf(path)
    config = ModelConfig.from_metadata(f.metadata)
    return f, config, load_weights(f, config)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(fmt=st.sampled_from(ALL), rows=st.integers(1, 6), blocks=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_every_format_round_trips_through_a_file(tmp_path_factory: pytest.TempPathFactory,
                                                  fmt: WeightFormat, rows: int, blocks: int,
                                                  seed: int) -> None:
    cols = 256 * blocks
    rng = np.random.default_rng(seed)
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    scale = 0.046875  # exact in f16 and bf16
    path = tmp_path_factory.mktemp("rt") / "t.gguf"
    writer = GGUFModelWriter(path, "bitnet-b1.58")
    writer.add_metadata("general.name", "rt")
    writer.add_tensor("w", fmt, (cols, rows), encode_ternary(fmt, values, scale))
    writer.write()
    with open_gguf(path) as f:
        info = f.tensors["w"]
        assert (info.format, info.shape) == (fmt, (cols, rows))
        got = dequantize(WeightTensor("w", fmt, rows, cols, f.tensor_bytes("w")))
    tolerance = 0.0 if fmt in EXACT else scale * 0.01
    assert np.max(np.abs(got - values * np.float32(scale))) <= tolerance


@pytest.mark.parametrize("fmt", [WeightFormat.F16, WeightFormat.TQ2_0, WeightFormat.Q6_K])
def test_gguf_py_reads_what_we_write(tmp_path: Path, fmt: WeightFormat) -> None:
    path = make_synthetic_model(tmp_path / "m.gguf", **TINY, arch="bitnet", weight_format=fmt,
                                embed_format=WeightFormat.Q6_K)
    reader = gguf_py.GGUFReader(path)
    with open_gguf(path) as f:
        assert {k: v.contents() for k, v in reader.fields.items()
                if not k.startswith("GGUF.")} == f.metadata
        for t in reader.tensors:
            assert f.tensors[t.name].offset == t.data_offset
            assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1),
                                  f.tensor_bytes(t.name).reshape(-1))


def test_synthetic_models_hold_the_same_weights_in_every_exact_format(tmp_path: Path) -> None:
    reference = None
    for fmt in EXACT:
        path = make_synthetic_model(tmp_path / f"{fmt.value}.gguf", **TINY, weight_format=fmt,
                                    seed=7)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ternary-valued: the loader must not warn
            _, config, w = load(path)
        assert config.file_type == {"i2_s": 40, "tq2_0": 37, "tq1_0": 36, "f16": 1, "f32": 0,
                                    "bf16": 32}[fmt.value]
        values = [dequantize(t) for layer in w.layers for t in layer.linears()]
        norms = [n for layer in w.layers for n in layer.norms()]
        if reference is None:
            reference = (values, norms, dequantize(w.token_embd))
            continue
        assert all(np.array_equal(a, b) for a, b in zip(reference[0], values)), fmt
        assert all(np.array_equal(a, b) for a, b in zip(reference[1], norms))
        assert np.array_equal(reference[2], dequantize(w.token_embd))


def test_synthetic_model_config_and_vocabulary(tmp_path: Path) -> None:
    path = make_synthetic_model(tmp_path / "m.gguf", d_model=256, n_layers=1, n_heads=2,
                                n_kv_heads=1, d_ff=512, n_vocab=20000, n_ctx=64, seed=3,
                                rope_theta=1234.0)
    f, config, w = load(path)
    assert (config.d_model, config.n_layers, config.n_heads, config.n_kv_heads) == (256, 1, 2, 1)
    assert (config.d_ff, config.n_vocab, config.n_ctx, config.head_dim) == (512, 20000, 64, 128)
    assert config.rope_theta == 1234.0 and config.activation == "relu2"
    assert w.token_embd.format is WeightFormat.F16 and w.output is None
    tokens = f.metadata["tokenizer.ggml.tokens"]
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[3] == "<0x00>"
    assert tokens[258] == "<0xFF>" and len(set(tokens)) == len(tokens) == 20000
    assert f.metadata["tokenizer.ggml.model"] == "llama"
    assert f.metadata["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 6]
    vocab = set(tokens)
    for piece in tokens[259:]:  # every multi-char piece extends a shorter piece by one char
        assert len(piece) == 1 or piece[:-1] in vocab, piece
    # the embedding was streamed in several chunks; rows must all differ
    emb = dequantize(w.token_embd)
    assert emb.shape == (20000, 256) and not np.array_equal(emb[:8192], emb[8192:16384])


def test_untied_output_gpt2_vocab_and_extra_metadata(tmp_path: Path) -> None:
    vocab = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(512)],
        "tokenizer.ggml.token_type": [1] * 512,
        "tokenizer.ggml.merges": ["t 1", "t 2"],
        "tokenizer.ggml.bos_token_id": 5,
    }
    path = make_synthetic_model(tmp_path / "m.gguf", **TINY, vocab=vocab,
                                output_format=WeightFormat.Q8_0, arch="bitnet-25",
                                extra_metadata={"bitnet-25.hidden_activation": "relu2"})
    f, config, w = load(path)
    assert config.arch == "bitnet-25" and config.activation == "relu2"
    assert w.output is not None and w.output.format is WeightFormat.Q8_0
    assert f.metadata["tokenizer.ggml.merges"] == ["t 1", "t 2"]
    assert f.value_types["tokenizer.ggml.bos_token_id"][0] is gguf_py.GGUFValueType.UINT32
    assert f.value_types["tokenizer.ggml.token_type"] == (gguf_py.GGUFValueType.ARRAY,
                                                          gguf_py.GGUFValueType.INT32)


def test_seed_changes_the_weights(tmp_path: Path) -> None:
    a = make_synthetic_model(tmp_path / "a.gguf", **TINY, seed=1)
    b = make_synthetic_model(tmp_path / "b.gguf", **TINY, seed=2)
    c = make_synthetic_model(tmp_path / "c.gguf", **TINY, seed=1)
    name = "blk.1.ffn_down.weight"
    bytes_of = [open_gguf(p).tensor_bytes(name) for p in (a, b, c)]
    assert not np.array_equal(bytes_of[0], bytes_of[1])
    assert np.array_equal(bytes_of[0], bytes_of[2])


def test_rewrite_keeps_everything_it_is_not_told_to_change(tmp_path: Path) -> None:
    src = make_synthetic_model(tmp_path / "src.gguf", **TINY, weight_format=WeightFormat.I2_S)
    dst = rewrite_gguf(src, tmp_path / "dst.gguf", metadata={"tokenizer.ggml.pre": "default"},
                       drop_keys=["general.name"])
    a, b = open_gguf(src), open_gguf(dst)
    expected = {k: v for k, v in a.metadata.items() if k != "general.name"}
    assert b.metadata == {**expected, "tokenizer.ggml.pre": "default"}
    assert all(b.value_types[k] == a.value_types[k] for k in expected)
    for name in a.tensors:
        assert np.array_equal(a.tensor_bytes(name), b.tensor_bytes(name))


def test_writer_rejects_wrong_sizes_and_arguments(tmp_path: Path) -> None:
    writer = GGUFModelWriter(tmp_path / "x.gguf", "bitnet")
    with pytest.raises(ValueError, match="needs 96 bytes, got 64"):
        writer.add_tensor("w", WeightFormat.I2_S, (128, 2), np.zeros(64, np.uint8))
    with pytest.raises(ValueError, match="multiple of 256"):
        writer.add_tensor("w", WeightFormat.TQ2_0, (100, 2), np.zeros(64, np.uint8))
    with pytest.raises(ValueError, match="at least 259"):
        llama_vocab(100)
    with pytest.raises(ValueError, match="ties its lm_head"):
        make_synthetic_model(tmp_path / "y.gguf", **TINY, arch="bitnet",
                             output_format=WeightFormat.F16)
    with pytest.raises(ValueError, match="embed_format must be a float format"):
        make_synthetic_model(tmp_path / "y.gguf", **TINY, embed_format=WeightFormat.TQ2_0)


def test_shapes_presets() -> None:
    assert SHAPES["2b"] == (2560, 30, 20, 5, 6912, 128256, 4096)
    assert shape_kwargs("tiny")["d_model"] == 256
