"""Export the trained demo model to GGUF (I2_S, or any ternary format) with bitnet's own writer.

    python tools/export_demo.py --data build/demo --format I2_S \
        --out bitnet/data/demo-b158-i2_s.gguf
    python tools/export_demo.py --data build/demo --format TQ2_0 --out build/demo/demo-tq2_0.gguf

Reads ``checkpoint.pt`` and ``tokenizer.model`` from ``--data``. Each BitLinear's latent weight
is ternarized exactly as in training (per-tensor absmean; ``demo_model.ternarize``), so the file
holds the very weights the QAT forward pass used: I2_S stores the codes and the f32 scale; TQ2_0
stores the scale per 256-block as f16 (the one approximation, relative error <= 2**-11). The
token embedding (tied lm_head) is F16 by default, norms F32. The tokenizer is written as a
``llama`` (SentencePiece) vocabulary: tokens, scores, token types, BOS/EOS/UNK ids.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_model import DemoConfig, DemoLM, ternarize

from bitnet.convert.gguf_writer import FILE_TYPES, GGUFModelWriter, encode_float, encode_ternary
from bitnet.hal.weight_formats import WeightFormat

ARCH = "bitnet-b1.58"
LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")
# llama.cpp token types (gguf TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def sentencepiece_vocab(sp: spm.SentencePieceProcessor) -> dict[str, Any]:
    """tokenizer.* metadata of a ``llama`` vocabulary holding every piece of ``sp``."""
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(UNKNOWN)
        elif sp.is_control(i):
            types.append(CONTROL)
        elif sp.is_byte(i):
            types.append(BYTE)
        elif sp.is_unused(i):
            types.append(UNUSED)
        else:
            types.append(NORMAL)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": sp.bos_id(),
        "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }


def load_checkpoint(path: Path) -> tuple[DemoLM, dict[str, Any]]:
    """The float (latent-weight) model and its training stats from ``checkpoint.pt``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = DemoLM(DemoConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt.get("stats", {})


def ternary_weight(w: torch.Tensor) -> tuple[np.ndarray, float]:
    """Latent f32 weight [M, K] -> (int8 codes [M, K], float32 scale) as the QAT forward sees it."""
    codes, s = ternarize(w.detach().float())
    return codes.to(torch.int8).numpy(), float(np.float32(s.item()))


def export(model: DemoLM, vocab: dict[str, Any], out: Path, fmt: WeightFormat,
           embed_format: WeightFormat = WeightFormat.F16, name: str = "bitnet-demo-austen",
           description: str = "") -> Path:
    """Write ``model`` as a bitnet-b1.58 GGUF with ternary weights in ``fmt`` and the
    ``tokenizer.*`` metadata ``vocab`` (``sentencepiece_vocab``); returns out."""
    c = model.c
    n_tokens = len(vocab["tokenizer.ggml.tokens"])
    if n_tokens != c.vocab_size:
        raise ValueError(f"tokenizer has {n_tokens} pieces, the model {c.vocab_size}")
    writer = GGUFModelWriter(out, ARCH)
    writer.add_metadata("general.name", name)
    if description:
        writer.add_metadata("general.description", description)
    writer.add_metadata("general.license", "MIT")
    writer.add_metadata("general.file_type", FILE_TYPES[fmt])
    writer.add_metadata("general.quantization_version", 2)
    hparams: dict[str, Any] = {
        "vocab_size": c.vocab_size,
        "context_length": c.context_length,
        "embedding_length": c.d_model,
        "block_count": c.n_layers,
        "feed_forward_length": c.d_ff,
        "attention.head_count": c.n_heads,
        "attention.head_count_kv": c.n_heads,
        "rope.dimension_count": c.head_dim,
        "attention.layer_norm_rms_epsilon": float(c.rms_eps),
        "rope.freq_base": float(c.rope_theta),
    }
    for suffix, value in hparams.items():
        writer.add_metadata(f"{ARCH}.{suffix}", value)
    for key, value in vocab.items():
        writer.add_metadata(key, value)

    def f32(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().numpy().astype(np.float32)

    embd = f32(model.token_embd.weight)  # [V, d]
    writer.add_tensor("token_embd.weight", embed_format, (c.d_model, c.vocab_size),
                      encode_float(embed_format, embd))
    writer.add_tensor("output_norm.weight", WeightFormat.F32, (c.d_model,),
                      f32(model.output_norm.weight))
    for i, block in enumerate(model.blocks):
        for norm in NORMS:
            w = f32(getattr(block, norm).weight)
            writer.add_tensor(f"blk.{i}.{norm}.weight", WeightFormat.F32, (w.shape[0],), w)
        for lin in LINEARS:
            codes, scale = ternary_weight(getattr(block, lin).weight)
            rows, cols = codes.shape
            writer.add_tensor(f"blk.{i}.{lin}.weight", fmt, (cols, rows),
                              encode_ternary(fmt, codes, scale))
    writer.write()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with checkpoint.pt and tokenizer.model")
    parser.add_argument("--format", default="I2_S", help="I2_S, TQ2_0, TQ1_0 (ternary weights)")
    parser.add_argument("--embed-format", default="F16", help="token_embd format (F16, Q6_K...)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, stats = load_checkpoint(args.data / "checkpoint.pt")
    sp = spm.SentencePieceProcessor(model_file=str(args.data / "tokenizer.model"))
    description = ("BitNet b1.58 demo model trained from scratch on Jane Austen's six novels "
                   "(public domain; Debian r-cran-janeaustenr); see docs/demo-model.md")
    path = export(model, sentencepiece_vocab(sp), args.out, WeightFormat(args.format.lower()),
                  WeightFormat(args.embed_format.lower()), description=description)
    print(f"wrote {path} ({path.stat().st_size} bytes); training stats: {stats.get('steps')} "
          f"steps, valid ppl {stats.get('valid_ppl')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
