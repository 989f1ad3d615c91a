"""bitnet.core.config: ModelConfig from metadata, activation rules, and bad keys named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bitnet.core.config import ModelConfig
from bitnet.core.errors import ModelFormatError
from bitnet.core.gguf import open_gguf
from bitnet.testing.fixtures import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text()) if FIXTURES.exists() else {}
MODELS = sorted((FIXTURES / "models").glob("*.gguf"))


def b158(**changes: Any) -> dict[str, Any]:
    """Metadata of a small bitnet-b1.58 model, with keys changed (None deletes a key)."""
    md: dict[str, Any] = {
        "general.architecture": "bitnet-b1.58",
        "general.name": "t",
        "general.file_type": 40,
        "bitnet-b1.58.context_length": 256,
        "bitnet-b1.58.embedding_length": 256,
        "bitnet-b1.58.block_count": 2,
        "bitnet-b1.58.feed_forward_length": 768,
        "bitnet-b1.58.attention.head_count": 4,
        "bitnet-b1.58.attention.head_count_kv": 2,
        "bitnet-b1.58.rope.dimension_count": 64,
        "bitnet-b1.58.rope.freq_base": 500000.0,
        "bitnet-b1.58.attention.layer_norm_rms_epsilon": 1e-5,
        "bitnet-b1.58.vocab_size": 512,
    }
    for key, value in changes.items():
        key = key.replace("__", ".")
        full = key if key.startswith(("general.", "tokenizer.")) else (
            f"{md['general.architecture']}.{key}")
        if value is None:
            md.pop(full, None)
        else:
            md[full] = value
    return md


def with_arch(arch: str, **changes: Any) -> dict[str, Any]:
    md = {k.replace("bitnet-b1.58.", f"{arch}."): v for k, v in b158().items()}
    md["general.architecture"] = arch
    for key, value in changes.items():
        md[f"{arch}.{key.replace('__', '.')}"] = value
    return md


@pytest.mark.skipif(not MODELS, reason="fixture models not present")
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_fixture_configs_match_the_manifest(path: Path) -> None:
    with open_gguf(path) as f:
        config = ModelConfig.from_metadata(f.metadata)
    entry = MANIFEST["models"][path.stem]
    shape = MANIFEST["model_shapes"][entry["shape"]]
    assert config.arch == entry["architecture"]
    assert config.rope_theta == entry["rope_freq_base"]
    assert config.file_type == entry["general_file_type"]
    assert config.d_model == (256 if entry["shape"] == "tiny" else 512), shape
    assert config.n_vocab == (512 if entry["shape"] == "tiny" else 1000)
    assert config.head_dim == 64 and config.n_ctx == 256
    assert config.activation == ("silu" if config.arch == "bitnet" else "relu2")
    assert config.q_dim == config.d_model and config.kv_dim == 2 * 64
    assert abs(config.rms_eps - 1e-5) < 1e-9


def test_derived_sizes() -> None:
    c = ModelConfig.from_metadata(b158())
    assert (c.head_dim, c.q_dim, c.kv_dim, c.gqa_group) == (64, 256, 128, 2)
    assert c.n_linear_params == 2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 768)
    with pytest.raises(AttributeError):
        c.d_model = 5  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("arch, hidden, expected", [
    ("bitnet", None, "silu"),
    ("bitnet", "relu2", "relu2"),
    ("bitnet", "silu", "silu"),
    ("bitnet-b1.58", None, "relu2"),
    ("bitnet-25", None, "relu2"),
    ("bitnet-25", "relu2", "relu2"),
])
def test_activation_rules(arch: str, hidden: str | None, expected: str) -> None:
    md = with_arch(arch) if hidden is None else with_arch(arch, hidden_activation=hidden)
    assert ModelConfig.from_metadata(md).activation == expected


def test_bad_activation_names_the_key() -> None:
    with pytest.raises(ModelFormatError, match="bitnet.hidden_activation.*'gelu'"):
        ModelConfig.from_metadata(with_arch("bitnet", hidden_activation="gelu"))
    with pytest.raises(ModelFormatError, match="bitnet-b1.58.hidden_activation.*relu2"):
        ModelConfig.from_metadata(b158(hidden_activation="silu"))


def test_defaults_and_vocab_from_the_token_list() -> None:
    md = b158(vocab_size=None, attention__head_count_kv=None, rope__freq_base=None)
    md["tokenizer.ggml.tokens"] = ["a"] * 300
    c = ModelConfig.from_metadata(md)
    assert c.n_vocab == 300 and c.n_kv_heads == c.n_heads == 4 and c.rope_theta == 10000.0


@pytest.mark.parametrize("changes, match", [
    ({"general.architecture": None}, "'general.architecture' is missing"),
    ({"embedding_length": None}, "'bitnet-b1.58.embedding_length' is missing"),
    ({"attention__layer_norm_rms_epsilon": None}, "layer_norm_rms_epsilon' is missing"),
    ({"block_count": 0}, "block_count.*outside"),
    ({"block_count": -3}, "block_count.*outside"),
    ({"block_count": True}, "block_count.*expected an integer"),
    ({"block_count": "2"}, "block_count.*expected an integer"),
    ({"embedding_length": 1 << 40}, "embedding_length.*outside"),
    ({"context_length": 0}, "context_length"),
    ({"feed_forward_length": 10**9}, "feed_forward_length"),
    ({"attention__head_count": 3}, "head_count'.*does not divide"),
    ({"attention__head_count_kv": 3}, "head_count_kv'.*does not divide"),
    ({"attention__head_count_kv": 8}, "head_count_kv.*outside"),
    ({"rope__freq_base": float("nan")}, "freq_base"),
    ({"rope__freq_base": -1.0}, "freq_base"),
    ({"attention__layer_norm_rms_epsilon": 5.0}, "epsilon"),
    ({"rope__dimension_count": 32}, "dimension_count.*partial RoPE"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"vocab_size": None}, "vocabulary size unknown"),
    ({"rope__scaling__type": "yarn"}, "scaling.*'yarn'"),
    ({"general.file_type": "x"}, "general.file_type"),
])
def test_bad_metadata_names_the_key(changes: dict[str, Any], match: str) -> None:
    if "general.architecture" in changes:
        md = b158()
        del md["general.architecture"]
    else:
        md = b158(**changes)
    with pytest.raises(ModelFormatError, match=match):
        ModelConfig.from_metadata(md)


def test_unknown_arch() -> None:
    with pytest.raises(ModelFormatError, match="'llama'; bitnet runs"):
        ModelConfig.from_metadata(with_arch("llama"))


def test_odd_head_dim_is_rejected() -> None:
    md = b158(embedding_length=252, attention__head_count=4, attention__head_count_kv=4,
              rope__dimension_count=None)
    with pytest.raises(ModelFormatError, match="head dim 63 is odd"):
        ModelConfig.from_metadata(md)


def test_linear_rope_scaling_of_one_is_accepted() -> None:
    md = b158(rope__scaling__type="linear", rope__scaling__factor=1.0)
    assert ModelConfig.from_metadata(md).rope_theta == 500000.0
