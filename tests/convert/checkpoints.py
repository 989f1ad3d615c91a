"""Tiny random Hugging Face checkpoints of every ternary family, stored as the real ones are
(docs/model-facts.md 2): same config keys, tensor names, dtypes, packing and scale convention;
sizes scaled down but keeping each family's head dim, GQA ratio and tying. Plus transformers' own
forward pass over each (docs/model-facts.md 8: float32, eager attention) as the reference.

Built with torch / safetensors / tokenizers / sentencepiece (test dependencies).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # transformers compiles unpack_weights else

CORPUS = """\
Once upon a time, in a small village by the sea, there lived an old fisherman and his wife.
Every morning he went out in his boat; every evening he came back with 12 or 13 fish.
"What a fine day!" said the wife. The children played in the sand, building castles 1234 high.
Numbers like 3.14159, 2026 and 1,000,000 appear in text; so do e-mail@example.com and URLs.
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! isn't it? we'll see, they'd go.
  Indented lines, tabs\tand\nnew lines matter to tokenizers.   Several   spaces too.
Über café naïve façade — unicode «quotes» and emoji 🙂 are bytes in the end.
"""
SAMPLES = ["Hello world", " leading space and  double  spaces", "Numbers 12345 and 3.14!",
           "isn't it? We'll see", "line one\nline two\n\n  indented", "café naïve 🙂 «x»"]

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass
class Built:
    """A checkpoint directory and how to get transformers' reference for it."""

    family: str
    path: Path
    reference_dir: Path  # what transformers loads (the checkpoint itself, or a twin)
    n_vocab: int
    default_type: str
    arch: str
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# tokenizers


def bpe_tokenizer(directory: Path, style: str, n_base: int, specials: list[str],
                  bos: str | None, eos: str, chat_template: str | None = None,
                  n_vocab: int | None = None) -> int:
    """Train a byte-level BPE on CORPUS with the pre-tokenizer of ``style`` ("llama3", "gpt2",
    "falcon3"); writes tokenizer.json and tokenizer_config.json, returns the token count."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    if style == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif style == "falcon3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Punctuation(behavior="contiguous"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            pre_tokenizers.Digits(individual_digits=True)])
    else:
        raise ValueError(style)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_base, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 4, trainer)
    tok.add_special_tokens(specials)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    tok.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos,
                              "model_max_length": 4096}
    if bos is not None:
        config["bos_token"] = bos
    if chat_template:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size()


def sentencepiece_tokenizer(directory: Path, vocab_size: int, added: dict[str, int]) -> None:
    """A Llama-2-style SentencePiece BPE (byte fallback, <unk>/<s>/</s> = 0/1/2) trained on
    CORPUS, plus added tokens (1bitLLM's pad), as 1bitLLM ships it."""
    import sentencepiece as spm

    text = directory / "corpus.txt"
    text.write_text(CORPUS * 4)
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(directory / "tokenizer"), vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, minloglevel=2)
    text.unlink()
    (directory / "tokenizer.vocab").unlink()
    (directory / "added_tokens.json").write_text(json.dumps(added))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": True,
        "add_eos_token": False}))


# ---------------------------------------------------------------------------------------------
# weights


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def pack_hf(values: np.ndarray) -> np.ndarray:
    """int8 [M, K] ternary -> transformers' packed uint8 [M/4, K] (docs/model-facts.md 2.1):
    bits 2i+1:2i of packed row r hold output row i*M/4 + r, code v + 1."""
    rows = values.shape[0] // 4
    codes = (values + 1).astype(np.uint8)
    out = np.zeros((rows, values.shape[1]), dtype=np.uint8)
    for i in range(4):
        out |= codes[i * rows:(i + 1) * rows] << (2 * i)
    return out


def absmean(w: np.ndarray) -> tuple[np.ndarray, float]:
    scale = max(float(np.abs(w).mean()), 1e-5)
    return np.clip(np.rint(w / scale), -1, 1).astype(np.int8), scale


@dataclass
class Shape:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    n_vocab: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def linears(self) -> dict[str, tuple[int, int]]:
        q = self.n_heads * self.head_dim
        kv = self.n_kv_heads * self.head_dim
        return {"self_attn.q_proj": (q, self.d_model), "self_attn.k_proj": (kv, self.d_model),
                "self_attn.v_proj": (kv, self.d_model), "self_attn.o_proj": (self.d_model, q),
                "mlp.gate_proj": (self.d_ff, self.d_model),
                "mlp.up_proj": (self.d_ff, self.d_model),
                "mlp.down_proj": (self.d_model, self.d_ff)}


def latent_state(shape: Shape, seed: int, sub_norms: dict[str, int], untied: bool
                 ) -> dict[str, np.ndarray]:
    """Random f32 weights with HF names (transformers' BitNet/Llama modules)."""
    rng = _rng(seed)
    embed_std = 4.0 / np.sqrt(shape.d_model)
    state = {"model.embed_tokens.weight":
             rng.standard_normal((shape.n_vocab, shape.d_model)) * embed_std,
             "model.norm.weight": rng.uniform(0.5, 1.5, shape.d_model)}
    if untied:
        state["lm_head.weight"] = rng.standard_normal((shape.n_vocab, shape.d_model)) * embed_std
    for i in range(shape.n_layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = rng.uniform(0.5, 1.5, shape.d_model)
        state[p + "post_attention_layernorm.weight"] = rng.uniform(0.5, 1.5, shape.d_model)
        for name, width in sub_norms.items():
            state[p + name + ".weight"] = rng.uniform(0.5, 1.5, width)
        for name, (rows, cols) in shape.linears().items():
            state[p + name + ".weight"] = rng.standard_normal((rows, cols)) * 0.8
    return {k: v.astype(np.float32) for k, v in state.items()}


def save_torch(directory: Path, state: dict[str, Any], config: dict[str, Any]) -> None:
    """tensors (numpy f32 -> the given torch dtypes) + config.json, as save_pretrained does."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()},
              str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=1))


def _t(array: np.ndarray, dtype: str):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(getattr(torch, dtype))


# ---------------------------------------------------------------------------------------------
# families


def _base_config(shape: Shape, **extra: Any) -> dict[str, Any]:
    config = {"hidden_size": shape.d_model, "intermediate_size": shape.d_ff,
              "num_hidden_layers": shape.n_layers, "num_attention_heads": shape.n_heads,
              "num_key_value_heads": shape.n_kv_heads, "vocab_size": shape.n_vocab,
              "attention_bias": False, "initializer_range": 0.02, "use_cache": True,
              "transformers_version": "4.52.4"}
    config.update(extra)
    return config


def bitnet_2b(root: Path, packed: bool) -> Built:
    """microsoft/bitnet-b1.58-2B-4T (packed, autobitlinear offline) or its -bf16 twin:
    GQA 4:1, head dim 128, relu2, tied, Llama-3 tokenizer."""
    path = root / ("bitnet-2b-packed" if packed else "bitnet-2b-bf16")
    path.mkdir(parents=True)
    n = bpe_tokenizer(path, "llama3", 300, ["<|begin_of_text|>", "<|end_of_text|>",
                                             "<|eot_id|>"], "<|begin_of_text|>",
                      "<|end_of_text|>", chat_template=_BITNET_TEMPLATE)
    shape = Shape(512, 2, 4, 1, 1024, n)
    sub = {"self_attn.attn_sub_norm": shape.d_model, "mlp.ffn_sub_norm": shape.d_ff}
    latent = latent_state(shape, 1 if packed else 2, sub, untied=False)
    state = {}
    for name, w in latent.items():
        if packed and name.endswith("_proj.weight"):
            values, scale = absmean(w)
            state[name] = _t(pack_hf(values), "uint8")
            state[name + "_scale"] = _t(np.array([scale], np.float32), "bfloat16")
        else:
            state[name] = _t(w, "bfloat16")
    mode = "offline" if packed else "online"
    config = _base_config(
        shape, architectures=["BitNetForCausalLM"], model_type="bitnet", hidden_act="relu2",
        rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=4096,
        bos_token_id=n - 3, eos_token_id=n - 2, tie_word_embeddings=True,
        torch_dtype="bfloat16",
        quantization_config={"quant_method": "bitnet", "linear_class": "autobitlinear",
                             "quantization_mode": mode})
    save_torch(path, state, config)
    return Built("bitnet-2b-" + ("packed" if packed else "bf16"), path, path, n, "i2_s",
                 "bitnet-b1.58")


_BITNET_TEMPLATE = ("{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
                    "{{ message['role'] | capitalize }}: {{ message['content'] }}<|eot_id|>"
                    "{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}")


def one_bit_llm(root: Path) -> Built:
    """1bitLLM/bitnet_b1_58-large: BitnetForCausalLM (custom code, model_type llama), fp16
    latent weights, sub-norms named inner_attn_ln / ffn_layernorm, MHA with head dim 96, SiLU,
    tied, SentencePiece vocabulary plus a pad token. The reference is transformers'
    BitNetForCausalLM (hidden_act silu) over the same weights (docs/model-facts.md 8)."""
    path = root / "1bitllm"
    path.mkdir(parents=True)
    sentencepiece_tokenizer(path, 400, {"<pad>": 400})
    shape = Shape(384, 2, 4, 4, 512, 402)
    hf_sub = {"self_attn.attn_sub_norm": shape.d_model, "mlp.ffn_sub_norm": shape.d_ff}
    latent = latent_state(shape, 3, hf_sub, untied=False)
    latent = {k: v.astype(np.float16).astype(np.float32) for k, v in latent.items()}
    renames = {"self_attn.attn_sub_norm": "self_attn.inner_attn_ln",
               "mlp.ffn_sub_norm": "mlp.ffn_layernorm"}
    state = {}
    for name, w in latent.items():
        for old, new in renames.items():
            name = name.replace(old, new)
        state[name] = _t(w, "float16")
    config = _base_config(
        shape, architectures=["BitnetForCausalLM"], model_type="llama", hidden_act="silu",
        rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=400, tie_word_embeddings=True,
        torch_dtype="float16", weight_bits=1, input_bits=8, pretraining_tp=1,
        auto_map={"AutoConfig": "configuration_bitnet.BitnetConfig",
                  "AutoModelForCausalLM": "modeling_bitnet.BitnetForCausalLM"})
    save_torch(path, state, config)
    ref = root / "1bitllm-reference"
    ref_config = _base_config(
        shape, architectures=["BitNetForCausalLM"], model_type="bitnet", hidden_act="silu",
        rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=True, torch_dtype="float32",
        quantization_config={"quant_method": "bitnet", "linear_class": "autobitlinear",
                             "quantization_mode": "online"})
    save_torch(ref, {k: _t(v, "float32") for k, v in latent.items()}, ref_config)
    return Built("1bitllm", path, ref, shape.n_vocab, "i2_s", "bitnet")


def llama_packed(root: Path, variant: str) -> Built:
    """Packed LlamaForCausalLM with {"quant_method": "bitnet"} (bitlinear: weight_scale =
    1/mean|W|, divided), no sub-norms, SiLU:
    - falcon3: Falcon3-*-1.58bit: head dim 256, GQA 3:1, tied [U], falcon3 tokenizer;
    - falcon-e: Falcon-E: onebitllms' is_bitnet_config, lm_head in modules_to_not_convert,
      untied, head dim 128 GQA 2:1 [U];
    - llama3: HF1BitLLM/Llama3-8B-1.58: head dim 128, GQA 4:1, untied, Llama-3 tokenizer."""
    path = root / f"{variant}-packed"
    path.mkdir(parents=True)
    style = {"falcon3": "falcon3", "falcon-e": "falcon3", "llama3": "llama3"}[variant]
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    n = bpe_tokenizer(path, style, 300, specials, "<|begin_of_text|>", "<|end_of_text|>")
    shape = {"falcon3": Shape(768, 2, 3, 1, 1024, n), "falcon-e": Shape(512, 2, 4, 2, 1024, n),
             "llama3": Shape(512, 2, 4, 1, 1024, n)}[variant]
    untied = variant != "falcon3"
    latent = latent_state(shape, 4, {}, untied=untied)
    state = {}
    for name, w in latent.items():
        if name.endswith("_proj.weight"):
            values, scale = absmean(w)
            state[name] = _t(pack_hf(values), "uint8")
            state[name + "_scale"] = _t(np.array([1.0 / scale], np.float32), "bfloat16")
        else:
            state[name] = _t(w, "bfloat16")
    quant: dict[str, Any] = {"quant_method": "bitnet"}
    extra: dict[str, Any] = {}
    if variant == "falcon-e":
        quant["modules_to_not_convert"] = ["lm_head"]
        extra["is_bitnet_config"] = True
    theta = {"falcon3": 1000042.0, "falcon-e": 10000.0, "llama3": 500000.0}[variant]
    config = _base_config(
        shape, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
        head_dim=shape.head_dim, rms_norm_eps=1e-6 if variant != "llama3" else 1e-5,
        rope_theta=theta, rope_scaling=None, max_position_embeddings=8192,
        bos_token_id=n - 3, eos_token_id=n - 2, tie_word_embeddings=not untied,
        torch_dtype="bfloat16", mlp_bias=False, pretraining_tp=1, quantization_config=quant,
        **extra)
    save_torch(path, state, config)
    return Built(variant, path, path, n, "i2_s", "llama")


def falcon_e_latent(root: Path) -> Built:
    """Falcon-E's ``prequantized`` revision: bf16 master weights for onebitllms fine-tuning,
    marked by onebitllms' ``is_bitnet_config`` without a quantization config [U: the exact
    config is not seen]. The reference is transformers' LlamaForCausalLM over the same weights
    with autobitlinear/online quantization (absmean weights, per-token int8 activations)."""
    path = root / "falcon-e-bf16"
    path.mkdir(parents=True)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    n = bpe_tokenizer(path, "falcon3", 300, specials, "<|begin_of_text|>", "<|end_of_text|>")
    shape = Shape(512, 2, 4, 2, 1024, n)
    latent = latent_state(shape, 7, {}, untied=True)
    latent = {k: _t(v, "bfloat16").float().numpy() for k, v in latent.items()}  # bf16 values
    config = _base_config(
        shape, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
        head_dim=shape.head_dim, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
        max_position_embeddings=8192, bos_token_id=n - 3, eos_token_id=n - 2,
        tie_word_embeddings=False, torch_dtype="bfloat16", is_bitnet_config=True)
    save_torch(path, {k: _t(v, "bfloat16") for k, v in latent.items()}, config)
    ref = root / "falcon-e-bf16-reference"
    ref_config = dict(config, torch_dtype="float32", quantization_config={
        "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"})
    save_torch(ref, {k: _t(v, "float32") for k, v in latent.items()}, ref_config)
    return Built("falcon-e-bf16", path, ref, n, "i2_s", "llama")


def trilm(root: Path) -> Built:
    """SpectraSuite TriLM *_Unpacked: LlamaForCausalLM, fp16 weights that are ternary x one
    scale per model-parallel shard (two shards here: output rows for q/k/v/gate/up, input
    columns for o/down), MHA, head dim 128, untied, no quantization config, GPT-NeoX-style BPE."""
    path = root / "trilm"
    path.mkdir(parents=True)
    n = bpe_tokenizer(path, "gpt2", 300, ["<|endoftext|>"], None, "<|endoftext|>")
    shape = Shape(512, 2, 4, 4, 1024, n)
    latent = latent_state(shape, 5, {}, untied=True)
    rng = _rng(6)
    state = {}
    for name, w in latent.items():
        if name.endswith("_proj.weight"):
            values, _ = absmean(w)
            row_parallel = "o_proj" in name or "down_proj" in name
            scales = rng.uniform(0.02, 0.06, 2).astype(np.float16).astype(np.float32)
            half = (w.shape[1] if row_parallel else w.shape[0]) // 2
            factor = np.where(np.arange(w.shape[1] if row_parallel else w.shape[0]) < half,
                              scales[0], scales[1])
            w = values * (factor[None, :] if row_parallel else factor[:, None])
        state[name] = _t(w, "float16")
    config = _base_config(
        shape, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
        rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, max_position_embeddings=2048,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False, torch_dtype="float16")
    save_torch(path, state, config)
    return Built("trilm", path, path, n, "tq2_0", "llama")


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "bitnet-2b-packed": lambda root: bitnet_2b(root, packed=True),
    "bitnet-2b-bf16": lambda root: bitnet_2b(root, packed=False),
    "1bitllm": one_bit_llm,
    "falcon3": lambda root: llama_packed(root, "falcon3"),
    "falcon-e": lambda root: llama_packed(root, "falcon-e"),
    "llama3": lambda root: llama_packed(root, "llama3"),
    "falcon-e-bf16": falcon_e_latent,
    "trilm": trilm,
}


# ---------------------------------------------------------------------------------------------
# the reference


def reference_logits(directory: Path, ids: list[int], q8k_activations: bool = False
                     ) -> np.ndarray:
    """transformers' forward over ``ids``: f32 [n, vocab]. ``q8k_activations``: quantize every
    decoder linear's input to Q8_K per 256 block first (llama.cpp's TQ semantics)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    # a packed BitNet checkpoint unpacks to its stored dtype (bf16) whatever dtype= says;
    # ternary values and bf16 scales are exact in f32
    torch.nn.Module.float(model)
    hooks = []
    if q8k_activations:
        from bitnet.formats.activations import quantize_q8_k

        def q8k(_module, args):
            x = args[0]
            flat = x.detach().reshape(-1, x.shape[-1]).numpy()
            q, d = quantize_q8_k(flat)
            back = (q.reshape(len(flat), -1, 256) * d[:, :, None]).reshape(flat.shape)
            return (torch.from_numpy(back.astype(np.float32)).reshape(x.shape),)
        for name, module in model.named_modules():
            if name.startswith("model.layers.") and isinstance(module, torch.nn.Linear):
                hooks.append(module.register_forward_pre_hook(q8k))
    with torch.no_grad():
        out = model(torch.tensor([ids])).logits[0].float().numpy()
    for h in hooks:
        h.remove()
    return out
