"""Tokenizer files -> tokenizer.* metadata: bitnet's runtime Tokenizer built from the converted
metadata encodes text as the source tokenizer does (HF ``tokenizers`` on tokenizer.json,
``sentencepiece`` on tokenizer.model)."""

from __future__ import annotations

import json

import pytest

from bitnet.convert.errors import ConvertError
from bitnet.convert.vocab import vocab_metadata
from bitnet.core.tokenizer import Tokenizer
from tests.convert.checkpoints import SAMPLES, bpe_tokenizer, sentencepiece_tokenizer

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


def bpe_dir(tmp_path, style: str, bos: str | None = "<|begin_of_text|>", **config):
    n = bpe_tokenizer(tmp_path, style, 300, SPECIALS, bos, "<|end_of_text|>",
                      chat_template="{{ messages[0]['content'] }}")
    return tmp_path, n, dict(config)


def hf_ids(directory, text: str) -> list[int]:
    from tokenizers import Tokenizer as HFTokenizer

    return HFTokenizer.from_file(str(directory / "tokenizer.json")).encode(
        text, add_special_tokens=False).ids


@pytest.mark.parametrize("style,pre", [("llama3", "llama-bpe"), ("gpt2", "gpt-2")])
def test_byte_level_bpe_encodes_as_tokenizer_json(tmp_path, style, pre) -> None:
    directory, n, config = bpe_dir(tmp_path, style)
    meta = vocab_metadata(directory, config, n)
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == pre
    tok = Tokenizer.from_metadata(meta)
    for text in SAMPLES:
        assert tok.encode(text, add_bos=False) == hf_ids(directory, text), text


@pytest.mark.parametrize("peer,config,pre", [
    ("bitnet.cpp", {}, "falcon3"),
    ("llama.cpp", {}, "falcon3"),
    ("bitnet.cpp", {"is_bitnet_config": True}, "falcon_e"),  # onebitllms marks Falcon-E so
    ("llama.cpp", {"is_bitnet_config": True}, "falcon-h1"),  # upstream refuses falcon_e
])
def test_falcon_pre_tokenizers_are_named_as_the_peer_does(tmp_path, peer, config, pre) -> None:
    directory, n, config = bpe_dir(tmp_path, "falcon3", **config)
    assert vocab_metadata(directory, config, n, peer=peer)["tokenizer.ggml.pre"] == pre


@pytest.mark.parametrize("config", [{}, {"is_bitnet_config": True}])
def test_falcon_vocabularies_encode_as_tokenizer_json(tmp_path, config) -> None:
    directory, n, config = bpe_dir(tmp_path, "falcon3", **config)
    tok = Tokenizer.from_metadata(vocab_metadata(directory, config, n))
    for text in SAMPLES:
        assert tok.encode(text, add_bos=False) == hf_ids(directory, text), text


def test_special_tokens_template_and_bos(tmp_path) -> None:
    directory, n, config = bpe_dir(tmp_path, "llama3")
    meta = vocab_metadata(directory, config, n + 5)
    ids = {t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    assert meta["tokenizer.ggml.bos_token_id"] == ids["<|begin_of_text|>"]
    assert meta["tokenizer.ggml.eos_token_id"] == ids["<|end_of_text|>"]
    assert meta["tokenizer.ggml.eot_token_id"] == ids["<|eot_id|>"]
    assert meta["tokenizer.ggml.add_bos_token"] is True  # from the post-processor
    assert meta["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"
    types = meta["tokenizer.ggml.token_type"]
    assert types[ids["<|eot_id|>"]] == 3  # special added token: CONTROL
    # the model has 5 more rows than the tokenizer has tokens: padded as llama.cpp does
    assert meta["tokenizer.ggml.tokens"][-1] == f"[PAD{n + 4}]" and types[-1] == 5
    tok = Tokenizer.from_metadata(meta)
    assert tok.encode("Hi", add_bos=None)[0] == ids["<|begin_of_text|>"]


def test_no_bos_post_processor_means_no_bos(tmp_path) -> None:
    directory, n, config = bpe_dir(tmp_path, "gpt2", bos=None)
    assert vocab_metadata(directory, config, n)["tokenizer.ggml.add_bos_token"] is False


def test_sentencepiece_encodes_as_tokenizer_model(tmp_path) -> None:
    import sentencepiece as spm

    sentencepiece_tokenizer(tmp_path, 400, {"<pad>": 400})
    meta = vocab_metadata(tmp_path, {"bos_token_id": 1, "eos_token_id": 2}, 402)
    assert meta["tokenizer.ggml.model"] == "llama"
    tokens = meta["tokenizer.ggml.tokens"]
    assert tokens[400] == "<pad>" and tokens[401] == "[PAD401]"
    assert meta["tokenizer.ggml.pad_token_id"] == 400
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.add_bos_token"]
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    tok = Tokenizer.from_metadata(meta)
    for text in SAMPLES:
        assert tok.encode(text, add_bos=False) == sp.encode(text), text


def test_an_unknown_pre_tokenizer_is_named_and_can_be_overridden(tmp_path) -> None:
    directory, n, config = bpe_dir(tmp_path, "llama3")
    spec = json.loads((directory / "tokenizer.json").read_text())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+"
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ConvertError, match=r"pre-tokenizer .*--pre"):
        vocab_metadata(directory, config, n)
    assert vocab_metadata(directory, config, n, pre="llama-bpe")["tokenizer.ggml.pre"] == \
        "llama-bpe"


def test_a_tokenizer_larger_than_the_model_is_an_error(tmp_path) -> None:
    directory, n, config = bpe_dir(tmp_path, "gpt2")
    with pytest.raises(ConvertError, match=f"{n} tokens but the model's vocab_size is {n - 1}"):
        vocab_metadata(directory, config, n - 1)


def test_no_tokenizer_files_is_an_error(tmp_path) -> None:
    with pytest.raises(ConvertError, match="no tokenizer.model or tokenizer.json"):
        vocab_metadata(tmp_path, {}, 10)


def test_a_bpe_without_merges_is_an_error(tmp_path) -> None:
    directory, n, config = bpe_dir(tmp_path, "gpt2")
    spec = json.loads((directory / "tokenizer.json").read_text())
    spec["model"]["merges"] = []
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ConvertError, match="has no merges list"):
        vocab_metadata(directory, config, n)
