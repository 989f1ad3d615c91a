"""Every family: a checkpoint stored as the real one is, converted with ``bitnet convert``
(default type), against transformers' own forward pass (docs/model-facts.md 8).

Criteria (the fixtures' rule, shared/fixtures/README.md): median cosine >= 0.999 over positions
and the same argmax wherever the reference's top-2 margin is clear. Random ternary models are
chaotic (an f16 KV cache against torch's f32 can flip one int8 rounding and move a position), so
single positions may drift; the median and the clear-margin argmaxes may not.

- Engine: bitnet on every available backend (reference, and cpu when installed) for the
  converted file.
- Oracle: tests/convert/llama_oracle.py, a numpy forward of the converted llama file as
  llama.cpp/bitnet.cpp run it (I2_S: per-token int8; TQ: Q8_K per 256 block). TriLM's TQ2_0
  file is checked against transformers with Q8_K activations injected by forward pre-hooks (what
  llama.cpp does to its inputs); its F16 file against plain transformers.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the transformers reference needs torch "
                    "(scripts/test.sh installs it)")
pytest.importorskip("transformers", reason="the reference forward pass is transformers' "
                    "(scripts/test.sh installs it)")

import bitnet  # noqa: E402
from bitnet.cli.main import main  # noqa: E402
from bitnet.core.gguf import open_gguf  # noqa: E402
from tests.convert.checkpoints import BUILDERS, reference_logits  # noqa: E402
from tests.convert.llama_oracle import llama_logits  # noqa: E402
from bitnet.testing.parity import clear_margin, cosine_rows  # noqa: E402
from tests.core.test_fixtures import BACKENDS  # noqa: E402

pytestmark = pytest.mark.slow  # transformers loads: ~1-5 s per family

IDS = [1, 7, 42, 3, 99, 150, 200, 17, 250, 60, 5, 123]
LLAMA = ("falcon3", "falcon-e", "llama3", "falcon-e-bf16", "trilm")
# family -> (arch, tokenizer.ggml.pre, untied output, linear type)
EXPECTED = {
    "bitnet-2b-packed": ("bitnet-b1.58", "llama-bpe", False, "I2_S"),
    "bitnet-2b-bf16": ("bitnet-b1.58", "llama-bpe", False, "I2_S"),
    "1bitllm": ("bitnet", "default", False, "I2_S"),
    "falcon3": ("llama", "falcon3", False, "I2_S"),
    "falcon-e": ("llama", "falcon_e", True, "I2_S"),
    "llama3": ("llama", "llama-bpe", True, "I2_S"),
    "falcon-e-bf16": ("llama", "falcon_e", True, "I2_S"),
    "trilm": ("llama", "gpt-2", True, "TQ2_0"),
}
_converted: dict = {}
_references: dict = {}


def converted(checkpoints, family: str, fmt: str | None = None):
    """(Built, path of the file `bitnet convert` wrote)."""
    key = (family, fmt)
    built = checkpoints(family)
    if key not in _converted:
        out = built.path.parent / f"{family}-{fmt or 'default'}.gguf"
        argv = ["convert", str(built.path), "-o", str(out)] + (["--type", fmt] if fmt else [])
        assert main(argv) == 0
        _converted[key] = out
    return built, _converted[key]


def reference(built, q8k: bool = False) -> np.ndarray:
    key = (built.family, q8k)
    if key not in _references:
        _references[key] = reference_logits(built.reference_dir, IDS, q8k_activations=q8k)
    return _references[key]


def assert_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    cos = cosine_rows(got, ref)
    assert np.median(cos) >= 0.999, f"{what}: median cosine {np.median(cos):.6f} ({cos})"
    for pos, row in enumerate(ref):
        if clear_margin(row):
            assert got[pos].argmax() == row.argmax(), f"{what}: argmax differs at {pos}"


@pytest.mark.parametrize("family", list(BUILDERS))
def test_file_is_laid_out_as_the_peers_write_it(checkpoints, family) -> None:
    built, path = converted(checkpoints, family)
    arch, pre, untied, linear_type = EXPECTED[family]
    with open_gguf(path) as f:
        meta = f.metadata
        types = {name: info.type_name.upper() for name, info in f.tensors.items()}
    assert meta["general.architecture"] == arch
    assert meta["tokenizer.ggml.pre"] == pre
    assert len(meta["tokenizer.ggml.tokens"]) == built.n_vocab == meta[f"{arch}.vocab_size"]
    n_layers = meta[f"{arch}.block_count"]
    names = {"token_embd.weight", "output_norm.weight"} | ({"output.weight"} if untied else set())
    per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                 "ffn_gate", "ffn_up", "ffn_down"]
    if arch != "llama":
        per_layer += ["attn_sub_norm", "ffn_sub_norm"]
    names |= {f"blk.{i}.{n}.weight" for i in range(n_layers) for n in per_layer}
    assert set(types) == names
    assert types["token_embd.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.1.ffn_down.weight"] == linear_type
    for key in ("context_length", "embedding_length", "feed_forward_length",
                "rope.dimension_count", "attention.head_count", "attention.head_count_kv",
                "attention.layer_norm_rms_epsilon", "rope.freq_base"):
        assert f"{arch}.{key}" in meta, key
    assert meta["general.quantization_version"] == 2
    assert meta["general.file_type"] == {"I2_S": 40, "TQ2_0": 37}[linear_type]
    if arch == "bitnet":
        assert meta["bitnet.hidden_activation"] == "silu"  # 1bitLLM gates with SiLU


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("family", list(BUILDERS))
def test_engine_matches_transformers(checkpoints, family, device) -> None:
    built, path = converted(checkpoints, family)
    with bitnet.load(path, device=device, progress=False) as model:
        got = model.logits(IDS)
    # TQ files run Q8_K activations, as llama.cpp does with them
    ref = reference(built, q8k=built.default_type == "tq2_0")
    assert_close(got, ref, f"{family} on {device}")


@pytest.mark.parametrize("family", LLAMA)
def test_llama_file_means_what_transformers_computes(checkpoints, family) -> None:
    built, path = converted(checkpoints, family)
    q8k = built.default_type == "tq2_0"
    assert_close(llama_logits(path, IDS), reference(built, q8k=q8k), family)


@pytest.mark.filterwarnings("ignore:.*not ternary-valued")
def test_trilm_f16_file_is_the_plain_float_model(checkpoints) -> None:
    built, path = converted(checkpoints, "trilm", "f16")
    assert_close(llama_logits(path, IDS), reference(built), "trilm f16")


# (family, type) llama.cpp can load: arch llama in TQ1_0 / TQ2_0 / F16 (head dims 128 and 256),
# arch bitnet (1bitLLM) in F16 (I2_S is not a type upstream llama.cpp knows)
PEER_FILES = [("trilm", None), ("trilm", "tq1_0"), ("trilm", "f16"), ("llama3", "tq2_0"),
              ("falcon3", "tq2_0"), ("falcon-e", "f16"), ("1bitllm", "f16")]


@pytest.mark.filterwarnings("ignore:.*not ternary-valued")  # TriLM F16: several scales
@pytest.mark.parametrize("family,fmt", PEER_FILES)
def test_llama_cpp_loads_the_file_and_agrees_with_bitnet(checkpoints, family, fmt) -> None:
    """The peer runtime that runs TQ and F16 files: llama.cpp (llama-cpp-python) on our
    converted file against bitnet's reference backend on the same file (same semantics:
    Q8_K activations for TQ, none for F16)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed "
                        "(scripts/test.sh installs it)")
    from tests.crosscheck.llama_cpp_runner import LlamaCppModel

    _, path = converted(checkpoints, family, fmt)
    peer = LlamaCppModel(path, n_ctx=64)
    try:
        theirs = peer.logits(IDS)
    finally:
        peer.close()
    with bitnet.load(path, device="reference", progress=False) as model:
        ours = model.logits(IDS)
    assert_close(ours, theirs, f"{family} {fmt or 'default'}: bitnet vs llama.cpp")


def dequantized(path, name: str) -> np.ndarray:
    from bitnet.formats import dequantize
    from bitnet.hal.backend import WeightTensor

    with open_gguf(path) as f:
        info = f.tensors[name]
        tensor = WeightTensor(name, info.format, info.shape[1], info.shape[0],
                              f.tensor_bytes(name), 1.0)
        return dequantize(tensor)


@pytest.mark.parametrize("fmt", ["tq1_0", "tq2_0", "f16"])
def test_other_types_of_a_bitnet_checkpoint(checkpoints, fmt) -> None:
    """--type tq1_0 / tq2_0 / f16 of the 2B-4T packed checkpoint hold the I2_S file's weights
    (TQ: its scale rounded to f16 per block) and run; the F16 file run with BitNet semantics
    (``ternarize=True``: the stored ternary x scale values, per-token int8 activations) is the
    HF model again."""
    built, path = converted(checkpoints, "bitnet-2b-packed", fmt)
    _, i2s = converted(checkpoints, "bitnet-2b-packed")
    for name in ("blk.0.attn_q.weight", "blk.1.ffn_down.weight"):
        np.testing.assert_allclose(dequantized(path, name), dequantized(i2s, name), rtol=1e-3)
    with bitnet.load(path, device="reference", progress=False,
                     ternarize=fmt == "f16") as model:
        logits = model.logits(IDS)
    assert np.all(np.isfinite(logits))
    if fmt == "f16":
        assert_close(logits, reference(built), "2b packed as f16, ternarized")
