"""Map a GGUF file's tensors onto the transformer block, with every check a loader owes.

The only place that knows tensor names. Weights stay memory-mapped in their on-disk format
(WeightTensor.data is a view into the file) unless ``ternarize=True`` converts float matmul
weights to I2_S, or the file's Q/K rows are in RoPE NORM order (arch llama): those two tensors
per layer are copied once, with their rows permuted to the NEOX order the rope op uses. Norms
are small f32 copies.

Names (llama.cpp's, docs/formats.md 4.3, docs/model-facts.md 4.3), with ggml shapes (ne0 first):
    token_embd.weight        [d, V]   float format (F16 in bitnet.cpp files, Q6_K in llama.cpp's)
    output.weight            [d, V]   optional (absent: tied to token_embd); not in arch bitnet
    output_norm.weight       [d]
    rope_freqs.weight        [D/2]    optional; only all-ones (no frequency scaling) runs
    blk.{i}.attn_norm.weight [d]      blk.{i}.attn_q.weight [d, H*D]  attn_k/attn_v [d, Hkv*D]
    blk.{i}.attn_sub_norm    [H*D]    blk.{i}.attn_output.weight [H*D, d]
    blk.{i}.ffn_norm.weight  [d]      ffn_gate / ffn_up [d, F]  ffn_sub_norm [F]  ffn_down [F, d]
    blk.{i}.<linear>.scale   [1]      optional, arch bitnet only: multiplies that matmul's output
The sub-norms exist in the BitNet archs only; arch llama (the plain Llama block) has none.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bitnet.core.config import ModelConfig
from bitnet.core.errors import ModelFormatError
from bitnet.core.gguf import GGUFFile, TensorInfo
from bitnet.hal.device_layout import has_code_3
from bitnet.hal.backend import WeightTensor
from bitnet.hal.weight_formats import FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat
from bitnet.hal.ops import Op
from bitnet.registry.requirements import LinearShape, ModelRequirements

__all__ = ["LayerWeights", "ModelWeights", "load_weights", "model_requirements"]

LINEAR_NAMES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORM_NAMES = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")
SUB_NORM_NAMES = ("attn_sub_norm", "ffn_sub_norm")
_VECTOR_FORMATS = (WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16)
_TERNARY_CHECK_ROWS = 64  # rows sampled per float weight for the "is it ternary?" warning


@dataclass(frozen=True)
class LayerWeights:
    """One transformer block. Matmul weights are [rows M, cols K] (ggml ne1, ne0)."""

    attn_norm: np.ndarray  # f32 [d]
    attn_q: WeightTensor  # [H*D, d]      ternary (or float: F16 file without ternarize)
    attn_k: WeightTensor  # [Hkv*D, d]
    attn_v: WeightTensor  # [Hkv*D, d]
    attn_sub_norm: np.ndarray | None  # f32 [H*D] before attn_output; None: plain Llama block
    attn_output: WeightTensor  # [d, H*D]
    ffn_norm: np.ndarray  # f32 [d]
    ffn_gate: WeightTensor  # [F, d]
    ffn_up: WeightTensor  # [F, d]
    ffn_sub_norm: np.ndarray | None  # f32 [F] before ffn_down; None: plain Llama block
    ffn_down: WeightTensor  # [d, F]

    def linears(self) -> tuple[WeightTensor, ...]:
        return tuple(getattr(self, name) for name in LINEAR_NAMES)

    def norms(self) -> tuple[np.ndarray, ...]:
        """The norm weights this block has (sub-norms only in the BitNet block)."""
        found = (getattr(self, name) for name in NORM_NAMES)
        return tuple(n for n in found if n is not None)


@dataclass(frozen=True)
class ModelWeights:
    token_embd: WeightTensor  # [V, d], a float format
    output: WeightTensor | None  # [V, d] lm_head; None = tied to token_embd
    output_norm: np.ndarray  # f32 [d]
    layers: list[LayerWeights]

    @property
    def head(self) -> WeightTensor:
        """The lm_head weight: ``output`` or, when tied, ``token_embd``."""
        return self.token_embd if self.output is None else self.output

    def tensors(self) -> Iterator[WeightTensor]:
        """Every WeightTensor once: embedding, head (if untied), then each layer's matmuls."""
        yield self.token_embd
        if self.output is not None:
            yield self.output
        for layer in self.layers:
            yield from layer.linears()


def load_weights(gguf: GGUFFile, config: ModelConfig, ternarize: bool = False) -> ModelWeights:
    """Check and map every tensor. ModelFormatError names the first tensor that is missing,
    unexpected, of the wrong shape or of an unusable format.

    ``ternarize``: convert float matmul weights (F32/F16/BF16/Q8_0/Q6_K) to I2_S by per-tensor
    absmean (BitNet b1.58's rule); ternary-format weights are used as stored either way.
    """
    reader = _Reader(gguf, config, ternarize)
    reader.check_names()
    token_embd = reader.float_matrix("token_embd.weight", config.n_vocab, config.d_model)
    output = None
    if "output.weight" in gguf.tensors:
        output = reader.float_matrix("output.weight", config.n_vocab, config.d_model)
    weights = ModelWeights(
        token_embd=token_embd,
        output=output,
        output_norm=reader.vector("output_norm.weight", config.d_model),
        layers=[reader.layer(i) for i in range(config.n_layers)],
    )
    reader.check_rope_freqs()
    reader.warn_not_ternary()
    return weights


def model_requirements(config: ModelConfig, weights: ModelWeights) -> ModelRequirements:
    """What a backend must offer to run this model: ops, formats, matmul shapes, sizes."""
    ops = {Op.EMBED, Op.RMSNORM, Op.ROPE, Op.ATTENTION, Op.ADD, Op.SLICE_ROWS}
    ops.add(Op.RELU2_MUL if config.activation == "relu2" else Op.SILU_MUL)
    ops.add(Op.LINEAR_FLOAT)  # the lm_head is always a float format
    ternary: set[WeightFormat] = set()
    floats: set[WeightFormat] = set()
    shapes: dict[LinearShape, None] = {}  # ordered set
    for layer in weights.layers:
        for t in layer.linears():
            (ternary if t.format in TERNARY_FORMATS else floats).add(t.format)
            shapes[LinearShape(t.format, t.rows, t.cols)] = None
    if ternary:
        ops.add(Op.LINEAR_TERNARY)
    floats.add(weights.token_embd.format)
    head = weights.head
    floats.add(head.format)
    shapes[LinearShape(head.format, head.rows, head.cols)] = None
    norm_bytes = weights.output_norm.nbytes
    norm_bytes += sum(n.nbytes for layer in weights.layers for n in layer.norms())
    return ModelRequirements(
        ops=frozenset(ops),
        ternary_formats=frozenset(ternary),
        float_formats=frozenset(floats),
        linear_shapes=tuple(shapes),
        n_ctx=config.n_ctx,
        weight_bytes=sum(t.data.nbytes for t in weights.tensors()) + norm_bytes,
    )


class _Reader:
    """Turns named tensors into checked WeightTensors and f32 vectors."""

    def __init__(self, gguf: GGUFFile, config: ModelConfig, ternarize: bool) -> None:
        self.gguf = gguf
        self.config = config
        self.ternarize = ternarize
        self.float_linears = 0  # float weights in matmul positions
        self.not_ternary: list[str] = []  # ... of which these are not ternary-valued

    # names

    def expected_names(self) -> set[str]:
        names = {"token_embd.weight", "output_norm.weight", "rope_freqs.weight"}
        if self.config.arch != "bitnet":
            names.add("output.weight")  # optional; llama.cpp's arch bitnet always ties
        norms = NORM_NAMES if self.config.sub_norms else tuple(
            n for n in NORM_NAMES if n not in SUB_NORM_NAMES)
        for i in range(self.config.n_layers):
            names.update(f"blk.{i}.{n}.weight" for n in norms + LINEAR_NAMES)
            if self.config.arch == "bitnet":
                names.update(f"blk.{i}.{n}.scale" for n in LINEAR_NAMES)
        return names

    def check_names(self) -> None:
        present = self.gguf.tensors
        biases = [n for n in present if n.endswith(".bias")]
        if biases:
            raise ModelFormatError(f"bias tensors are not supported (found {len(biases)}, e.g. "
                                   f"{biases[0]!r})")
        if "output.weight" in present and self.config.arch == "bitnet":
            raise ModelFormatError("tensor 'output.weight' is not expected in arch bitnet "
                                   "(llama.cpp ties its lm_head to token_embd)")
        scales = [n for n in present if n.endswith(".scale")]
        if scales and self.config.arch != "bitnet":
            raise ModelFormatError(f"tensor {scales[0]!r}: .scale tensors belong to arch bitnet, "
                                   f"not {self.config.arch}")
        extra = sorted(set(present) - self.expected_names())
        sub_norms = [n for n in extra if n.split(".")[-2] in SUB_NORM_NAMES]
        if sub_norms:
            raise ModelFormatError(f"tensor {sub_norms[0]!r}: arch {self.config.arch} is the "
                                   "plain Llama block, which has no sub-norms (a BitNet model "
                                   "needs arch bitnet or bitnet-b1.58)")
        if extra:
            shown = ", ".join(repr(n) for n in extra[:5])
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            raise ModelFormatError(f"unexpected tensors for a {self.config.n_layers}-layer "
                                   f"{self.config.arch} model: {shown}{more}")

    def info(self, name: str, shape: tuple[int, ...]) -> TensorInfo:
        info = self.gguf.tensors.get(name)
        if info is None:
            raise ModelFormatError(f"tensor {name!r} is missing")
        if info.shape != shape:
            raise ModelFormatError(f"tensor {name!r} has shape {list(info.shape)}, expected "
                                   f"{list(shape)} (ggml order, ne0 first)")
        if info.format is None:
            raise ModelFormatError(f"tensor {name!r} is {info.type_name}, a format bitnet does "
                                   "not support")
        return info

    # tensors

    def vector(self, name: str, length: int) -> np.ndarray:
        """A 1-D float tensor (norm weights) -> f32 [length], copied out of the file."""
        info = self.info(name, (length,))
        if info.format not in _VECTOR_FORMATS:
            raise ModelFormatError(f"tensor {name!r} is {info.type_name}; norms must be f32, f16 "
                                   "or bf16")
        raw = self.gguf.tensor_bytes(name).reshape(-1)
        if info.format is WeightFormat.F32:
            out = raw.view("<f4").astype(np.float32)
        elif info.format is WeightFormat.F16:
            out = raw.view("<f2").astype(np.float32)
        else:
            # bf16 is the top half of an f32
            out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        if not np.all(np.isfinite(out)):
            raise ModelFormatError(f"tensor {name!r} holds NaN or Inf")
        return out

    def tensor(self, info: TensorInfo, rows: int, cols: int, out_scale: float) -> WeightTensor:
        assert info.format is not None  # info() rejects formats bitnet cannot run
        return WeightTensor(info.name, info.format, rows, cols, self.gguf.tensor_bytes(info.name),
                            out_scale)

    def float_matrix(self, name: str, rows: int, cols: int) -> WeightTensor:
        """Embedding / lm_head: must be a float format (embed and linear_float read it)."""
        info = self.info(name, (cols, rows))
        if info.format not in FLOAT_FORMATS:
            raise ModelFormatError(f"tensor {name!r} is {info.type_name}; the embedding and "
                                   "lm_head must be a float format (f32, f16, bf16, q8_0, q6_k)")
        return self.tensor(info, rows, cols, 1.0)

    def linear(self, layer: int, kind: str, rows: int, cols: int,
               head_dim: int | None = None) -> WeightTensor:
        """A matmul weight. ``head_dim``: the rows are Q or K heads of that width, stored in the
        file's RoPE order (config.rope_order); returned in NEOX order."""
        tensor = self.linear_as_stored(layer, kind, rows, cols)
        if head_dim is not None and self.config.rope_order == "norm":
            tensor = permute_norm_to_neox(tensor, head_dim)
        return tensor

    def linear_as_stored(self, layer: int, kind: str, rows: int, cols: int) -> WeightTensor:
        info = self.info(f"blk.{layer}.{kind}.weight", (cols, rows))
        out_scale = self.out_scale(f"blk.{layer}.{kind}.scale")
        if info.format is WeightFormat.I2_S:
            self.check_i2s(info)
        if info.format in TERNARY_FORMATS:
            return self.tensor(info, rows, cols, out_scale)
        self.float_linears += 1
        if self.ternarize:
            return self.ternarized(info, rows, cols, out_scale)
        tensor = self.tensor(info, rows, cols, out_scale)
        if not _is_ternary_valued(_sample_rows(tensor)):
            self.not_ternary.append(info.name)
        return tensor

    def ternarized(self, info: TensorInfo, rows: int, cols: int, out_scale: float) -> WeightTensor:
        # imported here: the codecs are only needed on this path
        from bitnet.formats import dequantize
        from bitnet.formats.ternary import i2s_pack, ternarize_absmean

        if cols % WeightFormat.I2_S.block:
            raise ModelFormatError(f"tensor {info.name!r}: cannot ternarize to I2_S, its row "
                                   f"length {cols} is not a multiple of 128")
        w = dequantize(self.tensor(info, rows, cols, out_scale))  # f32 [rows, cols]
        if _is_ternary_valued(w):
            # already {-s, 0, +s} (a converter's output): keep it exactly, as bitnet.cpp's
            # quantize_i2_s does (sign codes, scale = max|w|); absmean would shrink s
            values = np.sign(w).astype(np.int8)
            scale = float(np.abs(w).max())
        else:
            self.not_ternary.append(info.name)
            values, scale = ternarize_absmean(w)
        return WeightTensor(info.name, WeightFormat.I2_S, rows, cols, i2s_pack(values, scale),
                            out_scale)

    def out_scale(self, name: str) -> float:
        info = self.gguf.tensors.get(name)
        if info is None:
            return 1.0
        value = self.vector(name, 1)[0]
        return float(value)

    def check_i2s(self, info: TensorInfo) -> None:
        """A finite scale, and no code 3: no quantizer writes it, and bitnet.cpp's kernels read
        it as +2 while its dequantizer reads 0 (docs/formats.md 2.3), so it marks a corrupt file.
        Costs one pass over the codes (~0.3 s for the 2B model's 500 MB)."""
        raw = self.gguf.tensor_bytes(info.name)
        n_code_bytes = info.n_elements // 4
        scale = float(raw[n_code_bytes:n_code_bytes + 4].view("<f4")[0])
        if not np.isfinite(scale):
            raise ModelFormatError(f"tensor {info.name!r}: I2_S scale is {scale}")
        codes = raw[:n_code_bytes]
        if has_code_3(codes):
            raise ModelFormatError(f"tensor {info.name!r}: I2_S code 3 (invalid; the file is "
                                   "corrupt)")

    def sub_norm(self, name: str, length: int) -> np.ndarray | None:
        """A BitNet sub-norm; None in the plain Llama block (check_names rejects strays)."""
        return self.vector(name, length) if self.config.sub_norms else None

    def layer(self, i: int) -> LayerWeights:
        c = self.config
        d = c.d_model
        return LayerWeights(
            attn_norm=self.vector(f"blk.{i}.attn_norm.weight", d),
            attn_q=self.linear(i, "attn_q", c.q_dim, d, head_dim=c.head_dim),
            attn_k=self.linear(i, "attn_k", c.kv_dim, d, head_dim=c.head_dim),
            attn_v=self.linear(i, "attn_v", c.kv_dim, d),
            attn_sub_norm=self.sub_norm(f"blk.{i}.attn_sub_norm.weight", c.q_dim),
            attn_output=self.linear(i, "attn_output", d, c.q_dim),
            ffn_norm=self.vector(f"blk.{i}.ffn_norm.weight", d),
            ffn_gate=self.linear(i, "ffn_gate", c.d_ff, d),
            ffn_up=self.linear(i, "ffn_up", c.d_ff, d),
            ffn_sub_norm=self.sub_norm(f"blk.{i}.ffn_sub_norm.weight", c.d_ff),
            ffn_down=self.linear(i, "ffn_down", d, c.d_ff),
        )

    def check_rope_freqs(self) -> None:
        """``rope_freqs.weight`` [D/2]: per-pair frequency divisors (Llama-3.1-style RoPE
        scaling). All ones changes nothing; anything else is refused, not silently ignored."""
        name = "rope_freqs.weight"
        if name not in self.gguf.tensors:
            return
        factors = self.vector(name, self.config.head_dim // 2)
        if not np.all(factors == 1.0):
            raise ModelFormatError(f"tensor {name!r} holds RoPE frequency factors other than 1 "
                                   f"(e.g. {float(factors[factors != 1.0][0]):g}): Llama-3.1-"
                                   "style RoPE scaling is not supported")

    def warn_not_ternary(self) -> None:
        if not self.not_ternary:
            return
        if self.ternarize:
            effect = ("ternarize=True rounds them to {-1, 0, +1} x absmean, which changes "
                      "the model's outputs")
        else:
            effect = "they run as plain float matmuls, so this is not a BitNet b1.58 model"
        warnings.warn(f"{self.gguf.path.name}: {len(self.not_ternary)} of {self.float_linears} "
                      f"float matmul weights are not ternary-valued (e.g. "
                      f"{self.not_ternary[0]!r}); {effect}", UserWarning, stacklevel=3)


def permute_norm_to_neox(tensor: WeightTensor, head_dim: int) -> WeightTensor:
    """Q or K rows in RoPE NORM order -> NEOX order, as a copy in the same format.

    llama.cpp's converters (``LlamaModel.permute``) store the HF row ``j * D/2 + i`` of each head
    (j = 0, 1: the halves that HF's rotate-half pairs) at row ``2i + j``, so that RoPE NORM,
    which rotates adjacent pairs (2i, 2i + 1), gives HF's result. Taking each head's even rows,
    then its odd rows, restores the HF order, where NEOX RoPE (pairs (i, i + D/2), the same
    frequency for pair i) applies. Q and K permuted alike leave every q.k, so attention, exactly
    as it was; V and the output projection are untouched. A row of every format bitnet reads is
    whole bytes: row formats store rows apart, and I2_S rows are K/4 contiguous bytes (the GGUF
    reader refuses K % 128 != 0) before the tensor's one scale, so the permutation moves bytes,
    never values.
    """
    rows = tensor.rows
    n_heads = rows // head_dim
    order = np.arange(rows).reshape(n_heads, head_dim // 2, 2)  # [H, D/2, 2]: stored row ids
    order = order.transpose(0, 2, 1).reshape(rows)  # each head: even rows, then odd rows
    data = tensor.data
    if tensor.format is WeightFormat.I2_S:
        n_code_bytes = rows * tensor.cols // 4
        codes = data[:n_code_bytes].reshape(rows, tensor.cols // 4)  # [M, K/4]
        permuted = np.concatenate([codes[order].reshape(-1), data[n_code_bytes:]])
    else:
        permuted = np.ascontiguousarray(data[order])  # [M, row_bytes]
    return WeightTensor(tensor.name, tensor.format, rows, tensor.cols, permuted, tensor.out_scale)


def _sample_rows(tensor: WeightTensor) -> np.ndarray:
    """Up to 64 evenly spaced rows of a float-format weight, dequantized -> f32 [r, K]."""
    from bitnet.formats.floats import dequantize_rows

    idx = np.unique(np.linspace(0, tensor.rows - 1, _TERNARY_CHECK_ROWS).astype(np.int64))
    return dequantize_rows(tensor.format, np.asarray(tensor.data[idx]), len(idx), tensor.cols)


def _is_ternary_valued(w: np.ndarray) -> bool:
    """True when every nonzero has the same magnitude (to f16 rounding): {-s, 0, +s}."""
    magnitude = np.abs(w)
    nonzero = magnitude[magnitude != 0]
    if nonzero.size == 0:
        return True
    s = nonzero.max()
    return bool(np.all(s - nonzero <= s * 1e-3))
