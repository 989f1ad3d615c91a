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
    ("bitnet-b1.58", "silu", "silu"),  # the file's key wins over the arch's gating
    ("llama", None, "silu"),
])
def test_activation_rules(arch: str, hidden: str | None, expected: str) -> None:
    md = with_arch(arch) if hidden is None else with_arch(arch, hidden_activation=hidden)
    config = ModelConfig.from_metadata(md)
    assert config.activation == expected
    assert (arch in config.activation_source) or ("hidden_activation" in
                                                  config.activation_source)


def test_bad_activation_names_the_key() -> None:
    with pytest.raises(ModelFormatError, match="bitnet.hidden_activation.*'gelu'"):
        ModelConfig.from_metadata(with_arch("bitnet", hidden_activation="gelu"))
    with pytest.raises(ValueError, match="activation must be one of.*'gelu'"):
        ModelConfig.from_metadata(b158(), activation="gelu")


def _one_bit_llm_vocab(n: int) -> dict[str, Any]:
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [f"t{i}" for i in range(n)]}


@pytest.mark.parametrize("changes, hint", [
    (_one_bit_llm_vocab(32002), "SentencePiece vocabulary has 32002 tokens"),
    ({"general.name": "bitnet_b1_58-large"}, "general.name 'bitnet_b1_58-large'"),
    ({"general.name": "1bitLLM bitnet b1.58 3B"}, "names a 1bitLLM model"),
])
def test_a_1bitllm_model_labelled_b158_gets_silu_and_says_why(changes: dict[str, Any],
                                                              hint: str) -> None:
    """bitnet.cpp's converter labels 1bitLLM models bitnet-b1.58 (docs/model-facts.md 4.1):
    SiLU, with a warning naming the evidence and the override; the caller's choice wins."""
    md = {**b158(), **changes}
    with pytest.warns(UserWarning, match="SiLU gating.*" + hint + ".*activation='relu2'"):
        config = ModelConfig.from_metadata(md)
    assert config.activation == "silu" and hint in config.activation_source
    forced = ModelConfig.from_metadata(md, activation="relu2")
    assert forced.activation == "relu2" and forced.activation_source == "chosen by the caller"


@pytest.mark.parametrize("changes", [
    _one_bit_llm_vocab(32000),  # a plain SentencePiece vocabulary is no evidence
    {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["t"] * 32002},
    {"general.name": "bitnet2b"},  # the official 2B-4T file
])
def test_other_b158_files_keep_relu2_without_a_warning(changes: dict[str, Any]) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ModelConfig.from_metadata({**b158(), **changes}).activation == "relu2"


def test_llama_block_kind_and_rope_order() -> None:
    llama = ModelConfig.from_metadata(with_arch("llama"))
    assert (llama.sub_norms, llama.rope_order, llama.block) == (False, "norm",
                                                                "llama (no sub-norms)")
    bitnet = ModelConfig.from_metadata(b158())
    assert (bitnet.sub_norms, bitnet.rope_order) == (True, "neox")


@pytest.mark.parametrize("d_model, heads, kv, head_dim", [
    (1536, 16, 16, 96),  # 1bitLLM large
    (3200, 32, 32, 100),  # 1bitLLM 3B
    (3072, 12, 4, 256),  # Falcon3 3B / 7B / 10B
    (2048, 8, 4, 256),  # Falcon3 1B
    (4096, 32, 8, 128),  # Llama3-8B-1.58
    (3072, 24, 24, 128),  # TriLM 3.9B
])
def test_family_head_shapes(d_model: int, heads: int, kv: int, head_dim: int) -> None:
    md = with_arch("llama", embedding_length=d_model, attention__head_count=heads,
                   attention__head_count_kv=kv, rope__dimension_count=head_dim)
    c = ModelConfig.from_metadata(md)
    assert (c.head_dim, c.q_dim, c.kv_dim, c.gqa_group) == (head_dim, d_model, kv * head_dim,
                                                            heads // kv)


def test_head_dim_from_key_length() -> None:
    """attention.key_length sets D even where it is not d_model / n_heads (llama.cpp's
    n_embd_head_k); rope.dimension_count and value_length must agree with it."""
    md = with_arch("llama", attention__key_length=128, attention__value_length=128,
                   rope__dimension_count=128)  # d_model 256, 4 heads of 128
    c = ModelConfig.from_metadata(md)
    assert (c.head_dim, c.q_dim, c.kv_dim) == (128, 512, 256)
    with pytest.raises(ModelFormatError, match="value_length.*decoupled"):
        ModelConfig.from_metadata(with_arch("llama", attention__key_length=128,
                                            attention__value_length=64,
                                            rope__dimension_count=128))


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
    with pytest.raises(ModelFormatError, match="'gemma'; bitnet runs.*llama"):
        ModelConfig.from_metadata(with_arch("gemma"))


def test_odd_head_dim_is_rejected() -> None:
    md = b158(embedding_length=252, attention__head_count=4, attention__head_count_kv=4,
              rope__dimension_count=None)
    with pytest.raises(ModelFormatError, match="head dim 63 is odd"):
        ModelConfig.from_metadata(md)


def test_linear_rope_scaling_of_one_is_accepted() -> None:
    md = b158(rope__scaling__type="linear", rope__scaling__factor=1.0)
    assert ModelConfig.from_metadata(md).rope_theta == 500000.0
