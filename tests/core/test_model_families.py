"""Every ternary family's GGUF (docs/model-facts.md 1) through bitnet.load, against an
independent numpy forward pass (bitnet.testing.families): arch llama (TriLM TQ1_0/TQ2_0,
Falcon3 / Falcon-E / Llama3-8B-1.58 I2_S and F16) with llama.cpp's Q/K permutation for RoPE
NORM, arch bitnet (1bitLLM: head dims 96 and 100) and bitnet-b1.58. Runs on the reference
backend and, where installed, the cpu plugin; the GPU plugins run the same checks in their own
suites (bitnet.testing.model_checks)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet.core import loader
from bitnet.core.errors import GGUFError, ModelFormatError
from bitnet.core.gguf import open_gguf
from bitnet.convert.gguf_writer import encode_ternary, rewrite_gguf
from bitnet.testing.synthetic import llama_vocab
from bitnet.convert.weights import llama_permute
from bitnet.core.loader import permute_norm_to_neox
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import WeightFormat
from bitnet.testing.families import FAMILIES, Family, oracle_logits
from bitnet.testing.parity import clear_margin, cosine_rows

BY_NAME = {f.name: f for f in FAMILIES}


def _backends() -> list[str]:
    names = ["reference"]
    with pytest.MonkeyPatch.context() as mp:
        plugins = [n for n in os.environ.get("BITNET_PLUGINS", "").split(",") if n.strip()]
        mp.setenv("BITNET_PLUGINS", ",".join(dict.fromkeys([*plugins, "cpu"])))
        if any(r.backend == "cpu" and r.status == "ok" for r in bitnet.list_devices()):
            names.append("cpu")
    return names


BACKENDS = _backends()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f.name: f.write(root / f"{f.name}.gguf") for f in FAMILIES}


def _logits(path: Path, tokens: list[int], device: str, monkeypatch, **kw) -> np.ndarray:
    monkeypatch.setenv("BITNET_PLUGINS", "cpu")
    with bitnet.load(path, device=device, progress=False, **kw) as model:
        return model.logits(tokens)


def assert_matches(got: np.ndarray, want: np.ndarray, median: float = 0.999) -> None:
    """The issue's rule: median cosine >= 0.999, and the same argmax wherever the oracle's top-2
    margin is clear (random ternary models are chaotic: an ulp can move an int8 rounding)."""
    cos = cosine_rows(got, want)
    assert np.median(cos) >= median and cos.min() >= 0.99, cos
    clear = np.array([clear_margin(row) for row in want])
    bad = np.flatnonzero(clear & (got.argmax(1) != want.argmax(1)))
    assert bad.size == 0, f"argmax differs at clear-margin positions {bad.tolist()}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_family_matches_the_numpy_forward(family: Family, backend: str, files, monkeypatch):
    tokens = family.tokens()
    want = oracle_logits(files[family.name], tokens)
    got = _logits(files[family.name], tokens, backend, monkeypatch)
    assert got.shape == (len(tokens), family.n_vocab)
    assert_matches(got, want)


@pytest.mark.parametrize("name", [f.name for f in FAMILIES if f.arch == "llama"])
def test_rope_norm_on_stored_rows_equals_rotate_half_on_hf_rows(name: str, files) -> None:
    """The claim the loader rests on, checked on whole models: llama.cpp's RoPE NORM on the Q/K
    rows as the converter stored them gives HF's rotate-half on the rows in HF order."""
    tokens = BY_NAME[name].tokens()
    hf = oracle_logits(files[name], tokens, rope="hf")
    norm = oracle_logits(files[name], tokens, rope="norm")
    np.testing.assert_allclose(norm, hf, rtol=0, atol=1e-9 * np.abs(hf).max())


def test_without_the_permutation_the_llama_file_is_wrong(files, monkeypatch) -> None:
    """A negative control: the permutation at load is what makes arch llama right."""
    family = BY_NAME["llama3-8b-f16"]
    tokens = family.tokens()
    want = oracle_logits(files[family.name], tokens)
    monkeypatch.setattr(loader, "permute_norm_to_neox", lambda tensor, head_dim: tensor)
    got = _logits(files[family.name], tokens, "reference", monkeypatch)
    assert np.median(cosine_rows(got, want)) < 0.99


FORMATS = [WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0, WeightFormat.F16,
           WeightFormat.F32, WeightFormat.BF16, WeightFormat.Q8_0, WeightFormat.Q6_K]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.value)
@pytest.mark.parametrize("head_dim, n_heads", [(64, 4), (96, 2), (100, 2), (128, 3), (256, 2)])
def test_permutation_moves_whole_rows_of_every_format(fmt, head_dim, n_heads) -> None:
    """Permuting the stored bytes equals encoding the HF-order values: bit-exact for every
    format (an I2_S row is K/4 contiguous bytes; the tensor scale after the codes stays)."""
    rng = np.random.default_rng(head_dim + n_heads)
    cols = 512
    rows = head_dim * n_heads
    hf = rng.integers(-1, 2, (rows, cols)).astype(np.int8)  # [H*D, K] in HF order
    stored = llama_permute(hf, n_heads)
    assert not np.array_equal(stored, hf)
    scale = 0.01171875
    tensor = WeightTensor("blk.0.attn_q.weight", fmt, rows, cols,
                          encode_ternary(fmt, stored, scale))
    back = permute_norm_to_neox(tensor, head_dim)
    assert back.format is fmt and (back.rows, back.cols) == (rows, cols)
    np.testing.assert_array_equal(back.data, encode_ternary(fmt, hf, scale))


@pytest.mark.parametrize("name, counted, head", [
    ("trilm-tq2_0", "linear_ternary[tq2_0]", 0),
    ("falcon3-i2_s", "linear_ternary[i2_s]", 0),
    ("llama3-8b-f16", "linear_float[f16]", 1),  # + the F16 lm_head
])
def test_activation_quantization_follows_the_weight_type(name: str, counted: str, head: int,
                                                         files, monkeypatch) -> None:
    """I2_S: per-token int8 (bitnet.cpp); TQ: Q8_K per 256-block (llama.cpp); F16: none. The
    engine's logits sit on the oracle of the weight type's rule, not on the other rules."""
    family = BY_NAME[name]
    tokens = family.tokens()
    monkeypatch.setenv("BITNET_PLUGINS", "cpu")
    with bitnet.load(files[name], device="reference", progress=False) as model:
        got = model.logits(tokens)
        counts = model.transformer.ops.counts
    assert counts[counted] == 7 * family.n_layers + head
    rules = {"per_token": "i2_s", "q8_k": "tq", "none": "f16"}
    fmt = family.weights.value
    for rule, owner in rules.items():
        if fmt.startswith(owner):
            continue
        other = oracle_logits(files[name], tokens, act_quant=rule)
        # F16 runs no activation quantization whatever the oracle is asked
        if fmt == "f16":
            np.testing.assert_allclose(other, oracle_logits(files[name], tokens))
            continue
        assert np.median(cosine_rows(got, other)) < np.median(cosine_rows(got, oracle_logits(
            files[name], tokens)))


def test_ternarize_gives_a_float_llama_file_bitnet_semantics(files, monkeypatch) -> None:
    """F16 weights with ternarize=True run as I2_S with per-token int8 activations."""
    family = BY_NAME["llama3-8b-f16"]
    tokens = family.tokens()
    with bitnet.load(files[family.name], device="reference", progress=False,
                     ternarize=True) as model:
        got = model.logits(tokens)
        counts = model.transformer.ops.counts
    assert counts["linear_ternary[i2_s]"] == 7 * family.n_layers
    assert_matches(got, oracle_logits(files[family.name], tokens, act_quant="per_token"))


def test_llama_file_tensor_set(files) -> None:
    """As llama.cpp and bitnet.cpp write arch llama: no sub-norms; output.weight optional."""
    with open_gguf(files["trilm-tq2_0"]) as f:
        assert "output.weight" in f.tensors
        assert not [n for n in f.tensors if "sub_norm" in n]
    with open_gguf(files["falcon3-1b-i2_s"]) as f:
        assert "output.weight" not in f.tensors
    model = bitnet.load(files["falcon3-1b-i2_s"], device="reference", progress=False)
    with model:
        assert model.transformer.head is model.transformer.token_embd
        assert all(layer.attn_sub_norm.weight is None and layer.ffn_sub_norm.weight is None
                   for layer in model.transformer.layers)
        model.logits([1, 5, 7])
        counts = model.transformer.ops.counts
    # per layer: attn_norm and ffn_norm; then output_norm. SiLU gating, no relu2
    assert counts["rmsnorm"] == 2 * 2 + 1
    assert counts["silu_mul"] == 2 and "relu2_mul" not in counts


def test_a_sub_norm_in_a_llama_file_is_an_error(files, tmp_path) -> None:
    path = rewrite_gguf(files["falcon3-1b-i2_s"], tmp_path / "bad.gguf", tensors={
        "blk.0.attn_sub_norm.weight": (WeightFormat.F32, (512,), np.ones(512, "<f4"))})
    with pytest.raises(ModelFormatError, match="'blk.0.attn_sub_norm.weight'.*no sub-norms"):
        bitnet.load(path, device="reference", progress=False)


def test_unit_rope_freqs_change_nothing_and_others_are_refused(files, tmp_path,
                                                               monkeypatch) -> None:
    family = BY_NAME["falcon3-1b-i2_s"]
    tokens = family.tokens()
    plain = _logits(files[family.name], tokens, "reference", monkeypatch)
    ones = family.write(tmp_path / "ones.gguf", rope_freqs=[1.0] * 128)
    np.testing.assert_array_equal(_logits(ones, tokens, "reference", monkeypatch), plain)
    scaled = family.write(tmp_path / "scaled.gguf", rope_freqs=[1.0] * 120 + [8.0] * 8)
    with pytest.raises(ModelFormatError, match="'rope_freqs.weight'.*Llama-3.1-style RoPE "
                                               "scaling is not supported"):
        bitnet.load(scaled, device="reference", progress=False)


def _patch_ne0(path: Path, out: Path, name: str, old: int, new: int) -> Path:
    """Copy a GGUF file with one tensor's ne0 (row length) changed in its header."""
    raw = bytearray(path.read_bytes())
    at = raw.index(name.encode()) + len(name) + 4  # past the name and n_dims (u32)
    assert int.from_bytes(raw[at:at + 8], "little") == old
    raw[at:at + 8] = new.to_bytes(8, "little")
    out.write_bytes(bytes(raw))
    return out


@pytest.mark.parametrize("name, ne0, new, match", [
    ("falcon3-1b-i2_s", 768, 704, "'blk.0.ffn_down.weight'.*I2_S.*multiple of 128, got 704"),
    ("trilm-tq2_0", 768, 640, "'blk.0.ffn_down.weight'.*640 is not a multiple of the tq2_0"),
])
def test_a_row_length_the_format_cannot_hold_names_the_tensor(name, ne0, new, match, files,
                                                             tmp_path) -> None:
    path = _patch_ne0(files[name], tmp_path / "k.gguf", "blk.0.ffn_down.weight", ne0, new)
    with pytest.raises(GGUFError, match=match):
        bitnet.load(path, device="reference", progress=False)


def test_a_1bitllm_file_labelled_b158_runs_silu_unless_told(tmp_path, monkeypatch) -> None:
    """bitnet.cpp's newer converter writes 1bitLLM models as bitnet-b1.58 (docs/model-facts.md
    4.1): the SentencePiece vocabulary of 32002 marks them; SiLU, a warning; activation= wins."""
    family = Family("1bitllm-as-b158", "bitnet-b1.58", 256, 4, 4, 512, WeightFormat.I2_S,
                    tied=True, n_layers=1, n_vocab=32002, seed=11)
    path = family.write(tmp_path / "m.gguf", vocab=llama_vocab(32002))
    tokens = family.tokens(8)
    with pytest.warns(UserWarning, match="SiLU gating.*32002 tokens.*activation='relu2'"):
        silu = _logits(path, tokens, "reference", monkeypatch)
    assert_matches(silu, oracle_logits(path, tokens, activation="silu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relu2 = _logits(path, tokens, "reference", monkeypatch, activation="relu2")
    assert_matches(relu2, oracle_logits(path, tokens, activation="relu2"))
    assert np.median(cosine_rows(silu, relu2)) < 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_tensors_of_arch_bitnet_multiply_each_matmul(backend, files, tmp_path,
                                                          monkeypatch) -> None:
    """Older llama.cpp converters wrote sign-only weights plus blk.N.<linear>.scale {1}
    (docs/model-facts.md 4.2): each scales its matmul's output."""
    family = BY_NAME["1bitllm-large-tq2_0"]
    rng = np.random.default_rng(5)
    scales = {f"blk.{i}.{n}.scale": (WeightFormat.F32, (1,),
                                     np.array([rng.uniform(0.5, 2.0)], "<f4"))
              for i in range(family.n_layers) for n in loader.LINEAR_NAMES}
    path = rewrite_gguf(files[family.name], tmp_path / "scaled.gguf", tensors=scales)
    tokens = family.tokens()
    want = oracle_logits(path, tokens)
    assert np.median(cosine_rows(want, oracle_logits(files[family.name], tokens))) < 0.999
    assert_matches(_logits(path, tokens, backend, monkeypatch), want)
