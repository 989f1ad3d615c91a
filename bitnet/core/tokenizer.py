"""Text <-> token ids for the vocabularies GGUF files carry, matching llama.cpp token for token.

Two vocabulary kinds, chosen by ``tokenizer.ggml.model``:

- ``"llama"``: SentencePiece BPE driven by piece scores (1bitLLM models, the test fixtures).
  Encoded by the ``sentencepiece`` library from a ModelProto built out of the metadata.
- ``"gpt2"``: byte-level BPE driven by merge ranks (LLaMA-3, BitNet b1.58 2B-4T). Encoded by the
  ``tokenizers`` library with llama.cpp's pre-tokenizer regexes chosen by ``tokenizer.ggml.pre``.

Around both sits llama.cpp's own logic, written out here: special tokens are split out of the
text first (user-defined ones always, control ones only with ``parse_special``), every raw text
fragment of a "llama" vocabulary gets one leading space, BOS/EOS are added per the file's flags,
and decoding renders pieces the way ``llama_token_to_piece`` does. Decoding is done from our own
piece table, not by the libraries, so bytes can be streamed.

Metadata is checked before the libraries see it, and whatever they still refuse is caught: any
bad, inconsistent or refused tokenizer metadata is a ModelFormatError naming the key and, for an
array, the entry (``'tokenizer.ggml.tokens'[300] = 'ab\\x00c' holds a NUL character, ...``).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import Any

from bitnet.core import pretokenizers
from bitnet.core.errors import ModelFormatError
from bitnet.core.pretokenizers import PreTokenizer

SPACE_MARK = "\u2581"  # SentencePiece's visible space "▁"


class TokenType(IntEnum):
    """``tokenizer.ggml.token_type`` values (llama.h ``llama_token_type``)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Texts llama.cpp treats as end-of-turn / end-of-generation whatever the metadata says.
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
              "<\uff5cend\u2581of\u2581sentence\uff5c>")
_EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
              "<|eom_id|>", "<EOT>")
_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")  # the only spelling llama.cpp looks up
_SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)


def _key(name: str) -> str:
    return f"tokenizer.ggml.{name}"


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the other 68 bytes
    are moved to code points 256.. in byte order, so every byte is one visible character."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


_BYTE_TO_UNICODE = _byte_to_unicode()
_UNICODE_TO_BYTE = {ch: b for b, ch in _BYTE_TO_UNICODE.items()}
# str.translate tables: alphabet character -> the byte as a latin-1 character, and -> deleted
_BYTE_LEVEL_TO_LATIN1 = {ord(ch): chr(b) for ch, b in _UNICODE_TO_BYTE.items()}
_NOT_BYTE_LEVEL = {ord(ch): None for ch in _UNICODE_TO_BYTE}


# ---------------------------------------------------------------------------------------------
# metadata checks: every problem is a ModelFormatError naming the key (and the token index)


def _bad(key: str, reason: str) -> ModelFormatError:
    """``reason`` follows the key: "is empty", "[12] = 'x' is ..." (an entry)."""
    sep = "" if reason.startswith("[") else " "
    return ModelFormatError(f"tokenizer metadata: {key!r}{sep}{reason}")


def _read_list(metadata: Mapping[str, Any], name: str, n: int | None,
               required: bool) -> list[Any] | None:
    key = _key(name)
    value = metadata.get(key)
    if value is None:
        if required:
            raise ModelFormatError(f"tokenizer metadata: missing key {key!r}")
        return None
    if (isinstance(value, (str, bytes, Mapping, set, frozenset))
            or not isinstance(value, Iterable)):
        raise _bad(key, f"must be an array, got {type(value).__name__}")
    items = list(value)
    if n is not None and len(items) != n:
        raise _bad(key, f"has {len(items)} entries but {_key('tokens')!r} has {n}")
    return items


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__")


def _read_id(metadata: Mapping[str, Any], name: str, n_vocab: int,
             default: int | None) -> int | None:
    key = _key(name)
    value = metadata.get(key, default)
    if value is None:
        return None
    if not _is_int(value):
        raise _bad(key, f"must be an integer, got {value!r}")
    token_id = value.__index__()
    if not 0 <= token_id < n_vocab:
        raise _bad(key, f"= {token_id} is out of range for a vocabulary of {n_vocab} tokens")
    return token_id


def _read_bool(metadata: Mapping[str, Any], key: str, default: bool) -> bool:
    value = metadata.get(key, default)
    if isinstance(value, bool):
        return value
    if _is_int(value) and value in (0, 1):  # a file may store the flag as u8
        return bool(value)
    raise _bad(key, f"must be a boolean, got {value!r}")


def _read_str(metadata: Mapping[str, Any], name: str) -> str | None:
    value = metadata.get(_key(name))
    if value is not None and not isinstance(value, str):
        raise _bad(_key(name), f"must be a string, got {type(value).__name__}")
    return value


def _read_tokens(metadata: Mapping[str, Any]) -> list[str]:
    """``tokenizer.ggml.tokens`` as strings; empty entries renamed as llama.cpp does."""
    key = _key("tokens")
    items = _read_list(metadata, "tokens", None, required=True)
    assert items is not None
    if not items:
        raise _bad(key, "is empty")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise _bad(key, f"[{i}] is not a string but {type(text).__name__}")
        if not text:
            items[i] = f"[EMPTY_{i}]"  # llama.cpp's name for an empty token, kept for parity
    try:
        "".join(items).encode()  # one pass; the entry is looked for only on failure
    except UnicodeEncodeError:
        for i, text in enumerate(items):
            if any("\ud800" <= ch <= "\udfff" for ch in text):
                raise _bad(key, f"[{i}] = {text!r} is not valid Unicode (a lone surrogate)"
                           ) from None
    if len(set(items)) != len(items):
        # llama.cpp asserts on this too: text -> id must be a function
        first: dict[str, int] = {}
        for i, text in enumerate(items):
            if text in first:
                raise _bad(key, f"has {text!r} twice (ids {first[text]} and {i})")
            first[text] = i
    return items


def _read_types(metadata: Mapping[str, Any], n: int) -> list[TokenType]:
    key = _key("token_type")
    items = _read_list(metadata, "token_type", n, required=False)
    if items is None:
        return [TokenType.NORMAL] * n  # llama.cpp: no types -> all normal
    by_value = {int(t): t for t in TokenType}
    types = []
    for i, value in enumerate(items):
        kind = by_value.get(value.__index__()) if _is_int(value) else None
        if kind is None:
            raise _bad(key, f"[{i}] = {value!r} is not a token type (an integer 0..6)")
        types.append(kind)
    return types


def _read_scores(metadata: Mapping[str, Any], n: int) -> list[float]:
    key = _key("scores")
    items = _read_list(metadata, "scores", n, required=False)
    if items is None:
        return [0.0] * n
    scores = []
    for i, value in enumerate(items):
        if isinstance(value, (bool, str, bytes)):
            raise _bad(key, f"[{i}] = {value!r} is not a number")
        try:
            scores.append(float(value))
        except (TypeError, ValueError, OverflowError):
            raise _bad(key, f"[{i}] = {value!r} is not a number") from None
    return scores


def _read_merges(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    key = _key("merges")
    items = _read_list(metadata, "merges", None, required=True)
    assert items is not None
    merges = []
    for i, merge in enumerate(items):
        # llama.cpp splits at the first space after position 0 (a part may itself be " ")
        cut = merge.find(" ", 1) if isinstance(merge, str) else -1
        if cut < 0:
            raise _bad(key, f"[{i}] = {merge!r} is not 'left right'")
        merges.append((merge[:cut], merge[cut + 1:]))
    return merges


def _check_merges(merges: Sequence[tuple[str, str]], vocab: Mapping[str, int]) -> None:
    """ModelFormatError naming the first merge whose parts or result is no token."""
    for i, (left, right) in enumerate(merges):
        for part in (left, right, left + right):
            if part not in vocab:
                raise _bad(_key("merges"), f"[{i}] = {left + ' ' + right!r}: {part!r} is not "
                           f"in {_key('tokens')!r}")


def _resolve_pretokenizer(metadata: Mapping[str, Any], override: str | None) -> PreTokenizer:
    if override is not None:
        try:
            return pretokenizers.resolve(override)
        except KeyError:
            raise ValueError(f"pretokenizer={override!r} is not supported; choose one of "
                             f"{pretokenizers.supported_names()}") from None
    pre = _read_str(metadata, "pre")
    if pre is None:
        # official BitNet 2B-4T files lack the key; llama.cpp (and so bitnet.cpp) then runs
        # its "default" regexes, which is what token-level parity with them needs
        return pretokenizers.PRETOKENIZERS["default"]
    try:
        return pretokenizers.resolve(pre)
    except KeyError:
        raise _bad(_key("pre"), f"= {pre!r} is not supported; supported: "
                   f"{pretokenizers.supported_names()} (or pass pretokenizer=...)") from None


# ---------------------------------------------------------------------------------------------
# encoders: one raw text fragment (no special tokens inside) -> ids

# SentencePiece refuses pieces of this many UTF-8 bytes or more ("piece is too long")
SPM_MAX_PIECE_BYTES = 8000


class SentencePieceEncoder:
    """llama.cpp's SPM tokenizer through ``sentencepiece``: bigram merges by piece score.

    llama.cpp may merge into *any* vocabulary entry whose text appears (control tokens
    included) and falls back to the entries named ``<0xNN>``, so every entry is given to
    SentencePiece as NORMAL except those byte entries. SentencePiece insists on one UNKNOWN
    piece and all 256 byte pieces; missing ones are added past the vocabulary, and emitting
    one of them is an error (llama.cpp aborts there too).

    A piece SentencePiece refuses (a NUL character, 8000 bytes or more) is a ModelFormatError
    naming the token; so is anything else the library refuses while loading the model.
    """

    def __init__(self, tokens: Sequence[str], scores: Sequence[float],
                 add_space_prefix: bool) -> None:
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2

        key = _key("tokens")
        for i, text in enumerate(tokens):
            if "\0" in text:
                raise _bad(key, f"[{i}] = {text!r} holds a NUL character, which "
                           f"SentencePiece refuses")
            if len(text) * 4 >= SPM_MAX_PIECE_BYTES and len(text.encode()) >= SPM_MAX_PIECE_BYTES:
                raise _bad(key, f"[{i}] is {len(text.encode())} bytes long; SentencePiece "
                           f"refuses pieces of {SPM_MAX_PIECE_BYTES} bytes or more")
        pb: Any = sentencepiece_model_pb2  # generated protobuf code: opaque to type checkers

        piece_type = pb.ModelProto.SentencePiece
        proto = pb.ModelProto()
        for text, score in zip(tokens, scores, strict=True):
            piece = proto.pieces.add()
            piece.piece = text
            piece.score = score
            is_byte = _BYTE_PIECE.fullmatch(text) is not None
            piece.type = piece_type.BYTE if is_byte else piece_type.NORMAL
        self.n_vocab = len(tokens)
        present = set(tokens)
        for b in range(256):
            if f"<0x{b:02X}>" not in present:
                extra = proto.pieces.add()
                extra.piece = f"<0x{b:02X}>"
                extra.type = piece_type.BYTE
        unk = proto.pieces.add()
        unk.piece = "<bitnet:no-piece>"
        while unk.piece in present:
            unk.piece += "_"
        unk.type = piece_type.UNKNOWN
        trainer = proto.trainer_spec
        trainer.model_type = pb.TrainerSpec.BPE
        trainer.vocab_size = len(proto.pieces)
        trainer.byte_fallback = True  # a text with no piece becomes <0xNN> pieces
        trainer.unk_id = len(proto.pieces) - 1
        trainer.bos_id = -1
        trainer.eos_id = -1
        trainer.pad_id = -1
        normalizer = proto.normalizer_spec
        normalizer.name = "identity"  # llama.cpp normalizes nothing
        normalizer.add_dummy_prefix = add_space_prefix
        normalizer.remove_extra_whitespaces = False
        normalizer.escape_whitespaces = True
        try:
            self._sp = sentencepiece.SentencePieceProcessor(
                model_proto=proto.SerializeToString())
        except Exception as err:  # sentencepiece raises RuntimeError / OSError
            raise _bad(key, f"is refused by SentencePiece: {err}") from None

    def encode(self, text: str) -> list[int]:
        ids = self._sp.encode(text)
        if any(i >= self.n_vocab for i in ids):
            raise ModelFormatError(f"cannot tokenize {text!r}: the vocabulary lacks a <0xNN> "
                                   f"byte token it needs")
        return ids


class ByteLevelBPEEncoder:
    """llama.cpp's BPE tokenizer through ``tokenizers``: regex pre-split, byte-level alphabet,
    merges by rank. ``ignore_merges`` (LLaMA-3) takes a whole pre-token found in the vocab.

    A text needing a byte whose byte-level character is not in the vocabulary is a
    ModelFormatError (``tokenizers`` and llama.cpp would silently drop that byte)."""

    def __init__(self, tokens: Sequence[str], merges: list[tuple[str, str]],
                 pretokenizer: PreTokenizer | str, ignore_merges: bool | None = None) -> None:
        from tokenizers import Regex, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        if isinstance(pretokenizer, str):
            pretokenizer = pretokenizers.resolve(pretokenizer)
        if ignore_merges is None:
            ignore_merges = pretokenizer.ignore_merges
        vocab = {text: i for i, text in enumerate(tokens)}
        # checked first: some bad merges make tokenizers panic rather than raise
        _check_merges(merges, vocab)
        try:
            bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges)
            self._hf = HFTokenizer(bpe)
            splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated")
                      for regex in pretokenizer.regexes]
            steps = [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
            if pretokenizer.byte_level_digits:
                steps.append(pre_tokenizers.Digits(individual_digits=True))
            self._hf.pre_tokenizer = pre_tokenizers.Sequence(steps)
        except BaseException as err:  # a bare Exception, or a Rust panic (a BaseException)
            if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
                raise
            raise ModelFormatError(f"tokenizer metadata: {_key('tokens')!r} / "
                                   f"{_key('merges')!r} are refused by tokenizers: {err}") from None
        # bytes whose byte-level character is no vocabulary entry: BPE cannot start from them
        self._missing_bytes = frozenset(b for b, ch in _BYTE_TO_UNICODE.items()
                                        if ch not in vocab)
        # no decoder: ids are decoded from Tokenizer's own piece table, byte-exact for streaming

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces BPE runs on, in the byte-level alphabet (for tests and debugging)."""
        return [piece for piece, _ in self._hf.pre_tokenizer.pre_tokenize_str(text)]

    def encode(self, text: str) -> list[int]:
        if self._missing_bytes:
            missing = self._missing_bytes.intersection(text.encode())
            if missing:
                raise ModelFormatError(
                    f"cannot tokenize {text!r}: the vocabulary lacks the byte-level token of "
                    f"byte 0x{min(missing):02X} ({_BYTE_TO_UNICODE[min(missing)]!r})")
        return self._hf.encode(text, add_special_tokens=False).ids


# ---------------------------------------------------------------------------------------------
# decoding


def _render_piece(model: str, text: str, kind: TokenType) -> bytes:
    """A token's bytes as ``llama_token_to_piece(special=True)`` gives them."""
    if kind in _SPECIAL_TYPES:
        return text.encode()
    if kind == TokenType.NORMAL:
        if model == "llama":
            return text.replace(SPACE_MARK, " ").encode()
        if not text.translate(_NOT_BYTE_LEVEL):
            return text.translate(_BYTE_LEVEL_TO_LATIN1).encode("latin-1")
        # a character outside the byte-level alphabet keeps its UTF-8 (llama.cpp prints
        # a placeholder there; such characters do not occur in real byte-level vocabularies)
        return b"".join(bytes([_UNICODE_TO_BYTE[ch]]) if ch in _UNICODE_TO_BYTE else ch.encode()
                        for ch in text)
    if kind == TokenType.BYTE and model == "llama":
        match = _BYTE_PIECE.fullmatch(text)
        return bytes([int(match.group(1), 16)]) if match else text.encode()
    return b""  # unused / undefined tokens render as nothing in llama.cpp


class StreamDecoder:
    """Turns generated ids into text as they come: ``push(id)`` returns only complete UTF-8
    text, holding back the start of a character split across tokens; ``flush()`` ends the
    stream (an unfinished character becomes U+FFFD)."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool, lstrip: bool) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._lstrip = lstrip
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        piece = self._tokenizer.token_to_piece(token_id, special=not self._skip_special)
        if self._lstrip and piece:
            # the first visible piece carries the SentencePiece prefix space
            self._lstrip = False
            if piece.startswith(b" "):
                piece = piece[1:]
        return self._utf8.decode(piece)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


# ---------------------------------------------------------------------------------------------
# the tokenizer


class Tokenizer:
    """A GGUF vocabulary: ``encode`` text to ids and ``decode`` ids to text like llama.cpp.

    Build it with ``Tokenizer.from_metadata(gguf_metadata)``.
    """

    def __init__(self, *, model: str, tokens: list[str], types: list[TokenType],
                 encoder: SentencePieceEncoder | ByteLevelBPEEncoder, bos_id: int | None,
                 eos_id: int | None, eot_id: int | None, unk_id: int | None, pad_id: int | None,
                 eog_ids: frozenset[int], add_bos: bool, add_eos: bool, add_space_prefix: bool,
                 pretokenizer: str | None, chat_template: str | None) -> None:
        self.model = model
        self.pretokenizer = pretokenizer  # the regex set in use ("gpt2" vocabularies only)
        self.chat_template = chat_template
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.add_space_prefix = add_space_prefix
        self._tokens = tokens
        self._types = types
        self._encoder = encoder
        self._bos_id = bos_id
        self._eos_id = eos_id
        self._eot_id = eot_id
        self.unk_id = unk_id
        self.pad_id = pad_id
        self._eog_ids = eog_ids
        # rendered on first use: a 128K vocabulary costs ~1 s to render up front
        self._pieces: list[bytes | None] = [None] * len(tokens)
        self._hidden = [k in (TokenType.CONTROL, TokenType.UNKNOWN) for k in types]
        specials = [i for i, k in enumerate(types) if k in _SPECIAL_TYPES]
        # llama.cpp splits the longest special texts out first
        specials.sort(key=lambda i: -len(tokens[i].encode()))
        self._special_ids = specials
        self._user_defined_ids = [i for i in specials if types[i] == TokenType.USER_DEFINED]

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any],
                      pretokenizer: str | None = None) -> Tokenizer:
        """Build from a GGUF metadata dict (key -> plain Python value).

        ``pretokenizer`` overrides a "gpt2" vocabulary's ``tokenizer.ggml.pre`` (e.g. "llama3"
        for Hugging Face parity on files that lack the key). Raises ModelFormatError naming
        the key (and the token) for missing, inconsistent or refused metadata, ValueError for
        an unknown ``pretokenizer``.
        """
        if pretokenizer is not None:
            _resolve_pretokenizer(metadata, pretokenizer)  # a bad name is an error for any file
        model = _read_str(metadata, "model")
        if model is None:
            raise ModelFormatError(f"tokenizer metadata: missing key {_key('model')!r}")
        if model not in ("llama", "gpt2"):
            raise _bad(_key("model"), f"= {model!r} is not supported (supported: 'llama' = "
                       f"SentencePiece, 'gpt2' = byte-level BPE)")
        tokens = _read_tokens(metadata)
        n = len(tokens)
        types = _read_types(metadata, n)
        is_spm = model == "llama"
        # llama.cpp's defaults when a key is absent: SPM has fixed ids, BPE has none we trust
        bos_id = _read_id(metadata, "bos_token_id", n, 1 if is_spm and n > 1 else None)
        eos_id = _read_id(metadata, "eos_token_id", n, 2 if is_spm and n > 2 else None)
        unk_id = _read_id(metadata, "unknown_token_id", n, 0 if is_spm else None)
        pad_id = _read_id(metadata, "padding_token_id", n, None)
        eot_id = _read_id(metadata, "eot_token_id", n, None)
        eom_id = _read_id(metadata, "eom_token_id", n, None)
        if eot_id is None:
            eot_id = _find_text(tokens, _EOT_TEXTS)
        if eom_id is None:
            eom_id = _find_text(tokens, ("<|eom_id|>",))
        eog_ids = {i for i, text in enumerate(tokens) if text in _EOG_TEXTS}
        for i in eog_ids | {i for i in (eot_id, eom_id) if i is not None}:
            if tokens[i] in _EOT_TEXTS or tokens[i] in _EOG_TEXTS:
                # llama.cpp forces end-of-turn texts to control type: hidden when decoding,
                # matched as special text with parse_special
                types[i] = TokenType.CONTROL
        eog_ids.update(i for i in (eos_id, eot_id, eom_id) if i is not None)

        pre = None
        if is_spm:
            add_space_prefix = _read_bool(metadata, _key("add_space_prefix"), True)
            scores = _read_scores(metadata, n)
            encoder: SentencePieceEncoder | ByteLevelBPEEncoder = SentencePieceEncoder(
                tokens, scores, add_space_prefix)
            add_bos_default = True
        else:
            add_space_prefix = False
            pre_tokenizer = _resolve_pretokenizer(metadata, pretokenizer)
            pre = pre_tokenizer.name
            merges = _read_merges(metadata)
            # llama.cpp enables ignore_merges and BOS for the LLaMA-3 family
            encoder = ByteLevelBPEEncoder(tokens, merges, pre_tokenizer)
            add_bos_default = pre_tokenizer.add_bos
        add_bos = _read_bool(metadata, _key("add_bos_token"), add_bos_default)
        add_eos = _read_bool(metadata, _key("add_eos_token"), False)
        if add_bos and bos_id is None:
            raise _bad(_key("add_bos_token"), f"is set but {_key('bos_token_id')!r} is missing")
        if add_eos and eos_id is None:
            raise _bad(_key("add_eos_token"), f"is set but {_key('eos_token_id')!r} is missing")
        template = metadata.get("tokenizer.chat_template")
        if template is not None and not isinstance(template, str):
            raise _bad("tokenizer.chat_template", "must be a string")
        return cls(model=model, tokens=tokens, types=types, encoder=encoder, bos_id=bos_id,
                   eos_id=eos_id, eot_id=eot_id, unk_id=unk_id, pad_id=pad_id,
                   eog_ids=frozenset(eog_ids), add_bos=add_bos, add_eos=add_eos,
                   add_space_prefix=add_space_prefix, pretokenizer=pre, chat_template=template)

    # -- properties ---------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self._tokens)

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    @property
    def eot_id(self) -> int | None:
        return self._eot_id

    def is_eog(self, token_id: int) -> bool:
        """True for tokens that end generation: EOS, EOT, EOM and llama.cpp's known
        end-of-turn texts (``<|eot_id|>``, ``<|im_end|>``, ...)."""
        return token_id in self._eog_ids

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry as stored (``"▁the"``, ``"<0x0A>"``, ``"Ġthe"``)."""
        return self._tokens[self._check_id(token_id)]

    def token_type(self, token_id: int) -> TokenType:
        return self._types[self._check_id(token_id)]

    # -- encode -------------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False,
               add_eos: bool | None = None) -> list[int]:
        """Token ids of ``text``, as ``llama_tokenize(add_special=True)`` gives them.

        add_bos / add_eos: None follows the file (``tokenizer.ggml.add_bos_token`` / ...).
        parse_special: also turn control-token texts such as ``<|eot_id|>`` into their ids;
        user-defined tokens are always matched, as in llama.cpp.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        try:
            text.encode()
        except UnicodeEncodeError as err:
            raise ValueError(f"cannot tokenize: the text is not valid Unicode (a lone surrogate "
                             f"at {err.start})") from None
        add_bos = self.add_bos if add_bos is None else add_bos
        add_eos = self.add_eos if add_eos is None else add_eos
        ids: list[int] = []
        if add_bos:
            if self._bos_id is None:
                raise ValueError("add_bos=True but the vocabulary has no BOS token")
            ids.append(self._bos_id)
        for fragment in self._split_special(text, parse_special):
            if isinstance(fragment, int):
                ids.append(fragment)
            else:
                # SentencePiece's dummy prefix puts one space before every raw fragment,
                # exactly what llama.cpp does after BOS and after each special token
                ids.extend(self._encoder.encode(fragment))
        if add_eos:
            if self._eos_id is None:
                raise ValueError("add_eos=True but the vocabulary has no EOS token")
            ids.append(self._eos_id)
        return ids

    def _split_special(self, text: str, parse_special: bool) -> list[str | int]:
        """``text`` cut into raw fragments and special-token ids (llama.cpp's partition:
        for each special token, longest first, split every raw fragment at its occurrences)."""
        fragments: list[str | int] = [text] if text else []
        candidates = self._special_ids if parse_special else self._user_defined_ids
        for token_id in candidates:
            special = self._tokens[token_id]
            if special not in text:
                continue
            split: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or special not in fragment:
                    split.append(fragment)
                    continue
                for i, part in enumerate(fragment.split(special)):
                    if i > 0:
                        split.append(token_id)
                    if part:
                        split.append(part)
            fragments = split
        return fragments

    # -- decode -------------------------------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = True) -> bytes:
        """The bytes one token stands for. ``special=False`` renders control and unknown
        tokens as nothing (llama.cpp's ``special`` flag). A byte token gives one raw byte."""
        token_id = self._check_id(token_id)
        if not special and self._hidden[token_id]:
            return b""
        piece = self._pieces[token_id]
        if piece is None:
            piece = _render_piece(self.model, self._tokens[token_id], self._types[token_id])
            self._pieces[token_id] = piece
        return piece

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids``. Invalid UTF-8 becomes U+FFFD. For "llama" vocabularies the leading
        space SentencePiece put before the text is removed from the first visible piece, so
        ``decode(encode(s)) == s`` (llama.cpp keeps it when the ids start with BOS)."""
        stream = self.stream_decoder(skip_special=skip_special)
        text = [stream.push(token_id) for token_id in ids]
        text.append(stream.flush())
        return "".join(text)

    def stream_decoder(self, skip_special: bool = True, lstrip: bool | None = None
                       ) -> StreamDecoder:
        """A decoder for ids arriving one at a time (generation). ``lstrip``: drop the
        SentencePiece prefix space of the first visible piece; None = on for "llama"
        vocabularies. Pass False when the output continues a prompt mid-text."""
        if lstrip is None:
            lstrip = self.add_space_prefix
        return StreamDecoder(self, skip_special, lstrip)

    def _check_id(self, token_id: int) -> int:
        if isinstance(token_id, bool) or not hasattr(token_id, "__index__"):
            raise TypeError(f"token id must be an integer, got {token_id!r}")
        token_id = token_id.__index__()
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} is out of range for a vocabulary of "
                             f"{len(self._tokens)} tokens")
        return token_id

    def __repr__(self) -> str:
        pre = f", pre={self.pretokenizer!r}" if self.pretokenizer else ""
        return f"Tokenizer(model={self.model!r}, n_vocab={self.n_vocab}{pre})"


def _find_text(tokens: Sequence[str], texts: Sequence[str]) -> int | None:
    """Id of the first of ``texts`` (in that order of preference) present in ``tokens``."""
    index = {text: i for i, text in enumerate(tokens) if text in texts}
    for text in texts:
        if text in index:
            return index[text]
    return None
