"""Time and memory of `bitnet convert` on a BitNet b1.58 2B-4T-shaped packed checkpoint.

    python benchmarks/convert_memory.py [--layers 4] [--dir /tmp/convert-bench]

Writes (or reuses, on a second run: then no generator memory is counted) a random packed
checkpoint with the 2B-4T's real widths (d 2560, 20/5 heads, ffn 6912,
vocab 128256 embedding in f16; ``--layers`` of its 30 layers), converts it to I2_S and prints
the wall time, the checkpoint size and the peak resident memory of the conversion sampled every
5 ms from /proc/self/status: anonymous memory (what the converter allocates) apart from the
mapped checkpoint pages (clean file pages, which the kernel drops under memory pressure).
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from pathlib import Path

import numpy as np

D, HEADS, KV_HEADS, FF, VOCAB = 2560, 20, 5, 6912, 128256


def write_checkpoint(root: Path, n_layers: int) -> int:
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    root.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["Ġt"] = len(vocab)  # one merge: a BPE model needs some
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "t")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.save(str(root / "tokenizer.json"))
    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight":
               (rng.standard_normal((VOCAB, D), dtype=np.float32) * 0.05).astype(np.float16),
               "model.norm.weight": np.ones(D, np.float16)}
    linears = {"self_attn.q_proj": (D, D), "self_attn.k_proj": (640, D),
               "self_attn.v_proj": (640, D), "self_attn.o_proj": (D, D),
               "mlp.gate_proj": (FF, D), "mlp.up_proj": (FF, D), "mlp.down_proj": (D, FF)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for name, width in (("input_layernorm", D), ("post_attention_layernorm", D),
                            ("self_attn.attn_sub_norm", D), ("mlp.ffn_sub_norm", FF)):
            tensors[p + name + ".weight"] = np.ones(width, np.float16)
        for name, (rows, cols) in linears.items():
            codes = rng.integers(0, 3, (4, rows // 4, cols), dtype=np.uint8)
            # transformers' packing: bits 2i+1:2i hold output rows i*M/4 ..
            tensors[p + name + ".weight"] = (codes[0] | codes[1] << 2 | codes[2] << 4
                                             | codes[3] << 6)
            tensors[p + name + ".weight_scale"] = np.array([1.5], np.float16)
    config = {"architectures": ["BitNetForCausalLM"], "hidden_size": D,
              "intermediate_size": FF, "num_hidden_layers": n_layers,
              "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
              "vocab_size": VOCAB, "hidden_act": "relu2", "rms_norm_eps": 1e-5,
              "rope_theta": 500000.0, "max_position_embeddings": 4096,
              "tie_word_embeddings": True,
              "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                      "quantization_mode": "offline"}}
    (root / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(root / "model.safetensors"))
    return (root / "model.safetensors").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/convert-bench"))
    args = parser.parse_args()
    from bitnet.convert import convert_checkpoint

    src = args.dir / f"checkpoint-{args.layers}"
    if (src / "config.json").is_file():
        size = (src / "model.safetensors").stat().st_size  # reused: no generator memory
    else:
        size = write_checkpoint(src, args.layers)
    peak = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            status = Path("/proc/self/status").read_text()
            for key in peak:
                kb = int(re.search(rf"{key}:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                peak[key] = max(peak[key], kb)
            time.sleep(0.005)

    baseline = int(re.search(r"RssAnon:\s+(\d+)",  # type: ignore[union-attr]
                             Path("/proc/self/status").read_text()).group(1))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        convert_checkpoint(src, args.dir / "out.gguf", force=True, progress=False)
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    print(f"{args.layers}-layer 2B-4T-shaped packed checkpoint: {size / 1e6:.0f} MB -> I2_S "
          f"in {seconds:.1f} s; peak anonymous memory {peak['RssAnon'] / 1024:.0f} MB "
          f"({baseline / 1024:.0f} MB before converting), peak mapped file pages "
          f"{peak['RssFile'] / 1024:.0f} MB")


if __name__ == "__main__":
    main()
