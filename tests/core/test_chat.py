"""bitnet.core.chat: the BitNet fork's built-in format, Hugging Face style templates in the
jinja2 sandbox, and clear ChatTemplateErrors for bad messages, broken templates and escapes."""

from __future__ import annotations

import pytest

from bitnet.core.chat import (ChatTemplateError, builtin_format_for, check_messages,
                              render_bitnet, render_chat)

# A LLaMA-3 style template, written here in the form Hugging Face tokenizer configs use.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "2+2?"},
]


def test_builtin_bitnet_format_matches_the_fork() -> None:
    # separators as in llama_chat_apply_template's "bitnet" case of the BitNet llama.cpp fork
    assert render_chat(CONVERSATION, None) == (
        "System: Be brief.User: Hi<|eot_id|>Assistant: Hello.User: 2+2?<|eot_id|>Assistant: ")
    assert render_chat([{"role": "user", "content": "Hi"}], None) == (
        "User: Hi<|eot_id|>Assistant: ")
    assert render_chat(CONVERSATION, None, add_generation_prompt=False) == (
        "System: Be brief.User: Hi<|eot_id|>Assistant: Hello.User: 2+2?<|eot_id|>")
    assert render_chat([], None) == ""


def test_placeholder_bitnet_template_uses_builtin_format() -> None:
    # the converters' placeholder template contains "BITNET"; bitnet.cpp ignores its text
    placeholder = ("{% for message in messages %}{{ 'Human: ' + message['content'] + "
                   "'\\n\\nBITNETAssistant: ' + eos_token }}{% endfor %}")
    assert render_chat(CONVERSATION, placeholder) == render_bitnet(CONVERSATION)


def test_jinja_template_renders_like_hugging_face() -> None:
    text = render_chat(CONVERSATION[:2], LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>")
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief."
                    "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    no_prompt = render_chat(CONVERSATION[:2], LLAMA3_TEMPLATE, add_generation_prompt=False)
    assert no_prompt.endswith("Hi<|eot_id|>")


def test_template_helpers() -> None:
    checks = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first!') }}"
              "{% endif %}{{ messages | tojson }}")
    assert render_chat([{"role": "user", "content": "<é>"}], checks) == (
        '[{"role": "user", "content": "<é>"}]')  # no HTML escaping, no \\u escapes
    with pytest.raises(ChatTemplateError, match="user first!"):
        render_chat([{"role": "system", "content": "x"}], checks)
    year = render_chat([], "{{ strftime_now('%Y') }}")
    assert year.isdigit() and len(year) == 4
    # loop controls and trim_blocks, as Hugging Face enables them
    loop = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}\n{{ m.role }}\n" \
           "{% endfor %}"
    assert render_chat(CONVERSATION, loop) == "system\n"


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ ''['__class__'] }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ self._TemplateReference__context }}",
    "{{ messages.append({'role': 'x', 'content': 'y'}) }}",
    "{% set _ = messages[0].update({'role': 'x'}) %}",
    "{{ messages.pop() }}",
])
def test_sandbox_escapes_raise(template: str) -> None:
    with pytest.raises(ChatTemplateError, match="sandbox") as info:
        render_chat(CONVERSATION, template)
    assert "not allowed" in str(info.value) or "unsafe" in str(info.value)


def test_template_failures_are_chat_template_errors() -> None:
    with pytest.raises(ChatTemplateError, match="does not parse"):
        render_chat(CONVERSATION, "{% for m in messages %}")
    with pytest.raises(ChatTemplateError, match="failed"):
        render_chat(CONVERSATION, "{{ messages[10]['role'] | upper }}{{ 1 / 0 }}")
    with pytest.raises(ChatTemplateError, match="range"):
        render_chat(CONVERSATION, "{% for i in range(10**9) %}{% endfor %}")


@pytest.mark.parametrize("messages, message", [
    ("hello", "must be a list"),
    ({"role": "user", "content": "x"}, "must be a list"),
    ([["user", "x"]], r"messages\[0\] must be a dict"),
    ([{"role": "user"}], "has no 'content'"),
    ([{"content": "x"}], "has no 'role'"),
    ([{"role": "user", "content": None}], r"\['content'\] must be a str"),
    ([{"role": 1, "content": "x"}], r"\['role'\] must be a str"),
])
def test_bad_messages(messages, message: str) -> None:
    with pytest.raises(ChatTemplateError, match=message):
        render_chat(messages, None)
    with pytest.raises(ChatTemplateError, match=message):
        render_chat(messages, LLAMA3_TEMPLATE)


def test_messages_are_copied_not_shared() -> None:
    original = [{"role": "user", "content": "x", "name": "me"}]
    checked = check_messages(original)
    assert checked == original and checked[0] is not original[0]


# ---------------------------------------------------------------------------------------------
# bitnet.cpp's other built-in formats, and which one a file without a template gets


def test_builtin_falcon3_format_matches_the_fork() -> None:
    # llama_chat_apply_template's "falcon3" case: "<|role|>\n" + content + "\n" per message
    assert render_chat(CONVERSATION, "falcon3") == (
        "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello.\n<|user|>\n2+2?\n"
        "<|assistant|>\n")
    assert render_chat(CONVERSATION, None, builtin="falcon3",
                       add_generation_prompt=False).endswith("<|user|>\n2+2?\n")


def test_builtin_falcon_e_format_matches_the_fork() -> None:
    assert render_chat(CONVERSATION, "falcon_e") == (
        "systemBe brief.\nuserHi\nassistantHello.\nuser2+2?\nassistant\n")
    assert render_chat(CONVERSATION, None, builtin="falcon_e",
                       add_generation_prompt=False) == (
        "systemBe brief.\nuserHi\nassistantHello.\nuser2+2?\n")


def test_builtin_llama3_format_matches_llama_cpp() -> None:
    messages = [{"role": "system", "content": "  Be brief.\n"}, {"role": "user", "content": "Hi"}]
    expected = ("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert render_chat(messages, "llama3") == expected
    assert render_chat(messages, None, builtin="llama3") == expected
    # the file's own LLaMA-3 jinja (with its BOS) gives the same text after the BOS
    assert render_chat(messages, LLAMA3_TEMPLATE, bos_token="<s>") == "<s>" + expected
    with pytest.raises(ChatTemplateError, match="no built-in chat format"):
        render_chat(messages, None, builtin="chatml")


def _meta(arch: str, pre: str | None, tokens: list[str]) -> dict:
    meta = {"general.architecture": arch, "tokenizer.ggml.tokens": tokens}
    if pre is not None:
        meta["tokenizer.ggml.pre"] = pre
    return meta


LLAMA3_VOCAB = ["a", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]


@pytest.mark.parametrize("meta, expected", [
    (_meta("bitnet-b1.58", "llama-bpe", LLAMA3_VOCAB), "bitnet"),  # 2B-4T: BitNet's own format
    (_meta("bitnet-25", None, LLAMA3_VOCAB), "bitnet"),
    (_meta("llama", "falcon3", ["a", "<|assistant|>"]), "falcon3"),  # Falcon3-1.58bit
    (_meta("llama", "falcon_e", ["a"]), "falcon_e"),  # Falcon-E as bitnet.cpp converts it
    (_meta("llama", "falcon-h1", ["a"]), "falcon_e"),  # Falcon-E as llama.cpp converts it
    (_meta("llama", "llama-bpe", LLAMA3_VOCAB), "llama3"),  # Llama3-8B-1.58
    (_meta("llama", "olmo", ["a", "b"]), "bitnet"),  # TriLM: a base model
    (_meta("bitnet", "default", ["<unk>", "<s>", "</s>"]), "bitnet"),  # 1bitLLM
])
def test_builtin_format_for_each_family(meta: dict, expected: str) -> None:
    assert builtin_format_for(meta) == expected


def test_real_templates_still_win_over_builtins() -> None:
    # a file's real jinja runs in the sandbox whatever the built-in default would be
    assert render_chat(CONVERSATION[:2], LLAMA3_TEMPLATE, builtin="falcon3").startswith(
        "<|start_header_id|>system")
    jinja = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    assert render_chat(CONVERSATION[:2], jinja, builtin="llama3") == (
        "<|system|>Be brief.<|user|>Hi")
