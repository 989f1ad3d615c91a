"""Receipts: a JSON record of what a run actually did, for reproducibility and bug reports."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RECEIPT_SCHEMA = "bitnet-receipt/1"


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def plugin_versions() -> dict[str, str]:
    """Versions of bitnet and every installed bitnet-* distribution."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "bitnet" or name.startswith("bitnet-"):
            found[name] = dist.version
    return dict(sorted(found.items()))


def build_receipt(model: Any, stats: Any, seed: int | None) -> dict[str, Any]:
    """Everything needed to tell what ran: file, backend, device, kernels, speed, tokens."""
    dev = model.backend.device
    return {
        "schema": RECEIPT_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "path": str(model.path),
            "sha256": file_sha256(model.path),
            "architecture": model.config.arch,
            "layers": model.config.n_layers,
            "d_model": model.config.d_model,
            "block": model.config.block,
            "activation": model.config.activation,
            "activation_source": model.config.activation_source,
            "formats": sorted({f.value for f in model.requirements.ternary_formats
                               | model.requirements.float_formats}),
        },
        "backend": model.backend.name,
        "device": {"spec": dev.spec, "name": dev.name, "kind": dev.kind.value, "isa": dev.isa,
                   "driver": dev.driver_version, "runtime": dev.runtime_version},
        "backend_info": model.backend.info(),
        "selection": model.selection_summary,
        "versions": plugin_versions(),
        "python": platform.python_version(),
        "kernels": dict(sorted(model.transformer.ops.counts.items())),
        "prompt_tokens": stats.prompt_tokens,
        "generated_tokens": stats.generated_tokens,
        "prompt_tps": round(stats.prompt_tps, 3),
        "decode_tps": round(stats.decode_tps, 3),
        "finish_reason": stats.finish_reason,
        "seed": seed,
        "tokens": list(stats.tokens),
    }


def write_receipt(path: str | os.PathLike[str], receipt: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(receipt, indent=2) + "\n", encoding="utf-8")
