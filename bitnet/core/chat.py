r"""Chat prompts: a conversation rendered with the file's ``tokenizer.chat_template``.

Templates are Jinja, as Hugging Face writes them, and come from model files we did not write, so
they run in jinja2's immutable sandbox: no attribute starting with ``_``, no mutation of the
messages, bounded ``range``. Any escape attempt or rendering failure is a ChatTemplateError
naming the cause.

A file without a template gets one of the formats built into bitnet.cpp (the BitNet llama.cpp
fork, Eddie-Wang1120/llama.cpp @ 40ed0f29, ``llama_chat_apply_template_internal``), rendered
exactly as the fork renders it; ``builtin_format_for`` picks it from the file as llama.cpp's
template detection would, had the file a template:

- ``bitnet`` (arches bitnet-b1.58 / bitnet-25, and any template containing "BITNET", the
  placeholder the BitNet converters write)::

      System: {system}User: {user}<|eot_id|>Assistant: {assistant}User: ...<|eot_id|>Assistant:

  Note there is no separator after the system text and none after an assistant turn.
- ``falcon3`` (``tokenizer.ggml.pre`` falcon3): ``<|{role}|>\n{content}\n`` per message, then
  ``<|assistant|>\n``.
- ``falcon_e`` (pre falcon_e / falcon-h1): ``{role}{content}\n`` per message, then
  ``assistant\n``. (The fork's own selection of this format can never fire: it tests
  ``tmpl == "falcon_e" && tmpl contains "assistant"``. The format is rendered as written.)
- ``llama3`` (a vocabulary with ``<|start_header_id|>`` / ``<|end_header_id|>``):
  ``<|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>`` per message,
  then the assistant header.
- otherwise ``bitnet`` (llama.cpp falls back to chatml; bitnet keeps the BitNet format it has
  always used for files such as 1bitLLM's, which are base models without a chat format).

A template that is one of these names selects that format, as llama.cpp's named templates do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

BITNET_MARKER = "BITNET"  # bitnet.cpp picks its built-in format for templates containing this


class ChatTemplateError(ValueError):
    """A conversation or chat template that cannot be rendered; the message says why."""


# ---------------------------------------------------------------------------------------------
# the built-in formats


def render_bitnet(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
                  ) -> str:
    """The BitNet fork's "bitnet" chat format. The fork always writes "Assistant: " after a
    user turn; with ``add_generation_prompt=False`` we leave it off after the *last* user turn
    (the fork has no such mode)."""
    parts = []
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            parts.append("System: " + message["content"])
        elif role == "user":
            parts.append("User: " + message["content"] + "<|eot_id|>")
            if add_generation_prompt or i != last_user:
                parts.append("Assistant: ")
        else:
            parts.append(message["content"])  # the fork appends any other role's text as is
    return "".join(parts)


def render_falcon3(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
                   ) -> str:
    """The fork's "falcon3" format: ``<|role|>\ncontent\n`` per message."""
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def render_falcon_e(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
                    ) -> str:
    """The fork's "falcon_e" format: ``rolecontent\n`` per message."""
    text = "".join(f"{m['role']}{m['content']}\n" for m in messages)
    return text + ("assistant\n" if add_generation_prompt else "")


_CPP_SPACE = " \t\n\v\f\r"  # what C's isspace() trims in llama.cpp's trim()


def render_llama3(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
                  ) -> str:
    """llama.cpp's "llama3" format (BOS comes from the tokenizer, not the text)."""
    text = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
                   f"{m['content'].strip(_CPP_SPACE)}<|eot_id|>" for m in messages)
    if add_generation_prompt:
        text += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return text


BUILTIN_FORMATS: dict[str, Callable[[Sequence[Mapping[str, str]], bool], str]] = {
    "bitnet": render_bitnet,
    "falcon3": render_falcon3,
    "falcon_e": render_falcon_e,
    "llama3": render_llama3,
}


def builtin_format_for(metadata: Mapping[str, Any]) -> str:
    """The built-in format bitnet.cpp would use for a file without a chat template."""
    if metadata.get("general.architecture") in ("bitnet-b1.58", "bitnet-25"):
        return "bitnet"
    pre = metadata.get("tokenizer.ggml.pre")
    if pre == "falcon3":
        return "falcon3"
    if pre in ("falcon_e", "falcon-h1"):
        return "falcon_e"
    tokens = metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and "<|start_header_id|>" in tokens \
            and "<|end_header_id|>" in tokens:
        return "llama3"
    return "bitnet"


# ---------------------------------------------------------------------------------------------
# the jinja sandbox


class _ChatSandbox(ImmutableSandboxedEnvironment):
    """Raise on an unsafe attribute at once: the stock sandbox returns an Undefined that
    renders as "" when printed, which would hide an escape attempt."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:  # type: ignore[override]
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} "
                            f"objects is not allowed")


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    # Hugging Face's tojson: plain JSON, no HTML escaping (jinja's own escapes < > & ')
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys,
                      ensure_ascii=ensure_ascii)


@lru_cache(maxsize=1)
def _environment() -> _ChatSandbox:
    # trim_blocks / lstrip_blocks and loopcontrols as Hugging Face's apply_chat_template sets them
    env = _ChatSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as err:
        raise ChatTemplateError(f"chat template does not parse (line {err.lineno}): "
                                f"{err.message}") from None


# ---------------------------------------------------------------------------------------------
# rendering


def check_messages(messages: Any) -> list[dict[str, str]]:
    """``messages`` as a fresh list of {"role": str, "content": str, ...} dicts, or
    ChatTemplateError naming the first bad entry."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(f"messages must be a list of {{'role', 'content'}} dicts, "
                                f"got {type(messages).__name__}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"messages[{i}] must be a dict, got "
                                    f"{type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise ChatTemplateError(f"messages[{i}] has no {key!r}")
            if not isinstance(message[key], str):
                raise ChatTemplateError(f"messages[{i}][{key!r}] must be a str, got "
                                        f"{type(message[key]).__name__}")
        checked.append(dict(message))
    return checked


def chat_format(template: str | None, builtin: str) -> str | None:
    """The built-in format a file's chat renders with, or None for its own jinja template:
    ``builtin`` when it has none, the template itself when it names a built-in format, and
    "bitnet" for a template bitnet.cpp marks with BITNET."""
    if template is None:
        return builtin
    if template in BUILTIN_FORMATS:
        return template
    if BITNET_MARKER in template:
        return "bitnet"
    return None


def render_chat(messages: Sequence[Mapping[str, str]], template: str | None, *,
                bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True, builtin: str = "bitnet") -> str:
    """The prompt text for ``messages`` (a list of {"role", "content"} dicts).

    ``template`` is the file's ``tokenizer.chat_template``, or the name of a built-in format
    ("bitnet", "falcon3", "falcon_e", "llama3"); None renders the ``builtin`` format (the
    file's, from ``builtin_format_for``). ``bos_token`` / ``eos_token`` are the texts the
    template may write. Encode the result with ``parse_special=True`` so that texts such as
    ``<|eot_id|>`` become their tokens.
    """
    checked = check_messages(messages)
    fmt = chat_format(template, builtin)
    if fmt is not None:
        if fmt not in BUILTIN_FORMATS:
            raise ChatTemplateError(f"no built-in chat format {fmt!r}; built in: "
                                    f"{sorted(BUILTIN_FORMATS)}")
        return BUILTIN_FORMATS[fmt](checked, add_generation_prompt)
    assert template is not None  # chat_format names a built-in format for None
    compiled = _compile(template)
    try:
        return compiled.render(messages=checked, bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt)
    except SecurityError as err:
        raise ChatTemplateError(f"chat template rejected by the sandbox: {err}") from None
    except TemplateError as err:
        raise ChatTemplateError(f"chat template failed: {err}") from None
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as err:
        raise ChatTemplateError(f"chat template failed: {type(err).__name__}: {err}") from None
