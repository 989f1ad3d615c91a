"""The precompiled PTX shipped in this package: where it lives, which arch a GPU gets, digests.

PTX is built by ``plugins/cuda/scripts/build_ptx.py`` (nvcc, CUDA 13.0) once per module and
feature level that module needs (``MODULE_ARCHS``) and loaded with
``pycuda.driver.module_from_buffer``: the driver JIT-compiles it for the actual GPU (and caches
the result), so users need only the NVIDIA driver, no CUDA toolkit. Every module but one is
built for compute_75 only and serves every GPU: those kernels use no instruction newer than
compute_75, and nvcc's PTX for compute_80..90 differed from compute_75's only in register
numbering and instruction order, so more copies would buy nothing. ``linear_mma`` (the prompt
GEMMs on int8 tensor cores, ``mma.sync`` m16n8k32) needs compute_80 and ships for it alone; a
GPU below sm_80 never loads it (the runtime offers its tiles only from sm_80 on). Each GPU
takes, per module, the highest level not above its compute capability. CUDA 13.0's PTX is ISA
9.0, which a driver older than CUDA 13.0 cannot JIT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bitnet.hal.fingerprint import files_digest

KERNEL_DIR = Path(__file__).parent / "kernels"
PTX_DIR = KERNEL_DIR / "ptx"
MANIFEST_PATH = PTX_DIR / "manifest.json"

# one .cu per op family; the module name is the file stem
KERNEL_MODULES = ("linear_ternary", "linear_float", "embed", "rmsnorm", "rope", "attention",
                  "gating", "add", "inbox", "linear_mma", "decode_layer")
BASE_ARCH = 75  # CUDA 13 has nothing below sm_75
# compute_XX feature levels of each module: what its instructions need (linear_mma: mma.sync
# m16n8k32 s8, sm_80+). A GPU takes the highest level <= its own; the driver compiles forward.
MODULE_ARCHS: dict[str, tuple[int, ...]] = {
    **{module: (BASE_ARCH,) for module in KERNEL_MODULES},
    "linear_mma": (80,),
}
TARGET_ARCHS = tuple(sorted({a for archs in MODULE_ARCHS.values() for a in archs}))
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


def targets() -> list[tuple[str, int]]:
    """Every (module, arch) PTX file that ships."""
    return [(module, arch) for module in KERNEL_MODULES for arch in MODULE_ARCHS[module]]


def has_module(capability: tuple[int, int], module: str) -> bool:
    """Whether a GPU of compute capability (major, minor) can load the module's PTX."""
    return min(MODULE_ARCHS[module]) <= capability[0] * 10 + capability[1]


def arch_for(capability: tuple[int, int], module: str) -> int:
    """The module's PTX target for a GPU of compute capability (major, minor): the highest of
    its levels <= it."""
    cc = capability[0] * 10 + capability[1]
    usable = [a for a in MODULE_ARCHS[module] if a <= cc]
    if not usable:
        lowest = min(MODULE_ARCHS[module])
        what = ("the oldest GPU bitnet-cuda's kernels are built for" if lowest == BASE_ARCH
                else f"what {module}'s instructions need")
        raise ValueError(f"compute capability {capability[0]}.{capability[1]} is below "
                         f"sm_{lowest}, {what}")
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
    for module, arch in targets():
        path = ptx_path(module, arch)
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.is_file() else b"missing")
    return h.hexdigest()[:16]
