"""`bitnet pull REPO [FILE]`: fetch a GGUF file or a checkpoint from the Hugging Face Hub."""

from __future__ import annotations

import argparse
import json

from bitnet.cli.common import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pull", help="download a model from the Hugging Face Hub into its cache",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download a GGUF file through huggingface_hub and print its local path.\n"
                    "From a repo without a GGUF file: its checkpoint (config.json, *.safetensors,\n"
                    "tokenizer files). `bitnet run -m hf://REPO/FILE` fetches the same way.",
        epilog="environment: HF_TOKEN (gated or private repos), HF_HUB_OFFLINE=1 (cache only),\n"
               "HF_ENDPOINT (a mirror), HF_HOME / HF_HUB_CACHE (where the cache lives).\n"
               "A cached file is not fetched again; a dropped connection resumes where it "
               "stopped.")
    p.add_argument("repo", metavar="REPO",
                   help="OWNER/NAME, or hf://OWNER/NAME[@REVISION][/FILE]")
    p.add_argument("file", metavar="FILE", nargs="?",
                   help="file in the repo (default: its only GGUF file, else its checkpoint)")
    p.add_argument("--revision", metavar="REV", help="branch, tag or commit (default: main)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (repo, revision, kind, path, files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitnet.hub import HubError, pull

    try:
        pulled = pull(args.repo, args.file, revision=args.revision,
                      progress=False if args.quiet else None)
    except HubError as e:
        return fail(str(e))
    if args.json:
        print(json.dumps({"repo": pulled.repo, "revision": pulled.revision, "kind": pulled.kind,
                          "path": str(pulled.path), "files": list(pulled.files)}))
    else:
        print(pulled.path)
    return 0
