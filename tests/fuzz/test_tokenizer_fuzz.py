"""Fuzz the tokenizer metadata of every vocabulary kind.

Bases: a SentencePiece ("llama") vocabulary and byte-level BPE ("gpt2") vocabularies with each
supported pre-tokenizer, as a converter writes them (tests/core/test_tokenizer_families.py).
Hypothesis mutates tokens, scores, token types, merges, special ids, flags, the pre-tokenizer
name and the model name (including unknown ones), with values of the wrong type, lengths that
disagree, and texts the libraries refuse (NUL, lone surrogates, 8000-byte pieces, empties,
duplicates).

Property: ``Tokenizer.from_metadata`` either raises ModelFormatError, or gives a tokenizer that
encodes and decodes without raising anything but ModelFormatError (a text needing a byte token
the vocabulary lacks). Never another exception, never a hang: sizes are bounded and each example
is timed. Derandomized for CI; a longer random campaign:
    BITNET_FUZZ_EXAMPLES=5000 BITNET_FUZZ_RANDOM=1 pytest tests/fuzz/test_tokenizer_fuzz.py
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bitnet.core.errors import ModelFormatError
from bitnet.core.pretokenizers import GGML_PRE_NAMES
from bitnet.core.tokenizer import Tokenizer
from tests.core.test_tokenizer_families import trained, trained_spm

FUZZ = settings(derandomize=os.environ.get("BITNET_FUZZ_RANDOM") != "1", deadline=None,
                database=None, max_examples=int(os.environ.get("BITNET_FUZZ_EXAMPLES", "200")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SECONDS_PER_EXAMPLE = 10.0  # a hang shows as a failure, not a stuck CI job

K = "tokenizer.ggml."
# texts the libraries refuse or special-case, as tokens and as input
_WEIRD = ["", "\0", "a\0b", "\ud800", "x" * 8000, "é" * 4000, " ", "\u2581", "<0x41>",
          "<0xZZ>", "<s>", "<|eot_id|>", "[EMPTY_3]", "<bitnet:no-piece>", "Ġ", "Ġ Ġ", "a b c"]
WEIRD_TEXT = st.sampled_from(_WEIRD)
TOKEN_TEXT = WEIRD_TEXT | st.text(max_size=12)
BASES = ["spm", "llama-bpe", "falcon3", "gpt-2"]


def base(name: str) -> dict[str, Any]:
    meta = trained_spm()[1] if name == "spm" else trained(name)[1]
    return copy.deepcopy(meta)



ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**64), st.floats(allow_nan=True),
    st.text(max_size=8), st.binary(max_size=8), st.lists(st.integers(-3, 300), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
SCORE = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                  st.booleans(), st.text(max_size=4), st.none())
TYPE = st.one_of(st.integers(-3, 10), st.sampled_from([2**31, 2**32 + 1]), st.booleans(),
                 st.floats(0, 7), st.text(max_size=2), st.none())
ID_KEYS = ["bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id",
           "eot_token_id", "eom_token_id"]
FLAG_KEYS = ["add_bos_token", "add_eos_token", "add_space_prefix"]


@st.composite
def mutation(draw: st.DrawFn, meta: dict[str, Any]) -> None:
    """Apply one random edit to ``meta`` in place."""
    n = len(meta[K + "tokens"])
    index = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from([
        "token", "token_dup", "token_del", "token_add", "tokens_value", "score", "scores_len",
        "scores_value", "type", "types_len", "types_value", "merge", "merge_del", "merges_value",
        "special_id", "flag", "pre", "model", "template", "drop_key"]))
    tokens = meta[K + "tokens"]
    if kind == "token":
        tokens[index] = draw(TOKEN_TEXT)
    elif kind == "token_dup":
        tokens[index] = tokens[draw(st.integers(0, n - 1))]
    elif kind == "token_del":
        del tokens[index]  # every per-token array is now one too long
    elif kind == "token_add":
        tokens.insert(index, draw(TOKEN_TEXT))
    elif kind == "tokens_value":
        meta[K + "tokens"] = draw(ANY_VALUE | st.lists(ANY_VALUE, max_size=3))
    elif kind in ("score", "type", "scores_len", "types_len"):
        key = K + ("scores" if kind.startswith("score") else "token_type")
        values = meta.get(key)
        if not isinstance(values, list) or not values:
            return
        if kind in ("score", "type"):
            values[min(index, len(values) - 1)] = draw(SCORE if kind == "score" else TYPE)
        else:
            meta[key] = values[:draw(st.integers(0, len(values)))] + [1] * draw(st.integers(0, 2))
    elif kind in ("scores_value", "types_value"):
        meta[K + ("scores" if kind == "scores_value" else "token_type")] = draw(ANY_VALUE)
    elif kind in ("merge", "merge_del") and isinstance(meta.get(K + "merges"), list) \
            and meta[K + "merges"]:
        merges = meta[K + "merges"]
        at = draw(st.integers(0, len(merges) - 1))
        if kind == "merge_del":
            del merges[at]
        else:
            merges[at] = draw(WEIRD_TEXT | st.text(max_size=6) | ANY_VALUE)
    elif kind == "merges_value":
        meta[K + "merges"] = draw(ANY_VALUE | st.lists(st.text(max_size=5), max_size=3))
    elif kind == "special_id":
        meta[K + draw(st.sampled_from(ID_KEYS))] = draw(
            st.integers(-3, n + 3) | st.sampled_from([2**32, 2**63]) | ANY_VALUE)
    elif kind == "flag":
        meta[K + draw(st.sampled_from(FLAG_KEYS))] = draw(ANY_VALUE)
    elif kind == "pre":
        meta[K + "pre"] = draw(st.sampled_from(sorted(GGML_PRE_NAMES) + ["qwen2", "", "falcon"])
                               | ANY_VALUE)
    elif kind == "model":
        meta[K + "model"] = draw(st.sampled_from(["llama", "gpt2", "bert", "t5", "rwkv", "ugm",
                                                  "none", "no_vocab", ""]) | ANY_VALUE)
    elif kind == "template":
        meta["tokenizer.chat_template"] = draw(ANY_VALUE)
    elif kind == "drop_key":
        key = draw(st.sampled_from(sorted(meta)))
        del meta[key]


def exercise(meta: dict[str, Any], texts: list[str], ids: list[int], parse: bool) -> None:
    """The property: ModelFormatError, or a tokenizer that works."""
    start = time.monotonic()
    try:
        tok = Tokenizer.from_metadata(meta)
    except ModelFormatError as err:
        assert str(err).startswith("tokenizer metadata: "), err
        event("refused")
        return
    event(f"built {tok.model}")
    for text in texts:
        try:
            encoded = tok.encode(text, parse_special=parse)
        except ModelFormatError as err:
            assert "cannot tokenize" in str(err)
            continue
        assert all(0 <= i < tok.n_vocab for i in encoded)
        tok.decode(encoded, skip_special=not parse)
    known = [i % tok.n_vocab for i in ids]
    tok.decode(known, skip_special=False)
    stream = tok.stream_decoder()
    for i in known:
        stream.push(i)
    stream.flush()
    assert time.monotonic() - start < SECONDS_PER_EXAMPLE


TEXTS = st.lists(st.text(max_size=40) | st.sampled_from([t for t in _WEIRD if t != "\ud800"]),
                 min_size=1, max_size=3)


@FUZZ
@given(data=st.data(), which=st.sampled_from(BASES), texts=TEXTS,
       ids=st.lists(st.integers(0, 10**6), max_size=8), parse=st.booleans(),
       n_edits=st.integers(1, 4))
def test_mutated_tokenizer_metadata(data: st.DataObject, which: str, texts: list[str],
                                    ids: list[int], parse: bool, n_edits: int) -> None:
    meta = base(which)
    for _ in range(n_edits):
        if not isinstance(meta.get(K + "tokens"), list) or not meta[K + "tokens"]:
            break
        data.draw(mutation(meta))
    exercise(meta, texts, ids, parse)


@FUZZ
@given(which=st.sampled_from(BASES), texts=TEXTS, parse=st.booleans(),
       at=st.floats(0, 1, exclude_max=True), text=TOKEN_TEXT)
def test_one_strange_token(which: str, texts: list[str], parse: bool, at: float,
                           text: str) -> None:
    # the NUL-in-a-piece class of bug, in every vocabulary kind and position
    meta = base(which)
    tokens = meta[K + "tokens"]
    tokens[int(at * len(tokens))] = text
    exercise(meta, texts, [], parse)


def test_known_refusals_name_the_token() -> None:
    cases = {"spm": ["a\0b", "x" * 8000, "\ud800"], "gpt-2": ["\ud800"]}
    for which, texts in cases.items():
        for text in texts:
            meta = base(which)
            meta[K + "tokens"][300] = text
            try:
                Tokenizer.from_metadata(meta)
            except ModelFormatError as err:
                assert f"'{K}tokens'[300]" in str(err), err
            else:
                raise AssertionError(f"{which}: {text[:10]!r} was accepted")
