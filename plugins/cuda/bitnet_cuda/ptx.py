"""The precompiled PTX shipped in this package: where it lives, which arch a GPU gets, digests.

PTX is built by ``plugins/cuda/scripts/build_ptx.py`` (nvcc, CUDA 13.0) once per feature level
the kernels need (``TARGET_ARCHS``) and loaded with ``pycuda.driver.module_from_buffer``: the
driver JIT-compiles it for the actual GPU (and caches the result), so users need only the NVIDIA
driver, no CUDA toolkit. Today one level serves every GPU: no kernel uses an instruction newer
than compute_75 (no tensor-core mma, cp.async or native bf16 arithmetic), and nvcc's PTX for
compute_80..90 differed from compute_75's only in register numbering and instruction order, so
shipping five copies bought nothing. A kernel that needs a newer feature adds its level here.
CUDA 13.0's PTX is ISA 9.0, which a driver older than CUDA 13.0 cannot JIT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bitnet.hal.fingerprint import files_digest

KERNEL_DIR = Path(__file__).parent / "kernels"
PTX_DIR = KERNEL_DIR / "ptx"
MANIFEST_PATH = PTX_DIR / "manifest.json"

# compute_XX feature levels; CUDA 13 has nothing below sm_75. Each GPU takes the highest one <=
# its own, which the driver compiles forward.
TARGET_ARCHS = (75,)
# one .cu per op family; the module name is the file stem
KERNEL_MODULES = ("linear_ternary", "linear_float", "embed", "rmsnorm", "rope", "attention",
                  "gating", "add", "inbox", "decode_layer")
MIN_DRIVER_VERSION = 13000  # cuDriverGetVersion() encoding of CUDA 13.0: needed for PTX ISA 9.0


def source_files() -> list[Path]:
    """The kernel sources the PTX is built from (.cu and shared .cuh headers), sorted by name."""
    return sorted([*KERNEL_DIR.glob("*.cu"), *KERNEL_DIR.glob("*.cuh")], key=lambda p: p.name)


def sources_digest() -> str:
    """sha256 over every kernel source's name and bytes: the manifest records the one it was
    built from, so a test notices shipped PTX that no longer matches the sources."""
    return files_digest(source_files(), separator=b"\0")


def ptx_name(module: str, arch: int) -> str:
    return f"{module}.compute_{arch}.ptx"


def ptx_path(module: str, arch: int) -> Path:
    return PTX_DIR / ptx_name(module, arch)


def arch_for(capability: tuple[int, int]) -> int:
    """The PTX target for a GPU of compute capability (major, minor): the highest <= it."""
    cc = capability[0] * 10 + capability[1]
    usable = [a for a in TARGET_ARCHS if a <= cc]
    if not usable:
        raise ValueError(f"compute capability {capability[0]}.{capability[1]} is below sm_75, "
                         "the oldest GPU bitnet-cuda's kernels are built for")
    return max(usable)


def read_ptx(module: str, arch: int) -> bytes:
    """The PTX text of one module, NUL-terminated as cuModuleLoadData wants it."""
    path = ptx_path(module, arch)
    if not path.is_file():
        raise FileNotFoundError(f"bitnet-cuda: missing precompiled kernel {path.name}; reinstall "
                                "bitnet-cuda or run plugins/cuda/scripts/build_ptx.py")
    return path.read_bytes() + b"\0"


def read_manifest() -> dict:
    """What build_ptx.py recorded: nvcc version, source digest, targets, file digests."""
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))


def fingerprint() -> str:
    """A short digest of the shipped PTX (the registry's validation cache key)."""
    h = hashlib.sha256()
    for module in KERNEL_MODULES:
        for arch in TARGET_ARCHS:
            path = ptx_path(module, arch)
            h.update(path.name.encode())
            h.update(path.read_bytes() if path.is_file() else b"missing")
    return h.hexdigest()[:16]
