"""The Python API contract: bitnet.load -> Model with logits, generate, chat, receipts."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bitnet
from bitnet.core.generate import ContextLengthError
from bitnet.testing.synthetic import make_synthetic_model
from bitnet.hal import WeightFormat
from tests.core.fixtures import model_path


@pytest.fixture(scope="module")
def model():
    return bitnet.load(model_path("tiny-b158-i2_s"), device="reference", progress=False)


def test_model_exposes_the_contract(model) -> None:
    assert model.backend.name == "reference"
    assert model.backend.device.name
    assert model.config.arch == "bitnet-b1.58" and model.config.n_layers == 2
    ids = model.tokenizer.encode("Hello world", add_bos=True)
    assert ids[0] == model.tokenizer.bos_id
    assert model.tokenizer.decode(ids) == "Hello world"
    logits = model.logits(ids)
    assert logits.shape == (len(ids), model.config.n_vocab) and logits.dtype == np.float32


def test_logits_are_from_a_fresh_context_every_time(model) -> None:
    a = model.logits([1, 5, 9])
    model.generate("something else", max_tokens=3, seed=1)
    b = model.logits([1, 5, 9])
    np.testing.assert_array_equal(a, b)


def test_same_seed_same_text_and_greedy_is_stable(model) -> None:
    kw = dict(max_tokens=12, temperature=0.9, seed=42, ignore_eos=True)
    assert model.generate("The", **kw) == model.generate("The", **kw)
    g1 = model.generate("The", max_tokens=8, temperature=0, ignore_eos=True)
    assert g1 == model.generate("The", max_tokens=8, temperature=0, ignore_eos=True)


def test_stream_yields_the_same_text_as_one_shot(model) -> None:
    kw = dict(max_tokens=16, temperature=0.7, seed=3, ignore_eos=True)
    pieces = list(model.generate("Once", stream=True, **kw))
    assert "".join(pieces) == model.generate("Once", **kw)
    assert model.last_stats.generated_tokens == 16
    assert model.last_stats.finish_reason == "length"


def test_max_tokens_zero_and_token_id_prompts(model) -> None:
    assert model.generate([1, 20, 30], max_tokens=0) == ""
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate([1, 10**6], max_tokens=1)


def test_context_length_is_enforced_with_a_clear_error(model) -> None:
    too_long = [1] * (model.transformer.n_ctx + 1)
    with pytest.raises(ContextLengthError, match="do not fit the context"):
        model.logits(too_long)
    with pytest.raises(ValueError, match="n_ctx must be in"):
        bitnet.load(model_path("tiny-b158-i2_s"), device="reference", n_ctx=10**7,
                    progress=False)


def test_generation_stops_at_the_end_of_the_context() -> None:
    m = bitnet.load(model_path("tiny-b158-i2_s"), device="reference", n_ctx=12,
                    progress=False)
    m.generate([1, 2, 3, 4], max_tokens=100, ignore_eos=True, temperature=0)
    assert m.last_stats.finish_reason == "length"
    assert m.last_stats.prompt_tokens + m.last_stats.generated_tokens <= 13


def test_chat_uses_the_builtin_template_and_returns_text(model) -> None:
    reply = model.chat([{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0)
    assert isinstance(reply, str)
    with pytest.raises(Exception, match="role|content|message"):
        model.chat([{"nope": 1}], max_tokens=1)


def test_receipt_records_what_ran(model, tmp_path) -> None:
    model.generate("Hello", max_tokens=4, temperature=0.5, seed=9, ignore_eos=True)
    r = model.receipt()
    json.dumps(r)
    assert r["backend"] == "reference" and r["seed"] == 9 and len(r["tokens"]) == 4
    assert r["model"]["sha256"] and len(r["model"]["sha256"]) == 64
    assert r["kernels"]["linear_ternary[i2_s]"] > 0
    assert r["kernels"]["attention"] == 2 * 4  # 2 layers x (1 prefill + 3 decode steps)
    assert "bitnet" in r["versions"]
    assert r["model"]["block"] == "bitnet (sub-norms)" and r["model"]["activation"] == "relu2"
    assert "bitnet-b1.58" in r["model"]["activation_source"]


@pytest.mark.parametrize("fmt", [WeightFormat.TQ2_0, WeightFormat.TQ1_0, WeightFormat.I2_S])
def test_synthetic_models_of_every_ternary_format_agree(tmp_path, fmt) -> None:
    """The same ternary values in I2_S and TQ files: the integer parts agree, so logits differ
    only by the activation quantization (per-token vs per-block), a small amount."""
    kw = dict(d_model=256, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=512, n_vocab=300,
              n_ctx=64, seed=5)
    m = bitnet.load(make_synthetic_model(tmp_path / f"m-{fmt.value}.gguf", weight_format=fmt,
                                         **kw), device="reference", progress=False)
    f16 = bitnet.load(make_synthetic_model(tmp_path / "m-f16.gguf",
                                           weight_format=WeightFormat.F16, **kw),
                      device="reference", progress=False)
    ids = [1, 7, 42, 99, 150, 3]
    a, b = m.logits(ids), f16.logits(ids)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.98


def test_ternarize_runs_a_float_file_on_the_ternary_path(tmp_path) -> None:
    path = model_path("tiny-b158-f16")
    plain = bitnet.load(path, device="reference", progress=False)
    tern = bitnet.load(path, device="reference", ternarize=True, progress=False)
    i2s = bitnet.load(model_path("tiny-b158-i2_s"), device="reference", progress=False)
    ids = [1, 111, 5, 238, 316]
    tern.logits(ids)
    plain.logits(ids)
    assert "linear_ternary[i2_s]" in tern.transformer.ops.counts
    assert "linear_ternary[i2_s]" not in plain.transformer.ops.counts
    assert plain.transformer.ops.counts["linear_float[f16]"] > 0
    np.testing.assert_array_equal(tern.logits(ids), i2s.logits(ids))


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="no such model file"):
        bitnet.load("/nonexistent/model.gguf")


def test_a_continuation_keeps_the_space_between_prompt_and_first_word() -> None:
    """The demo model's SentencePiece vocabulary marks word starts with a prefix space: a
    continuation must print it ("Elizabeth" + " felt"), while decode() of a whole text drops
    only the very first one."""
    m = bitnet.load(device="reference", progress=False)
    prompt = "Elizabeth"
    text = m.generate(prompt, max_tokens=12, temperature=0, ignore_eos=True)
    ids = m.tokenizer.encode(prompt) + m.last_stats.tokens
    assert prompt + text == m.tokenizer.decode(ids)
