"""Pre-tokenizers of byte-level BPE ("gpt2") vocabularies.

A GGUF file names its pre-tokenizer in ``tokenizer.ggml.pre``; llama.cpp maps each name to a
list of regexes, each splitting the pieces the previous one left (matches and the gaps between
them both become pieces). This module holds those regex sets, the names that select them, and
the reverse direction a converter needs: which name reproduces a Hugging Face
``tokenizer.json`` ``pre_tokenizer`` (``ggml_pre_for_hf``).

The sets and what each reproduces:

- ``default``: llama.cpp's fallback when a file has no ``tokenizer.ggml.pre`` (the official
  BitNet b1.58 2B-4T GGUF). Token parity with llama.cpp / bitnet.cpp on those files.
- ``gpt-2``: GPT-2's regex; HF ``ByteLevel(use_regex=true)``. GPT-2, GPT-NeoX-style
  vocabularies (``olmo``, ``mpt``; TriLM's vocabulary is GPT-NeoX-style [unverified]).
- ``llama3``: LLaMA-3's regex; HF ``Split(<llama3 regex>, Isolated)`` + ``ByteLevel(use_regex=
  false)`` (Llama-3, Llama3-8B-1.58, BitNet 2B-4T's tokenizer.json). llama.cpp also ignores
  merges for a pre-token that is a whole vocabulary entry, and adds BOS by default.
- ``falcon3``: HF ``Punctuation(Contiguous)`` + ``ByteLevel(use_regex=true)`` +
  ``Digits(individual_digits=true)``: the regexes of the BitNet llama.cpp fork for ``falcon3``
  and ``falcon_e``. That this is the pre_tokenizer of Falcon3's and Falcon-E's tokenizer.json is
  **unverified** (no hub access here): it is inferred from the fork, written by the models'
  authors, which translated it exactly as llama.cpp's ``falcon`` set translates Falcon-7B's
  ``Punctuation`` + ``ByteLevel`` + ``Digits`` + ``Split`` pre_tokenizer. Upstream llama.cpp
  maps ``falcon3`` (and Falcon-E's tokenizer, which its hash table calls ``falcon-h1``) to the
  LLaMA-3 regex instead; a file whose vocabulary really follows that regex can be run with
  ``pretokenizer="llama3"``.

HF's ``Punctuation`` splits on Rust's ``char::is_ascii_punctuation() || is_punctuation()``:
Unicode category P plus the ASCII symbols ``$+<=>^`|~``, which is exactly
``[\\p{P}$+<=>^`|~]``. HF's ``Digits`` runs after ``ByteLevel`` and isolates every character
that is ``char::is_numeric()`` in the *byte-level* text: the ASCII digits, and also the
characters ``² ³ ¹ ¼ ½ ¾`` that stand for the bytes B2 B3 B9 BC BD BE (continuation bytes of
many UTF-8 characters). The fork's ``[0-9]`` misses the latter; on a vocabulary trained with
this pre_tokenizer no merge crosses those characters, so both give the same ids, but the
``falcon3`` set here runs HF's own ``Digits`` step after the byte-level mapping, so it splits
exactly as the tokenizer.json does for any vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# llama.cpp's spelling of LLaMA-3's regex (no (?i:...) group); splits identically to HF's
LLAMA3_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The regex as LLaMA-3's tokenizer.json writes it
HF_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                   r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PUNCTUATION_REGEX = r"[\p{P}\$\+<=>\^~\|`]+"  # HF Punctuation(behavior="contiguous")


@dataclass(frozen=True)
class PreTokenizer:
    """One regex set and the llama.cpp flags that go with it."""

    name: str
    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a pre-token that is a vocabulary entry is taken whole
    add_bos: bool = False  # BOS added when the file has no tokenizer.ggml.add_bos_token
    # HF Digits(individual_digits=true) on the byte-level text, after the regexes
    byte_level_digits: bool = False


PRETOKENIZERS: dict[str, PreTokenizer] = {p.name: p for p in (
    PreTokenizer("default", (r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+",
                             r"[0-9][0-9][0-9]")),
    PreTokenizer("gpt-2", (GPT2_REGEX,)),
    PreTokenizer("llama3", (LLAMA3_REGEX,), ignore_merges=True, add_bos=True),
    # the fork's third regex, [0-9], is HF's Digits step (see above)
    PreTokenizer("falcon3", (PUNCTUATION_REGEX, GPT2_REGEX), byte_level_digits=True),
)}

# ``tokenizer.ggml.pre`` values -> the set that reproduces the tokenizer.json they stand for
GGML_PRE_NAMES: dict[str, str] = {
    "default": "default",
    "gpt-2": "gpt-2",
    "gpt2": "gpt-2",
    "olmo": "gpt-2",  # llama.cpp runs GPT-2's regex for these
    "mpt": "gpt-2",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "falcon3": "falcon3",
    "falcon_e": "falcon3",  # the BitNet fork's name for Falcon-E (same regexes as falcon3)
    "falcon-h1": "falcon3",  # upstream's hash name for Falcon-E's tokenizer (see above)
}


def resolve(name: str) -> PreTokenizer:
    """The regex set for a ``tokenizer.ggml.pre`` value or a set name; KeyError if unknown."""
    return PRETOKENIZERS[GGML_PRE_NAMES[name]]


def supported_names() -> list[str]:
    return sorted(GGML_PRE_NAMES)


# ---------------------------------------------------------------------------------------------
# Hugging Face tokenizer.json -> tokenizer.ggml.pre (for converters)


def _regex_of(step: Mapping[str, Any]) -> str | None:
    pattern = step.get("pattern")
    if isinstance(pattern, Mapping):
        regex = pattern.get("Regex")
        return regex if isinstance(regex, str) else None
    return None


def _steps(pre_tokenizer: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if pre_tokenizer is None:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        steps = pre_tokenizer.get("pretokenizers")
        if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
            raise ValueError("tokenizer.json: pre_tokenizer Sequence has no list of steps")
        return [s for step in steps for s in _steps(step)]
    return [pre_tokenizer]


def _byte_level(step: Mapping[str, Any], use_regex: bool) -> bool:
    return (step.get("type") == "ByteLevel" and not step.get("add_prefix_space", False)
            and bool(step.get("use_regex", True)) == use_regex)


def _split(step: Mapping[str, Any], regex: str) -> bool:
    return (step.get("type") == "Split" and _regex_of(step) == regex
            and str(step.get("behavior", "")).lower() == "isolated"
            and not step.get("invert", False))


def _nfc_or_none(normalizer: Any) -> bool:
    if normalizer is None:
        return True
    if not isinstance(normalizer, Mapping):
        return False
    if normalizer.get("type") == "Sequence":
        steps = normalizer.get("normalizers")
        return isinstance(steps, list) and all(_nfc_or_none(step) for step in steps)
    return normalizer.get("type") == "NFC"


def ggml_pre_for_hf(tokenizer_json: Mapping[str, Any]) -> str | None:
    """The ``tokenizer.ggml.pre`` value whose regexes split text exactly as the
    ``pre_tokenizer`` of this parsed ``tokenizer.json`` does (with a byte-level BPE model and
    no normalizer), or None when no supported set does.

    Returns the name the peer runtimes use for that family: "llama-bpe", "gpt-2", "falcon3".
    (Falcon-E's converters write "falcon_e" or "falcon-h1" for the same regexes; a converter
    that knows it is converting Falcon-E may prefer that name.)

    The BPE model's ``ignore_merges`` is not compared: llama.cpp fixes it per pre-tokenizer.
    An NFC normalizer (GPT-NeoX-style tokenizers, as TriLM's is believed to be) is accepted:
    GGUF has no key for it, llama.cpp does not apply it, and neither does bitnet, so a text
    that is not in NFC (rare: decomposed accents) may tokenize differently from Hugging Face.
    Any other normalizer gives None.
    """
    if not _nfc_or_none(tokenizer_json.get("normalizer")):
        return None  # llama.cpp's BPE path normalizes nothing
    model = tokenizer_json.get("model")
    if not isinstance(model, Mapping) or model.get("type") != "BPE":
        return None
    pre = tokenizer_json.get("pre_tokenizer")
    if pre is not None and not isinstance(pre, Mapping):
        return None
    steps = _steps(pre)
    if len(steps) == 1 and _byte_level(steps[0], use_regex=True):
        return "gpt-2"
    if (len(steps) == 2 and _split(steps[0], HF_LLAMA3_REGEX)
            and _byte_level(steps[1], use_regex=False)):
        return "llama-bpe"
    if (len(steps) == 3 and steps[0].get("type") == "Punctuation"
            and str(steps[0].get("behavior", "")).lower() == "contiguous"
            and _byte_level(steps[1], use_regex=True)
            and steps[2].get("type") == "Digits" and steps[2].get("individual_digits") is True):
        return "falcon3"
    return None
