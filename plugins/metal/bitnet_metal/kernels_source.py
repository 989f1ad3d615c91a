"""The Metal Shading Language sources shipped in ``kernels/*.metal`` (plain text; no pyobjc)."""

from __future__ import annotations

import re
from pathlib import Path

from bitnet.hal.fingerprint import files_digest

KERNEL_DIR = Path(__file__).parent / "kernels"


def source_files() -> list[Path]:
    return sorted(KERNEL_DIR.glob("*.metal"))


def library_source() -> str:
    """All kernels as one source string, compiled at once into one MTLLibrary."""
    return "\n".join(p.read_text(encoding="utf-8") for p in source_files())


def kernel_names(text: str) -> list[str]:
    """The ``kernel void <name>(`` entry points of an MSL source."""
    return re.findall(r"^kernel\s+void\s+(\w+)\s*\(", text, flags=re.M)


def sources_digest() -> str:
    """sha256 over the sources' names and bytes (the descriptor's fingerprint)."""
    return files_digest(source_files())
