"""`bitnet convert`: a Hugging Face checkpoint directory -> a GGUF file bitnet (and the peer
runtimes) can run."""

from __future__ import annotations

import argparse
import json
import time

from bitnet.cli.common import fail, user_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a Hugging Face checkpoint to GGUF",
        description="Convert a local Hugging Face checkpoint (config.json, *.safetensors, "
                    "tokenizer files) of a ternary model to a GGUF file: BitNet b1.58 "
                    "(BitNetForCausalLM, packed or bf16), 1bitLLM (BitnetForCausalLM), "
                    "Falcon3-1.58bit / Falcon-E / Llama3-8B-1.58 (packed LlamaForCausalLM) "
                    "and TriLM (unpacked LlamaForCausalLM). See docs/models.md.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="the checkpoint directory")
    p.add_argument("-o", "--output", metavar="OUT.gguf", required=True,
                   help="the GGUF file to write")
    p.add_argument("--type", choices=("i2_s", "tq2_0", "tq1_0", "f16"),
                   help="weight type (default: i2_s; tq2_0 for TriLM, whose tensors hold "
                        "several scales)")
    p.add_argument("--pre", metavar="NAME",
                   help="tokenizer.ggml.pre to write instead of the detected one (byte-level "
                        "BPE vocabularies), e.g. llama-bpe")
    p.add_argument("-f", "--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object when done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitnet.convert import convert_checkpoint
    from bitnet.core.gguf import open_gguf

    start = time.perf_counter()
    try:
        out = convert_checkpoint(args.checkpoint, args.output, args.type, force=args.force,
                                 pre=args.pre)
    except user_errors() as e:
        return fail(str(e))
    seconds = time.perf_counter() - start
    with open_gguf(out) as f:
        arch = f.arch
        types = sorted({info.type_name for info in f.tensors.values()})
        n_tensors = len(f.tensors)
    size = out.stat().st_size
    if args.json:
        print(json.dumps({"output": str(out), "arch": arch, "tensors": n_tensors,
                          "types": types, "bytes": size, "seconds": round(seconds, 3)}))
    else:
        print(f"wrote {out}: arch {arch}, {n_tensors} tensors ({', '.join(types)}), "
              f"{size / 1e6:.1f} MB in {seconds:.1f} s")
    return 0
