"""Which ternary family a checkpoint is, and how its tensors map onto a GGUF file.

docs/model-facts.md sections 1-4 are the source for every rule here:

==============================  ==============  =======================  =============  ========
config ``architectures``        GGUF arch       linear weights           sub-norms      default
==============================  ==============  =======================  =============  ========
BitNetForCausalLM (2B-4T)       bitnet-b1.58    packed uint8, or bf16    attn/ffn_sub_  I2_S
                                                master weights           norm
BitnetForCausalLM (1bitLLM)     bitnet          latent floats            inner_attn_ln  I2_S
                                                                         ffn_layernorm
LlamaForCausalLM + bitnet       llama           packed uint8             none           I2_S
quantization (Falcon3, Falcon-
E, Llama3-8B-1.58)
LlamaForCausalLM, no quant.     llama           fp16 ternary x scales    none           TQ2_0
(TriLM)
==============================  ==============  =======================  =============  ========

Packed weights carry a ``weight_scale`` that the real weight is multiplied by when
``quantization_config.linear_class`` is ``"autobitlinear"`` and divided by otherwise (2.1).
Arch ``llama`` files get Q/K rows permuted exactly as llama.cpp's converter does, so they run
with llama.cpp's "normal" RoPE; the bitnet arches keep HF's rotate-half order (NEOX RoPE).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bitnet.convert.errors import ConvertError
from bitnet.hal.weight_formats import WeightFormat

__all__ = ["Family", "Hparams", "LINEARS", "detect_family", "read_hparams"]

# HF module suffix -> GGUF tensor name, per layer (``model.layers.{i}.`` / ``blk.{i}.``)
LINEARS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
NORMS = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_BITNET_SUB_NORMS = {"self_attn.attn_sub_norm": "attn_sub_norm",
                     "mlp.ffn_sub_norm": "ffn_sub_norm"}
_1BITLLM_SUB_NORMS = {"self_attn.inner_attn_ln": "attn_sub_norm",
                      "mlp.ffn_layernorm": "ffn_sub_norm"}
# stored by some older checkpoints; llama.cpp's converter skips them too (derived from theta)
IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


@dataclass(frozen=True)
class Family:
    label: str  # human name, for messages
    arch: str  # GGUF general.architecture
    storage: str  # "packed" (uint8 + weight_scale), "latent" (absmean), "ternary" (TriLM)
    scale_multiplies: bool  # packed only: W = t * weight_scale (else t / weight_scale)
    default_type: WeightFormat
    sub_norms: dict[str, str]  # HF module suffix -> GGUF name; empty for plain Llama blocks
    permute_qk: bool  # llama.cpp's LlamaModel.permute (arch llama)
    activation: str  # the FFN gate activation the arch must run


@dataclass(frozen=True)
class Hparams:
    n_vocab: int
    n_ctx: int
    d_model: int
    n_layers: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    tied: bool  # lm_head shares token_embd (no lm_head.weight to write)


def detect_family(config: dict[str, Any], first_linear_dtype: str) -> Family:
    """The family of a checkpoint from its config.json and the dtype of its first q_proj."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs:
        raise ConvertError("config.json has no 'architectures' list; cannot tell the model "
                           "family")
    arch = archs[0]
    quant = _quant_config(config)
    packed = first_linear_dtype == "U8"
    if packed and quant is None:
        raise ConvertError("linear weights are uint8 (packed) but config.json has no "
                           "quantization_config saying how to unpack them")
    multiply = quant is not None and quant.get("linear_class") == "autobitlinear"
    storage = "packed" if packed else "latent"
    if arch == "BitNetForCausalLM":
        _check_activation(config, "relu2", arch)
        return Family("BitNet b1.58 (BitNetForCausalLM)", "bitnet-b1.58", storage, multiply,
                      WeightFormat.I2_S, _BITNET_SUB_NORMS, False, "relu2")
    if arch == "BitnetForCausalLM":
        if quant is not None:
            raise ConvertError("BitnetForCausalLM (1bitLLM) checkpoints hold latent weights; "
                               "this one has a quantization_config, which is not a layout "
                               "bitnet knows")
        _check_activation(config, "silu", arch)
        return Family("1bitLLM BitNet b1.58 (BitnetForCausalLM)", "bitnet", "latent", False,
                      WeightFormat.I2_S, _1BITLLM_SUB_NORMS, False, "silu")
    if arch in ("LlamaForCausalLM", "LLaMAForCausalLM"):
        _check_activation(config, "silu", arch)
        if quant is None and not config.get("is_bitnet_config"):
            # TriLM: fp16 weights that already are ternary x (several) scales
            return Family("ternary Llama (TriLM-style unpacked)", "llama", "ternary", False,
                          WeightFormat.TQ2_0, {}, True, "silu")
        return Family("BitNet Llama (Falcon3/Falcon-E/Llama3-1.58 style)", "llama", storage,
                      multiply, WeightFormat.I2_S, {}, True, "silu")
    raise ConvertError(f"config.json architectures[0] is {arch!r}; bitnet converts "
                       "BitNetForCausalLM, BitnetForCausalLM (1bitLLM) and LlamaForCausalLM "
                       "(Falcon3-1.58bit, Falcon-E, Llama3-8B-1.58, TriLM)")


def _quant_config(config: dict[str, Any]) -> dict[str, Any] | None:
    quant = config.get("quantization_config")
    if quant is None:
        return None
    if not isinstance(quant, dict):
        raise ConvertError("config.json quantization_config is not an object")
    method = quant.get("quant_method")
    if method != "bitnet":
        raise ConvertError(f"quantization_config.quant_method is {method!r}; bitnet converts "
                           "only 'bitnet' (ternary) quantization")
    linear_class = quant.get("linear_class", "bitlinear")
    if linear_class not in ("bitlinear", "autobitlinear"):
        raise ConvertError(f"quantization_config.linear_class is {linear_class!r}; known: "
                           "'bitlinear' (weight_scale divides), 'autobitlinear' (multiplies)")
    if quant.get("use_rms_norm"):
        raise ConvertError("quantization_config.use_rms_norm is set (an extra RMSNorm before "
                           "every BitLinear), which no GGUF arch has")
    return quant


def _check_activation(config: dict[str, Any], expected: str, arch: str) -> None:
    act = config.get("hidden_act", expected)
    if act != expected:
        raise ConvertError(f"config.json hidden_act is {act!r}; {arch} is converted with "
                           f"{expected!r} only")


def modules_not_converted(config: dict[str, Any]) -> list[str]:
    quant = config.get("quantization_config") or {}
    names = quant.get("modules_to_not_convert") or []
    return [n for n in names if isinstance(n, str)]


def read_hparams(config: dict[str, Any]) -> Hparams:
    """Model sizes from config.json, each checked; missing keys get Llama's defaults only
    where transformers has one."""
    d_model = _int(config, "hidden_size")
    n_heads = _int(config, "num_attention_heads")
    n_kv_heads = _int(config, "num_key_value_heads", n_heads)
    if d_model % n_heads or n_heads % n_kv_heads:
        raise ConvertError(f"config.json: num_attention_heads {n_heads} must divide hidden_size "
                           f"{d_model} and be a multiple of num_key_value_heads {n_kv_heads}")
    head_dim = d_model // n_heads
    declared = config.get("head_dim")
    if declared is not None and declared != head_dim:
        raise ConvertError(f"config.json head_dim {declared} != hidden_size / "
                           f"num_attention_heads = {head_dim}; decoupled head sizes are not "
                           "supported")
    _check_rope_scaling(config)
    return Hparams(
        n_vocab=_int(config, "vocab_size"),
        n_ctx=_int(config, "max_position_embeddings", 2048),
        d_model=d_model,
        n_layers=_int(config, "num_hidden_layers"),
        d_ff=_int(config, "intermediate_size"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        rms_eps=_number(config, "rms_norm_eps", 1e-6, 1.0),
        rope_theta=_rope_theta(config),
        tied=_bool(config, "tie_word_embeddings", False),
    )


# sanity bounds (the engine's, bitnet.core.config): far above any real model, low enough that a
# corrupt value cannot make the converter build absurd token lists before a shape check fails
_MAX = {"hidden_size": 1 << 17, "intermediate_size": 1 << 17, "num_hidden_layers": 1024,
        "num_attention_heads": 4096, "num_key_value_heads": 4096, "vocab_size": 1 << 22,
        "max_position_embeddings": 1 << 22}


def _int(config: dict[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise ConvertError(f"config.json: {key!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX[key]:
        raise ConvertError(f"config.json: {key!r} must be an integer in 1..{_MAX[key]}, got "
                           f"{value!r}")
    return value


def _number(config: dict[str, Any], key: str, default: float, high: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 < value <= high):
        raise ConvertError(f"config.json: {key!r} must be a number in (0, {high:g}], got "
                           f"{value!r}")
    return float(value)


def _bool(config: dict[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConvertError(f"config.json: {key!r} must be true or false, got {value!r}")
    return value


def _rope_theta(config: dict[str, Any]) -> float:
    # transformers 5 writes rope_parameters.rope_theta; released checkpoints have rope_theta
    params = config.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        return _number(params, "rope_theta", 10000.0, 1e12)
    return _number(config, "rope_theta", 10000.0, 1e12)


def _check_rope_scaling(config: dict[str, Any]) -> None:
    for key in ("rope_scaling", "rope_parameters"):
        value = config.get(key)
        if not isinstance(value, dict):
            continue
        kind = value.get("rope_type", value.get("type", "default"))
        factor = value.get("factor", 1.0)
        if kind == "default" or (kind == "linear" and factor == 1.0):
            continue
        raise ConvertError(f"config.json {key}: RoPE scaling {kind!r} (factor {factor}) is not "
                           "supported")
