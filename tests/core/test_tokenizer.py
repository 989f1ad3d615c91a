"""bitnet.core.tokenizer: llama.cpp parity on the fixture vocabularies ("llama"/SentencePiece),
a small trained byte-level BPE ("gpt2"), streaming decode, and clear errors for bad metadata."""

from __future__ import annotations

import json
from functools import cache, lru_cache

import gguf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.core.errors import ModelFormatError
from bitnet.core.tokenizer import Tokenizer, TokenType
from tests.core.fixtures import manifest, model_path

# ---------------------------------------------------------------------------------------------
# helpers


@cache
def fixture_metadata(shape: str) -> dict:
    """The tokenizer keys of a fixture F16 file as plain Python values."""
    path = model_path(f"{shape}-bitnet-f16")
    if not path.is_file():
        pytest.skip(f"fixture model {path} not found")
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


@cache
def fixture_tokenizer(shape: str) -> Tokenizer:
    return Tokenizer.from_metadata(fixture_metadata(shape))


def llama_cpp_spm(text: str, tokens: list[str], scores: list[float]) -> list[int]:
    """An independent statement of llama.cpp's SPM tokenizer (llm_tokenizer_spm), slow and plain:
    prefix one space, spaces -> U+2581, start from single characters, repeatedly merge the
    adjacent pair whose concatenation is *any* vocabulary entry with the highest score (ties:
    leftmost), then emit entries, or <0xNN> byte tokens for text that is no entry."""
    vocab = {t: i for i, t in enumerate(tokens)}
    symbols = list((" " + text).replace(" ", "\u2581"))
    while True:
        best = None
        for i in range(len(symbols) - 1):
            token_id = vocab.get(symbols[i] + symbols[i + 1])
            if token_id is not None and (best is None or scores[token_id] > best[0]):
                best = (scores[token_id], i)
        if best is None:
            break
        i = best[1]
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    ids = []
    for symbol in symbols:
        if symbol in vocab:
            ids.append(vocab[symbol])
        else:
            ids.extend(vocab[f"<0x{b:02X}>"] for b in symbol.encode())
    return ids


def spm_metadata(pieces: list[tuple[str, float, int]], **extra) -> dict:
    """A small "llama" vocabulary: <unk> <s> </s>, the 256 byte tokens, then ``pieces``."""
    head = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    head += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    rows = head + pieces
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [r[0] for r in rows],
        "tokenizer.ggml.scores": [r[1] for r in rows],
        "tokenizer.ggml.token_type": [r[2] for r in rows],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }
    meta.update(extra)
    return meta


# ---------------------------------------------------------------------------------------------
# "llama" vocabularies: the fixtures


@pytest.mark.parametrize("shape", ["tiny", "mid"])
def test_fixture_tokenization_matches_llama_cpp(shape: str) -> None:
    tok = fixture_tokenizer(shape)
    cases = manifest()["tokenizer"][shape]["ids"]
    assert len(cases) == 8
    for case in cases:
        assert tok.encode(case["text"]) == case["ids"], case["text"]


@pytest.mark.parametrize("shape", ["tiny", "mid"])
def test_fixture_round_trip_and_properties(shape: str) -> None:
    tok = fixture_tokenizer(shape)
    assert tok.n_vocab == len(fixture_metadata(shape)["tokenizer.ggml.tokens"])
    assert (tok.bos_id, tok.eos_id, tok.eot_id) == (1, 2, None)
    assert tok.is_eog(2) and not tok.is_eog(1) and not tok.is_eog(328)
    for case in manifest()["tokenizer"][shape]["ids"]:
        assert tok.decode(case["ids"]) == case["text"]
    assert tok.encode("Hello", add_bos=False)[0] != 1
    assert tok.encode("", add_bos=True) == [1]
    assert tok.encode("", add_bos=False) == []
    assert tok.encode("Hello", add_eos=True)[-1] == 2
    assert tok.token_to_piece(1) == b"<s>"
    assert tok.token_to_piece(1, special=False) == b""
    assert tok.token_to_piece(3 + 0x41) == b"A"  # byte token <0x41>
    assert tok.decode([1, 2], skip_special=False) == "<s></s>"


@pytest.mark.parametrize("shape", ["tiny", "mid"])
def test_every_fixture_file_through_our_reader(shape: str) -> None:
    # bitnet's own GGUF reader also opens the I2_S files gguf-py rejects
    from bitnet.core.gguf import open_gguf

    section = manifest()["tokenizer"][shape]
    for produced_by in section["produced_by"]:
        gguf_file = open_gguf(model_path(produced_by.rsplit(".", 1)[0]))
        try:
            tok = Tokenizer.from_metadata(gguf_file.metadata)
        finally:
            gguf_file.close()
        for case in section["ids"]:
            assert tok.encode(case["text"]) == case["ids"], (produced_by, case["text"])


def test_spm_without_space_prefix() -> None:
    meta = spm_metadata([("\u2581", -20.0, 1), ("a", -1.0, 1), ("\u2581a", -0.5, 1)],
                        **{"tokenizer.ggml.add_space_prefix": False})
    tok = Tokenizer.from_metadata(meta)
    a = meta["tokenizer.ggml.tokens"].index("a")
    space_a = meta["tokenizer.ggml.tokens"].index("\u2581a")
    assert tok.encode("a a", add_bos=False) == [a, space_a]
    assert tok.decode([space_a]) == " a"  # no prefix was added, so none is removed


_ALPHABET = "abcdefghijklmnoprstuvwxyzTHEIC.,;'!?0123456789éèà中🙂\t\n  "


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40))
def test_sentencepiece_agrees_with_llama_cpp_spm(text: str) -> None:
    meta = fixture_metadata("mid")
    expected = [1] + llama_cpp_spm(text, meta["tokenizer.ggml.tokens"],
                                   meta["tokenizer.ggml.scores"]) if text else [1]
    assert fixture_tokenizer("mid").encode(text) == expected


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581"),
               max_size=30))
def test_spm_round_trip_any_text(text: str) -> None:
    tok = fixture_tokenizer("tiny")
    assert tok.decode(tok.encode(text)) == text


def test_spm_merges_into_control_text_like_llama_cpp() -> None:
    # llama.cpp merges by *any* vocabulary text, so "<s>" typed as plain text becomes the
    # control token once "<s" is a piece; with parse_special it is split out before merging
    meta = spm_metadata([("<", -10.0, 1), ("s", -11.0, 1), (">", -12.0, 1), ("<s", -1.0, 1),
                         ("\u2581", -20.0, 1), ("\u2581a", -2.0, 1), ("a", -13.0, 1)])
    tok = Tokenizer.from_metadata(meta)
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta["tokenizer.ggml.scores"]
    assert tok.encode("a<s>", add_bos=False) == llama_cpp_spm("a<s>", tokens, scores)
    assert tok.encode("a<s>", add_bos=False)[-1] == 1
    # parse_special: "<s>" is the BOS id and the fragment after it gets its own prefix space
    assert tok.encode("a<s>a", add_bos=False, parse_special=True) == [
        tokens.index("\u2581a"), 1, tokens.index("\u2581a")]


def test_spm_user_defined_tokens_always_split() -> None:
    meta = spm_metadata([("\u2581", -20.0, 1), ("x", -13.0, 1), ("<tool>", 0.0, 4)])
    tok = Tokenizer.from_metadata(meta)
    tool = meta["tokenizer.ggml.tokens"].index("<tool>")
    ids = tok.encode("x<tool>x", add_bos=False)
    assert tool in ids
    assert tok.decode(ids) == "x<tool> x"  # llama.cpp's space prefix after a special token


def test_spm_missing_byte_piece_is_an_error() -> None:
    meta = spm_metadata([("\u2581", -20.0, 1), ("a", -1.0, 1)])
    keep = [i for i, t in enumerate(meta["tokenizer.ggml.tokens"]) if t != "<0xE4>"]
    for key in ("tokens", "scores", "token_type"):
        values = meta[f"tokenizer.ggml.{key}"]
        meta[f"tokenizer.ggml.{key}"] = [values[i] for i in keep]
    tok = Tokenizer.from_metadata(meta)
    assert tok.decode(tok.encode("a")) == "a"
    with pytest.raises(ValueError, match="byte token"):
        tok.encode("中")  # E4 B8 AD


# ---------------------------------------------------------------------------------------------
# streaming


def test_stream_decoder_holds_split_characters() -> None:
    tok = fixture_tokenizer("tiny")
    ids = tok.encode("emoji \U0001f642 ok", add_bos=False)
    stream = tok.stream_decoder()
    out = [stream.push(i) for i in ids]
    assert "".join(out) + stream.flush() == "emoji \U0001f642 ok"
    assert "\ufffd" not in "".join(out)
    emoji_bytes = [i for i in ids if tok.token_type(i) == TokenType.BYTE]
    assert len(emoji_bytes) == 4
    # the 4 byte tokens of the emoji give nothing until the last one completes it
    stream = tok.stream_decoder()
    assert [stream.push(i) for i in emoji_bytes] == ["", "", "", "\U0001f642"]


def test_stream_decoder_leading_space_and_flush() -> None:
    tok = fixture_tokenizer("tiny")
    ids = tok.encode("Hello world")
    stream = tok.stream_decoder()
    assert "".join(stream.push(i) for i in ids) == "Hello world"
    stream = tok.stream_decoder(lstrip=False)
    assert "".join(stream.push(i) for i in ids) == " Hello world"
    stream = tok.stream_decoder()
    assert stream.push(3 + 0xE4) == ""  # first byte of a 3-byte character
    assert stream.flush() == "\ufffd"


# ---------------------------------------------------------------------------------------------
# "gpt2" vocabularies: a byte-level BPE trained here

_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's 12345 tokens, isn't it?",
    "Hello world! Hello there, world... and hello again.",
    "Ternary weights: -1, 0 and +1; 1.58 bits per weight.",
    "   indented line\n\tand a tab\nnew lines\n\n",
    "Café crème brûlée, déjà vu",
]
_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


@lru_cache(maxsize=1)
def trained_bpe() -> tuple[object, dict]:
    """A ByteLevel BPE trained with ``tokenizers`` and its GGUF-style metadata."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(_SENTENCES * 3, trainer)
    vocab = hf.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(hf.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if t in _SPECIALS else 1 for t in tokens],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": vocab["<|begin_of_text|>"],
        "tokenizer.ggml.eos_token_id": vocab["<|end_of_text|>"],
        "tokenizer.ggml.add_bos_token": True,
    }
    return hf, meta


def bpe_tokenizer(**changes) -> Tokenizer:
    meta = dict(trained_bpe()[1])
    pretokenizer = changes.pop("pretokenizer", None)
    for key, value in changes.items():
        key = f"tokenizer.ggml.{key}"
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    return Tokenizer.from_metadata(meta, pretokenizer=pretokenizer)


_BPE_TEXTS = _SENTENCES + ["", " ", "  two  spaces  ", "x ...y", "I'M 12345678", "中文 🙂👍\r\n"]


def test_bpe_gpt2_regex_matches_hugging_face() -> None:
    hf, _ = trained_bpe()
    tok = bpe_tokenizer(pre="gpt-2")
    for text in _BPE_TEXTS:
        ids = tok.encode(text, add_bos=False)
        assert ids == hf.encode(text).ids, text
        assert tok.decode(ids) == hf.decode(ids) == text  # our byte table vs tokenizers'


@pytest.mark.parametrize("pre", ["default", "gpt-2", "llama-bpe"])
def test_bpe_round_trip(pre: str) -> None:
    tok = bpe_tokenizer(pre=pre)
    for text in _BPE_TEXTS:
        assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_bpe_round_trip_any_text(text: str) -> None:
    tok = bpe_tokenizer()
    assert tok.decode(tok.encode(text)) == text


# The regex of LLaMA-3's tokenizer.json (and BitNet 2B-4T's), which llama.cpp rewrote without
# the (?i:...) group; both must split text identically.
_HF_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@lru_cache(maxsize=1)
def hf_llama3_bpe() -> object:
    from tokenizers import Regex, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    _, meta = trained_bpe()
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    hf = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_HF_LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return hf


@settings(max_examples=100, deadline=None)
@given(st.text(st.sampled_from(list("aZé中1 \t\r\n'sSmMlLdD.!?-+🙂")) | st.characters(
    blacklist_categories=("Cs",)), max_size=30))
def test_bpe_llama3_matches_hugging_face_llama3(text: str) -> None:
    tok = bpe_tokenizer(pretokenizer="llama3")
    assert tok.encode(text, add_bos=False) == hf_llama3_bpe().encode(text).ids


def test_bpe_regex_choice_changes_pre_tokenization() -> None:
    split = {pre: bpe_tokenizer(pre=pre)._encoder.pre_tokenize
             for pre in ("default", "gpt-2", "llama3")}
    # "default" isolates punctuation runs first, so the space before "..." stands alone
    assert split["gpt-2"]("x ...y") == ["x", "\u0120...", "y"]
    assert split["default"]("x ...y") == ["x", "\u0120", "...", "y"]
    # llama3: case-insensitive contractions and digits in groups of at most three
    assert split["gpt-2"]("I'M 12345") == ["I", "'", "M", "\u012012345"]
    assert split["llama3"]("I'M 12345") == ["I", "'M", "\u0120", "123", "45"]
    assert split["default"]("12345") == ["123", "45"]
    # a missing tokenizer.ggml.pre means llama.cpp's "default"; pretokenizer= overrides it
    assert bpe_tokenizer(pre=None).pretokenizer == "default"
    assert bpe_tokenizer(pre=None, pretokenizer="llama3").pretokenizer == "llama3"
    assert bpe_tokenizer(pre="llama-bpe").pretokenizer == "llama3"


def test_bpe_bos_eos_and_specials() -> None:
    _, meta = trained_bpe()
    vocab = {t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    bos = vocab["<|begin_of_text|>"]
    eot = vocab["<|eot_id|>"]
    tok = bpe_tokenizer()
    assert tok.encode("Hello")[0] == bos
    assert tok.encode("Hello", add_bos=False)[0] != bos
    assert bpe_tokenizer(add_bos_token=False).encode("Hello")[0] != bos
    # without add_bos_token llama.cpp adds BOS only for the LLaMA-3 pre-tokenizer
    assert bpe_tokenizer(add_bos_token=None, pre="llama-bpe").encode("Hi")[0] == bos
    assert bpe_tokenizer(add_bos_token=None, pre="gpt-2").encode("Hi")[0] != bos
    # control tokens are text unless parse_special; EOT found by its text
    assert tok.eot_id == eot
    assert tok.is_eog(eot) and tok.is_eog(tok.eos_id) and not tok.is_eog(bos)
    text = "User: hi<|eot_id|>Assistant: "
    ids = tok.encode(text, parse_special=True)
    assert ids.count(eot) == 1 and ids[0] == bos
    assert eot not in tok.encode(text)
    assert tok.decode(ids) == "User: hiAssistant: "
    assert tok.decode(ids, skip_special=False) == "<|begin_of_text|>" + text
    assert tok.token_to_piece(vocab["\u0120"]) == b" "


def test_bpe_stream_decoder_multibyte() -> None:
    tok = bpe_tokenizer()
    ids = tok.encode("\U0001f642", add_bos=False)
    assert len(ids) == 4  # untrained: one byte-level token per UTF-8 byte
    stream = tok.stream_decoder()
    assert [stream.push(i) for i in ids] == ["", "", "", "\U0001f642"]
    stream = tok.stream_decoder()
    assert stream.push(tok.encode(" a", add_bos=False)[0]) == " a"  # no SPM prefix to drop


# ---------------------------------------------------------------------------------------------
# bad metadata and bad ids


def _without(meta: dict, key: str) -> dict:
    return {k: v for k, v in meta.items() if k != key}


@pytest.mark.parametrize("change, key", [
    (lambda m: _without(m, "tokenizer.ggml.model"), "tokenizer.ggml.model"),
    (lambda m: {**m, "tokenizer.ggml.model": "bert"}, "tokenizer.ggml.model"),
    (lambda m: _without(m, "tokenizer.ggml.tokens"), "tokenizer.ggml.tokens"),
    (lambda m: {**m, "tokenizer.ggml.tokens": []}, "tokenizer.ggml.tokens"),
    (lambda m: {**m, "tokenizer.ggml.tokens": m["tokenizer.ggml.tokens"] + ["<s>"]},
     "tokenizer.ggml.tokens"),
    (lambda m: {**m, "tokenizer.ggml.scores": m["tokenizer.ggml.scores"][:-1]},
     "tokenizer.ggml.scores"),
    (lambda m: {**m, "tokenizer.ggml.token_type": m["tokenizer.ggml.token_type"][:-1]},
     "tokenizer.ggml.token_type"),
    (lambda m: {**m, "tokenizer.ggml.token_type": [9] * len(m["tokenizer.ggml.tokens"])},
     "tokenizer.ggml.token_type"),
    (lambda m: {**m, "tokenizer.ggml.bos_token_id": 10**6}, "tokenizer.ggml.bos_token_id"),
    (lambda m: {**m, "tokenizer.ggml.eos_token_id": -1}, "tokenizer.ggml.eos_token_id"),
    (lambda m: {**m, "tokenizer.ggml.add_bos_token": "yes"}, "tokenizer.ggml.add_bos_token"),
    # wrong-typed arrays and entries
    (lambda m: {**m, "tokenizer.ggml.tokens": "abc"}, "tokenizer.ggml.tokens"),
    (lambda m: {**m, "tokenizer.ggml.tokens": {"a": 1}}, "tokenizer.ggml.tokens"),
    (lambda m: {**m, "tokenizer.ggml.tokens": [*m["tokenizer.ggml.tokens"][:-1], 7]},
     r"tokenizer.ggml.tokens'\[259\] is not a string"),
    (lambda m: {**m, "tokenizer.ggml.scores": [*m["tokenizer.ggml.scores"][:-1], "0.5"]},
     r"tokenizer.ggml.scores'\[259\]"),
    (lambda m: {**m, "tokenizer.ggml.scores": 5}, "tokenizer.ggml.scores"),
    (lambda m: {**m, "tokenizer.ggml.token_type": [*m["tokenizer.ggml.token_type"][:-1], 1.0]},
     r"tokenizer.ggml.token_type'\[259\]"),
    (lambda m: {**m, "tokenizer.ggml.bos_token_id": True}, "tokenizer.ggml.bos_token_id"),
    (lambda m: {**m, "tokenizer.ggml.model": 3}, "tokenizer.ggml.model"),
    (lambda m: {**m, "tokenizer.chat_template": 3}, "tokenizer.chat_template"),
    # pieces SentencePiece refuses, named by index
    (lambda m: {**m, "tokenizer.ggml.tokens": [*m["tokenizer.ggml.tokens"][:-1], "a\0"]},
     r"tokenizer.ggml.tokens'\[259\] = 'a\\x00' holds a NUL"),
    (lambda m: {**m, "tokenizer.ggml.tokens": [*m["tokenizer.ggml.tokens"][:-1], "ab" * 4000]},
     r"tokenizer.ggml.tokens'\[259\] is 8000 bytes long"),
    (lambda m: {**m, "tokenizer.ggml.tokens": [*m["tokenizer.ggml.tokens"][:-1], "\udc80"]},
     r"tokenizer.ggml.tokens'\[259\] = '\\udc80' is not valid Unicode"),
])
def test_bad_spm_metadata_names_the_key(change, key: str) -> None:
    with pytest.raises(ModelFormatError, match=key.replace(".", r"\.")):
        Tokenizer.from_metadata(change(spm_metadata([("\u2581", -1.0, 1)])))


@pytest.mark.parametrize("change, key", [
    ({"merges": None}, "tokenizer.ggml.merges"),
    ({"merges": ["nospace"]}, "tokenizer.ggml.merges"),
    ({"merges": ["\u0120 zzzz"]}, "tokenizer.ggml.merges"),
    ({"pre": "qwen-something"}, "tokenizer.ggml.pre"),
    ({"bos_token_id": None}, "tokenizer.ggml.bos_token_id"),
    ({"merges": ["a zzz"]}, r"tokenizer.ggml.merges'\[0\] = 'a zzz': 'zzz' is not in"),
    ({"merges": [5]}, r"tokenizer.ggml.merges'\[0\] = 5 is not"),
    ({"merges": "a b"}, "tokenizer.ggml.merges' must be an array"),
    ({"pre": 3}, "tokenizer.ggml.pre' must be a string"),
    ({"model": "bert"}, "tokenizer.ggml.model' = 'bert' is not supported"),
])
def test_bad_bpe_metadata_names_the_key(change: dict, key: str) -> None:
    with pytest.raises(ModelFormatError, match=key.replace(".", r"\.")):
        bpe_tokenizer(**change)
    with pytest.raises(ValueError, match="pretokenizer"):
        bpe_tokenizer(pretokenizer="nonesuch")


def test_out_of_range_ids_raise() -> None:
    tok = fixture_tokenizer("tiny")
    for bad in (tok.n_vocab, -1, 10**9):
        with pytest.raises(ValueError, match="out of range"):
            tok.decode([1, bad])
        with pytest.raises(ValueError, match="out of range"):
            tok.token_to_piece(bad)
    with pytest.raises(TypeError):
        tok.decode([1.5])
    with pytest.raises(TypeError):
        tok.encode(b"bytes")  # type: ignore[arg-type]


def test_bpe_missing_byte_level_token_is_an_error_not_a_dropped_byte() -> None:
    _, meta = trained_bpe()
    tokens = list(meta["tokenizer.ggml.tokens"])
    tokens[tokens.index("\u00e4")] = "<unused-a-umlaut>"  # byte 0xE4's byte-level character
    merges = [m for m in meta["tokenizer.ggml.merges"] if "\u00e4" not in m]
    tok = bpe_tokenizer(tokens=tokens, merges=merges)
    assert tok.decode(tok.encode("plain text")) == "plain text"
    with pytest.raises(ModelFormatError, match="byte 0xE4"):
        tok.encode("\u4e2d")  # E4 B8 AD: tokenizers and llama.cpp would drop the E4


def test_text_with_a_lone_surrogate_is_a_value_error() -> None:
    for tok in (fixture_tokenizer("tiny"), bpe_tokenizer()):
        with pytest.raises(ValueError, match="not valid Unicode"):
            tok.encode("ab\ud800")


def test_a_merge_that_makes_tokenizers_panic_is_a_model_format_error(monkeypatch) -> None:
    # tokenizers 0.23 panics (pyo3 PanicException, a BaseException) on a merge whose result is
    # no token when a part is long: found by tests/fuzz/test_tokenizer_fuzz.py
    from bitnet.core import tokenizer as tokenizer_module

    _, meta = trained_bpe()
    long_token = "\u00e9" * 10
    tokens = [*meta["tokenizer.ggml.tokens"], long_token]
    merges = [*meta["tokenizer.ggml.merges"], f"{long_token} b"]
    at = len(merges) - 1
    with pytest.raises(ModelFormatError, match=rf"merges'\[{at}\] = .*is not in"):
        bpe_tokenizer(tokens=tokens, merges=merges, token_type=None)
    # and were the check missed, the panic itself becomes a ModelFormatError
    monkeypatch.setattr(tokenizer_module, "_check_merges", lambda merges, vocab: None)
    with pytest.raises(ModelFormatError, match="refused by tokenizers"):
        bpe_tokenizer(tokens=tokens, merges=merges, token_type=None)
