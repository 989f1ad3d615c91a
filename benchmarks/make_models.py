"""Write the synthetic 2B-4T-shaped benchmark models (random ternary weights, exact shape).

    python benchmarks/make_models.py OUT_DIR [--formats i2_s tq2_0 tq1_0] [--embed q6_k f16]
        [--llama] [--layers N]

Files: OUT_DIR/2b-<format>-<embed>.gguf. TQ files use arch ``bitnet`` (what llama.cpp reads),
I2_S files ``bitnet-b1.58`` (bitnet.cpp's arch); ``--llama`` writes arch ``llama`` instead
(OUT_DIR/2b-llama-<format>-<embed>.gguf: no sub-norms, Q/K in RoPE NORM order, as Falcon3 /
Llama3-8B-1.58 / TriLM files are) with the same matmul shapes, to compare speed per weight byte.
``--layers N`` keeps each layer's shapes but writes N layers (default 30). The tied embedding is
written by bitnet.convert.gguf_writer (its Q6_K encoder follows llama.cpp's quantizer).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bitnet.testing.synthetic import make_synthetic_model, shape_kwargs
from bitnet.hal.weight_formats import WeightFormat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--formats", nargs="+", default=["i2_s", "tq2_0", "tq1_0"])
    parser.add_argument("--embed", nargs="+", default=["q6_k"])
    parser.add_argument("--llama", action="store_true", help="write arch llama files")
    parser.add_argument("--layers", type=int, default=30, help="layers (default 30)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for fmt in args.formats:
        for embed in args.embed:
            kind = "2b-llama" if args.llama else "2b"
            layers = "" if args.layers == 30 else f"-l{args.layers}"
            path = args.out / f"{kind}-{fmt}-{embed}{layers}.gguf"
            if path.exists():
                print(f"{path} exists")
                continue
            arch = "bitnet-b1.58" if fmt == "i2_s" else "bitnet"
            if args.llama:
                arch = "llama"
            shape = {**shape_kwargs("2b"), "n_layers": args.layers}
            t0 = time.perf_counter()
            make_synthetic_model(path, **shape, arch=arch,
                                 weight_format=WeightFormat(fmt),
                                 embed_format=WeightFormat(embed), seed=1)
            print(f"{path}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
