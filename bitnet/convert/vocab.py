"""A checkpoint's tokenizer files -> GGUF ``tokenizer.*`` metadata, as llama.cpp's converter
writes it (docs/model-facts.md 4.2, 6).

- ``tokenizer.model`` (SentencePiece, 1bitLLM's Llama-2 vocabulary): model ``llama``, pieces,
  scores and piece types (SentencePiece's type numbers are llama.cpp's token types), plus the
  added tokens of ``added_tokens.json`` / ``tokenizer_config.json``.
- else ``tokenizer.json`` with a byte-level BPE model: model ``gpt2``, vocabulary, merges, added
  tokens (special -> CONTROL, other -> USER_DEFINED), and ``tokenizer.ggml.pre`` named from the
  pre-tokenizer the file declares (not from a hash of sample tokenizations, as llama.cpp does:
  the structure is what decides how text is split, and it is there to read;
  ``bitnet.core.pretokenizers.ggml_pre_for_hf`` maps it, shared with the runtime).

Missing ids up to the model's vocab_size are padded with ``[PAD{id}]`` UNUSED tokens, as
llama.cpp does. Special token ids, ``add_bos``/``add_eos`` and the chat template come from
``tokenizer_config.json`` (then tokenizer.json's post-processor, then config.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bitnet.convert.checkpoint import read_json
from bitnet.convert.errors import ConvertError
from bitnet.core.tokenizer import TokenType

__all__ = ["vocab_metadata"]

# tokenizer.ggml.token_type values: the runtime's enum, as ints for the metadata arrays
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (
    int(t) for t in (TokenType.NORMAL, TokenType.UNKNOWN, TokenType.CONTROL,
                     TokenType.USER_DEFINED, TokenType.UNUSED, TokenType.BYTE))

def vocab_metadata(directory: Path, config: dict[str, Any], n_vocab: int,
                   pre: str | None = None, peer: str = "llama.cpp") -> dict[str, Any]:
    """tokenizer.* keys for a model with ``n_vocab`` embedding rows, from the tokenizer files
    in ``directory`` and its config.json contents ``config``. ``pre`` overrides the detected
    pre-tokenizer name of a byte-level BPE vocabulary. ``peer``: the runtime the file is for
    ("bitnet.cpp" for I2_S, else "llama.cpp"), where the two name one vocabulary differently."""
    ckpt = _Files(Path(directory), config, peer)
    tok_config = ckpt.read_json("tokenizer_config.json")
    if (ckpt.dir / "tokenizer.model").is_file():
        meta = _sentencepiece(ckpt, tok_config, n_vocab)
    elif (ckpt.dir / "tokenizer.json").is_file():
        meta = _byte_level_bpe(ckpt, tok_config, n_vocab, pre)
    else:
        raise ConvertError(f"{ckpt.dir}: no tokenizer.model or tokenizer.json; a GGUF file "
                           "needs the vocabulary")
    tokens = meta["tokenizer.ggml.tokens"]
    meta.update(_special_ids(ckpt, tok_config, tokens, meta))
    template = _chat_template(ckpt, tok_config)
    if template:
        meta["tokenizer.chat_template"] = template
    return meta


class _Files:
    """The tokenizer side of a checkpoint directory."""

    def __init__(self, directory: Path, config: dict[str, Any], peer: str) -> None:
        self.dir = directory
        self.config = config
        self.peer = peer

    def read_json(self, name: str) -> dict[str, Any]:
        return read_json(self.dir, name)


# ---------------------------------------------------------------------------------------------
# SentencePiece


def _sentencepiece(ckpt: _Files, tok_config: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    from sentencepiece import sentencepiece_model_pb2

    proto: Any = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
    path = ckpt.dir / "tokenizer.model"
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError; any failure means a bad file
        raise ConvertError(f"{path}: not a SentencePiece model ({err})") from None
    tokens = [p.piece for p in proto.pieces]
    scores = [float(p.score) for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]  # SentencePiece numbers = llama.cpp's
    added = _added_tokens(ckpt, tok_config)
    for token_id in sorted(added):
        text, special = added[token_id]
        if token_id < len(tokens):
            continue  # an added token that is already a piece keeps its piece entry
        _pad_to(token_id, tokens, scores, types)
        tokens.append(text)
        scores.append(-1000.0)
        types.append(CONTROL if special else USER_DEFINED)
    _check_size(len(tokens), n_vocab, "tokenizer.model (with added tokens)")
    _pad_to(n_vocab, tokens, scores, types)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.add_space_prefix": bool(proto.normalizer_spec.add_dummy_prefix),
    }


def _added_tokens(ckpt: _Files, tok_config: dict[str, Any]) -> dict[int, tuple[str, bool]]:
    """id -> (text, special) from added_tokens.json and tokenizer_config's decoder table."""
    added: dict[int, tuple[str, bool]] = {}
    for text, token_id in ckpt.read_json("added_tokens.json").items():
        if _is_id(token_id):
            added[token_id] = (text, False)
    decoder = tok_config.get("added_tokens_decoder")
    for key, spec in (decoder.items() if isinstance(decoder, dict) else ()):
        if isinstance(spec, dict) and str(key).isdigit() and isinstance(spec.get("content"), str):
            added[int(key)] = (spec["content"], bool(spec.get("special")))
    return added


def _pad_to(n: int, tokens: list[str], scores: list[float], types: list[int]) -> None:
    while len(tokens) < n:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(UNUSED)


def _check_size(n_tokens: int, n_vocab: int, what: str) -> None:
    if n_tokens > n_vocab:
        raise ConvertError(f"{what} has {n_tokens} tokens but the model's vocab_size is "
                           f"{n_vocab}")


# ---------------------------------------------------------------------------------------------
# byte-level BPE (tokenizer.json)


def _byte_level_bpe(ckpt: _Files, tok_config: dict[str, Any], n_vocab: int,
                    pre: str | None) -> dict[str, Any]:
    path = ckpt.dir / "tokenizer.json"
    spec = ckpt.read_json("tokenizer.json")
    model = spec.get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if kind != "BPE":
        raise ConvertError(f"{path}: model type {kind!r} is not a BPE vocabulary (and there is "
                           "no tokenizer.model)")
    if "ByteLevel" not in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")]):
        raise ConvertError(f"{path}: not a byte-level BPE vocabulary (no ByteLevel "
                           "pre-tokenizer or decoder); bitnet converts byte-level BPE or "
                           "SentencePiece vocabularies")
    if pre is None:
        pre = _pre_name(spec, ckpt, path)
    by_id = _bpe_tokens(model.get("vocab"), spec.get("added_tokens"), path)
    _check_size(max(by_id) + 1, n_vocab, str(path))
    tokens = []
    types = []
    for i in range(n_vocab):
        text, token_type = by_id.get(i, (f"[PAD{i}]", UNUSED))
        tokens.append(text)
        types.append(token_type)
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": _bpe_merges(model.get("merges"), path),
    }


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31


def _bpe_tokens(vocab: Any, added: Any, path: Path) -> dict[int, tuple[str, int]]:
    """id -> (text, token type) from model.vocab and added_tokens, each entry checked."""
    if not isinstance(vocab, dict) or not vocab:
        raise ConvertError(f"{path}: model.vocab is not a non-empty object of token -> id")
    bad = next((t for t, i in vocab.items() if not _is_id(i)), None)
    if bad is not None:
        raise ConvertError(f"{path}: model.vocab[{bad!r}] = {vocab[bad]!r} is not a token id")
    by_id = {i: (t, NORMAL) for t, i in vocab.items()}
    if not isinstance(added, (list, type(None))):
        raise ConvertError(f"{path}: added_tokens is not a list")
    for n, entry in enumerate(added or []):
        if not (isinstance(entry, dict) and _is_id(entry.get("id"))
                and isinstance(entry.get("content"), str)):
            raise ConvertError(f"{path}: added_tokens[{n}] lacks an integer id or a content "
                               "string")
        by_id[entry["id"]] = (entry["content"], CONTROL if entry.get("special") is True
                              else USER_DEFINED)
    return by_id


def _bpe_merges(merges: Any, path: Path) -> list[str]:
    """model.merges as "left right" strings (tokenizers writes "a b" or, since 0.20, [a, b])."""
    if not isinstance(merges, list) or not merges:
        raise ConvertError(f"{path}: the BPE model has no merges list (llama.cpp needs one)")
    out = []
    for n, merge in enumerate(merges):
        if isinstance(merge, list) and len(merge) == 2 and all(isinstance(m, str)
                                                               for m in merge):
            merge = " ".join(merge)
        if not isinstance(merge, str) or " " not in merge[1:]:
            raise ConvertError(f"{path}: model.merges[{n}] = {merge!r} is not a pair of tokens")
        out.append(merge)
    return out


def _pre_name(spec: dict[str, Any], ckpt: _Files, path: Path) -> str:
    """The tokenizer.ggml.pre whose regexes split text as this tokenizer.json's pre_tokenizer
    does (bitnet.core.pretokenizers, shared with the runtime tokenizer)."""
    from bitnet.core.pretokenizers import ggml_pre_for_hf

    try:
        name = ggml_pre_for_hf(spec)
    except ValueError as err:
        raise ConvertError(f"{path}: {err}") from None
    if name is None:
        shown = json.dumps(spec.get("pre_tokenizer"))
        shown = shown if len(shown) <= 300 else shown[:300] + "..."
        raise ConvertError(f"{path}: pre-tokenizer {shown} (with normalizer "
                           f"{json.dumps(spec.get('normalizer'))}) is not one bitnet knows; "
                           "name llama.cpp's equivalent with --pre (e.g. llama-bpe, gpt-2, "
                           "falcon3)")
    if name == "falcon3" and ckpt.config.get("is_bitnet_config"):
        # Falcon-E (onebitllms marks its configs so): bitnet.cpp names its vocabulary falcon_e,
        # upstream llama.cpp falcon-h1 (and refuses falcon_e); both mean the same regexes
        return "falcon_e" if ckpt.peer == "bitnet.cpp" else "falcon-h1"
    return name


# ---------------------------------------------------------------------------------------------
# special tokens and chat template


def _special_ids(ckpt: _Files, tok_config: dict[str, Any], tokens: list[str],
                 meta: dict[str, Any]) -> dict[str, Any]:
    index = {t: i for i, t in enumerate(tokens)}
    config = ckpt.config
    out: dict[str, Any] = {}
    for name in ("bos", "eos", "unk", "pad"):
        token_id = _token_id(tok_config.get(f"{name}_token"), index)
        if token_id is None:
            token_id = _config_id(config.get(f"{name}_token_id"), len(tokens))
        if token_id is not None:
            out[f"tokenizer.ggml.{name}_token_id"] = token_id
    if "<|eot_id|>" in index:
        out["tokenizer.ggml.eot_token_id"] = index["<|eot_id|>"]
    sentencepiece = meta["tokenizer.ggml.model"] == "llama"
    out["tokenizer.ggml.add_bos_token"] = _add_special(
        ckpt, tok_config, "add_bos_token", tokens, out.get("tokenizer.ggml.bos_token_id"),
        default=sentencepiece)
    out["tokenizer.ggml.add_eos_token"] = bool(tok_config.get("add_eos_token", False))
    return out


def _token_id(value: Any, index: dict[str, int]) -> int | None:
    if isinstance(value, dict):  # {"content": "<s>", ...}
        value = value.get("content")
    return index.get(value) if isinstance(value, str) else None


def _config_id(value: Any, n: int) -> int | None:
    if isinstance(value, list):  # eos_token_id may list several; llama.cpp keeps the first
        value = value[0] if value else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
        return value
    return None


def _add_special(ckpt: _Files, tok_config: dict[str, Any], key: str, tokens: list[str],
                 bos_id: int | None, default: bool) -> bool:
    value = tok_config.get(key)
    if isinstance(value, bool):
        return value
    post = ckpt.read_json("tokenizer.json").get("post_processor") if (
        ckpt.dir / "tokenizer.json").is_file() else None
    template = _template_processing(post)
    if template is not None and bos_id is not None:
        # LLaMA-3 style: the post-processor puts the BOS token before every sequence
        first = template[0] if template else {}
        special = first.get("SpecialToken", {}) if isinstance(first, dict) else {}
        return special.get("id") == tokens[bos_id]
    return default


def _template_processing(post: Any) -> list[Any] | None:
    if not isinstance(post, dict):
        return None
    if post.get("type") == "TemplateProcessing":
        single = post.get("single")
        return single if isinstance(single, list) else None
    if post.get("type") == "Sequence":
        for child in post.get("processors") or []:
            found = _template_processing(child)
            if found is not None:
                return found
    return None


def _chat_template(ckpt: _Files, tok_config: dict[str, Any]) -> str | None:
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str) and template:
        return template
    path = ckpt.dir / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return None
