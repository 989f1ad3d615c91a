"""Checkpoints the converter cannot convert as asked: each a clear error naming the cause, and
never a file (or a temporary file) left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.cli.main import main
from bitnet.convert import ConvertError, convert_checkpoint
from bitnet.convert.safetensors_file import SafetensorsFile
from tests.convert.checkpoints import absmean, bpe_tokenizer, pack_hf

save_file = pytest.importorskip("safetensors.numpy").save_file


def checkpoint(root: Path, kind: str = "bitnet", d_ff: int = 512, layers: int = 1,
               config: dict | None = None) -> Path:
    """A tiny checkpoint (numpy-written: f16 floats, uint8 packed): ``kind`` "bitnet" (2B-4T
    packed), "trilm" (fp16 ternary x two scales per tensor) or "llama" (packed, bitlinear)."""
    path = root / kind
    path.mkdir()
    n = bpe_tokenizer(path, "llama3", 280, ["<|begin_of_text|>"], "<|begin_of_text|>",
                      "<|begin_of_text|>")
    d, heads, kv = 256, 2, 1
    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((n, d)).astype(np.float16),
               "model.norm.weight": np.ones(d, np.float16)}
    linears = {"self_attn.q_proj": (d, d), "self_attn.k_proj": (128 * kv, d),
               "self_attn.v_proj": (128 * kv, d), "self_attn.o_proj": (d, d),
               "mlp.gate_proj": (d_ff, d), "mlp.up_proj": (d_ff, d), "mlp.down_proj": (d, d_ff)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = np.ones(d, np.float16)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(d, np.float16)
        if kind == "bitnet":
            tensors[p + "self_attn.attn_sub_norm.weight"] = np.ones(d, np.float16)
            tensors[p + "mlp.ffn_sub_norm.weight"] = np.ones(d_ff, np.float16)
        for name, shape in linears.items():
            values, scale = absmean(rng.standard_normal(shape).astype(np.float32))
            if kind == "trilm":
                scales = np.where(np.arange(shape[0]) < shape[0] // 2, 0.03, 0.05)
                tensors[p + name + ".weight"] = (values * scales[:, None]).astype(np.float16)
            else:
                tensors[p + name + ".weight"] = pack_hf(values)
                tensors[p + name + ".weight_scale"] = np.array([scale], np.float16)
    arch = "BitNetForCausalLM" if kind == "bitnet" else "LlamaForCausalLM"
    cfg = {"architectures": [arch], "hidden_size": d, "intermediate_size": d_ff,
           "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "vocab_size": n, "rms_norm_eps": 1e-5,
           "hidden_act": "relu2" if kind == "bitnet" else "silu", "tie_word_embeddings": True,
           "max_position_embeddings": 256}
    if kind != "trilm":
        linear_class = "autobitlinear" if kind == "bitnet" else "bitlinear"
        cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": linear_class}
    cfg.update(config or {})
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "model.safetensors"))
    return path


def assert_fails(src: Path, out: Path, match: str, **kwargs) -> None:
    with pytest.raises(ConvertError, match=match):
        convert_checkpoint(src, out, progress=False, **kwargs)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_good_checkpoint_converts(tmp_path) -> None:
    out = convert_checkpoint(checkpoint(tmp_path), tmp_path / "ok.gguf", progress=False)
    assert out.is_file() and [p.suffix for p in tmp_path.iterdir() if p.is_file()] == [".gguf"]


def test_unknown_architecture(tmp_path) -> None:
    src = checkpoint(tmp_path, config={"architectures": ["MistralForCausalLM"]})
    assert_fails(src, tmp_path / "o.gguf", "architectures.0. is 'MistralForCausalLM'")


def test_missing_tensor(tmp_path) -> None:
    src = checkpoint(tmp_path, layers=2, config={"num_hidden_layers": 3})
    assert_fails(src, tmp_path / "o.gguf", "tensor 'model.layers.2.input_layernorm.weight' "
                 "is missing")


def test_unexpected_tensor(tmp_path) -> None:
    src = checkpoint(tmp_path, layers=2, config={"num_hidden_layers": 1})
    assert_fails(src, tmp_path / "o.gguf", "tensor 'model.layers.1.*has no place")


@pytest.mark.parametrize("quant, match", [
    ({"quant_method": "gptq", "bits": 4}, "quant_method is 'gptq'"),
    ({"quant_method": "bitnet", "linear_class": "fancylinear"}, "linear_class is 'fancylinear'"),
    ({"quant_method": "bitnet", "use_rms_norm": True}, "use_rms_norm"),
])
def test_unknown_quantization(tmp_path, quant, match) -> None:
    src = checkpoint(tmp_path, config={"quantization_config": quant})
    assert_fails(src, tmp_path / "o.gguf", match)


@pytest.mark.parametrize("config, match", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "RoPE scaling 'llama3'"),
    ({"head_dim": 64}, "head_dim 64 != hidden_size / num_attention_heads = 128"),
    ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
    ({"num_key_value_heads": 3}, "num_attention_heads 2 must divide"),
    ({"vocab_size": 0}, "'vocab_size' must be an integer in 1.."),
])
def test_unsupported_config(tmp_path, config, match) -> None:
    assert_fails(checkpoint(tmp_path, config=config), tmp_path / "o.gguf", match)


def test_per_channel_weight_scale(tmp_path) -> None:
    src = checkpoint(tmp_path)
    f = SafetensorsFile(src / "model.safetensors")
    tensors = {name: np.array(f.tensor(name)) for name in f.entries}
    tensors["model.layers.0.self_attn.q_proj.weight_scale"] = np.ones(4, np.float16)
    save_file(tensors, str(src / "model.safetensors"))
    assert_fails(src, tmp_path / "o.gguf", "q_proj.weight_scale' has 4 values; .*per-channel")


def test_untied_head_cannot_be_arch_bitnet(tmp_path) -> None:
    """1bitLLM (arch bitnet): llama.cpp's arch has no output tensor, so an lm_head that differs
    from the embedding is refused; one equal to it is dropped."""
    src = checkpoint(tmp_path, config={"architectures": ["BitnetForCausalLM"], "hidden_act":
                                       "silu", "quantization_config": None,
                                       "tie_word_embeddings": False})
    f = SafetensorsFile(src / "model.safetensors")
    tensors = {name: np.array(f.tensor(name)) for name in f.entries}
    for name in list(tensors):  # 1bitLLM: latent fp16 weights, its own sub-norm names
        if name.endswith("weight_scale"):
            del tensors[name]
        elif name.endswith("_proj.weight"):
            rows = tensors[name].shape[0] * 4
            tensors[name] = np.ones((rows, tensors[name].shape[1]), np.float16)
    for old, new in (("attn_sub_norm", "inner_attn_ln"), ("ffn_sub_norm", "ffn_layernorm")):
        key = next(k for k in tensors if old in k)
        tensors[key.replace(old, new)] = tensors.pop(key)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    save_file(tensors, str(src / "model.safetensors"))
    assert convert_checkpoint(src, tmp_path / "tied.gguf", progress=False).is_file()
    tensors["lm_head.weight"][0, 0] += 1
    save_file(tensors, str(src / "model.safetensors"))
    assert_fails(src, tmp_path / "o.gguf", "'lm_head.weight' differs from the embedding")


def test_packed_weights_without_a_quantization_config(tmp_path) -> None:
    src = checkpoint(tmp_path, config={"quantization_config": None})
    assert_fails(src, tmp_path / "o.gguf", "uint8 .packed. but config.json has no "
                 "quantization_config")


def test_output_exists_unless_forced(tmp_path) -> None:
    src = checkpoint(tmp_path)
    out = tmp_path / "o.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(ConvertError, match="exists; pass --force"):
        convert_checkpoint(src, out, progress=False)
    assert out.read_bytes() == b"precious"
    convert_checkpoint(src, out, force=True, progress=False)
    assert out.read_bytes()[:4] == b"GGUF"


def test_row_length_a_type_cannot_hold(tmp_path) -> None:
    # d_ff 640: ffn_down's rows are 640 long, a multiple of 128 (I2_S) but not of 256 (TQ)
    src = checkpoint(tmp_path, d_ff=640)
    assert_fails(src, tmp_path / "o.gguf", r"blk.0.ffn_down.weight \(model.layers.0.mlp."
                 r"down_proj.weight\): row length 640 is not a multiple of 256, which TQ2_0 "
                 r"needs; use --type i2_s or --type f16", fmt="tq2_0")
    (tmp_path / "b").mkdir()
    src = checkpoint(tmp_path / "b", d_ff=576)
    assert_fails(src, tmp_path / "o.gguf", "row length 576 is not a multiple of 128, which "
                 "I2_S needs; use --type f16")


def test_several_scales_cannot_be_i2_s(tmp_path) -> None:
    src = checkpoint(tmp_path, "trilm")
    assert_fails(src, tmp_path / "o.gguf", "blk.0.attn_q.weight: its values have more than "
                 "one scale .*use --type tq2_0", fmt="i2_s")
    out = convert_checkpoint(src, tmp_path / "ok.gguf", progress=False)  # default TQ2_0
    assert out.is_file()


def test_corrupt_packed_code_fails_midway_and_leaves_nothing(tmp_path) -> None:
    src = checkpoint(tmp_path, layers=2)
    f = SafetensorsFile(src / "model.safetensors")
    tensors = {name: np.array(f.tensor(name)) for name in f.entries}
    tensors["model.layers.1.mlp.down_proj.weight"][0, 0] = 0xFF  # code 3 four times
    save_file(tensors, str(src / "model.safetensors"))
    assert_fails(src, tmp_path / "o.gguf", "'model.layers.1.mlp.down_proj.weight': packed code 3")


def test_truncated_safetensors(tmp_path) -> None:
    src = checkpoint(tmp_path)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[:len(data) // 2])
    assert_fails(src, tmp_path / "o.gguf", "model.safetensors: tensor .* do not fit")


def test_not_a_checkpoint(tmp_path) -> None:
    assert_fails(tmp_path, tmp_path / "o.gguf", "config.json is missing")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    assert_fails(tmp_path, tmp_path / "o.gguf",
                 r"no \*.safetensors files \(found pytorch_model.bin: PyTorch pickles")


def test_cli_prints_one_line(tmp_path, capsys) -> None:
    src = checkpoint(tmp_path, config={"architectures": ["GPT2LMHeadModel"]})
    assert main(["convert", str(src), "-o", str(tmp_path / "o.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bitnet: error:") and "GPT2LMHeadModel" in err[0]


def test_tl1_files_are_refused_with_the_reason(tmp_path, capsys) -> None:
    """bitnet.cpp's TL1/TL2 files are not supported: `bitnet run` says so in one line."""
    from tests.core.test_gguf import gguf_bytes, kv_str, tensor_info

    path = tmp_path / "tl1.gguf"
    path.write_bytes(gguf_bytes([kv_str("general.architecture", "bitnet-b1.58")],
                                [tensor_info("blk.0.attn_q.weight", [256, 4], 38, 0)],
                                b"\0" * 4096))
    assert main(["run", "-m", str(path), "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert "TL1" in err and "convert to I2_S" in err


def test_memory_holds_one_tensor_not_the_checkpoint(tmp_path) -> None:
    """Tensors stream from memory-mapped files into the writer one at a time: the Python-side
    peak stays far below the checkpoint's size (12 layers of fp16 here, ~24 MB)."""
    import tracemalloc

    src = checkpoint(tmp_path, "trilm", d_ff=1024, layers=12)
    size = (src / "model.safetensors").stat().st_size
    tracemalloc.start()
    try:
        convert_checkpoint(src, tmp_path / "o.gguf", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 20e6 and peak < size / 3, (size, peak)


def test_progress_bar_counts_tensors(tmp_path, capsys) -> None:
    convert_checkpoint(checkpoint(tmp_path), tmp_path / "o.gguf", progress=True)
    err = capsys.readouterr().err
    assert "converting bitnet" in err and "/13 " in err  # 2 + 1 layer x (4 norms + 7)


_JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6),
                         st.floats(allow_nan=True), st.text(max_size=8),
                         st.lists(st.integers(0, 3), max_size=2),
                         st.dictionaries(st.sampled_from(["type", "id", "content"]),
                                         st.integers(0, 3), max_size=2))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return checkpoint(tmp_path_factory.mktemp("fuzz"))


def _mutated_copy(src: Path, dst: Path, file: str, path: list, value) -> None:
    import shutil

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    spec = json.loads((dst / file).read_text())
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (dst / file).write_text(json.dumps(spec))


CONFIG_KEYS = ["architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "vocab_size", "rms_norm_eps",
               "hidden_act", "tie_word_embeddings", "max_position_embeddings",
               "quantization_config", "rope_theta", "head_dim", "rope_scaling"]
TOKENIZER_PATHS = [["model"], ["model", "vocab"], ["model", "merges"], ["model", "type"],
                   ["added_tokens"], ["pre_tokenizer"], ["post_processor"], ["normalizer"]]
TOKENIZER_CONFIG_KEYS = ["bos_token", "eos_token", "added_tokens_decoder", "chat_template",
                         "add_bos_token", "add_eos_token", "pad_token"]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.tuples(st.just("config.json"), st.sampled_from(CONFIG_KEYS)),
                 st.tuples(st.just("tokenizer.json"), st.sampled_from(TOKENIZER_PATHS)),
                 st.tuples(st.just("tokenizer_config.json"),
                           st.sampled_from(TOKENIZER_CONFIG_KEYS))),
       _JSON_VALUES)
def test_mutated_json_converts_or_is_a_clear_error(good_checkpoint, tmp_path_factory, where,
                                                   value) -> None:
    """Any value in any config.json / tokenizer.json / tokenizer_config.json key: a GGUF file
    or a ConvertError, never another exception (a library's traceback)."""
    file, key = where
    dst = tmp_path_factory.getbasetemp() / "mutated"
    _mutated_copy(good_checkpoint, dst, file, key if isinstance(key, list) else [key], value)
    try:
        convert_checkpoint(dst, dst / "out.gguf", force=True, progress=False)
    except ConvertError:
        pass
