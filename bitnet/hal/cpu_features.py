"""CPU feature probe. Reads what the OS reports (/proc/cpuinfo, the aux vector, sysctl) and never
executes an instruction to find out, so it cannot fault on a CPU that lacks one.

``BITNET_CPU_FEATURES`` overrides the result (comma list, e.g. ``avx2,fma,f16c``; ``none`` for
the portable path): tests use it to force a dispatch path, users to work around a broken CPU.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from functools import lru_cache

# The x86 flags we care about, as /proc/cpuinfo spells them.
X86_FLAGS = ("sse3", "ssse3", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx_vnni", "avx512_bf16")
# Arm: /proc/cpuinfo "Features" names. asimd is NEON on aarch64, asimddp the dot-product extension.
ARM_FLAGS = ("neon", "asimd", "asimddp", "fphp", "asimdhp", "i8mm", "sve")


@dataclass(frozen=True)
class CpuFeatures:
    arch: str  # "x86_64", "aarch64", ...
    model: str  # human CPU name
    flags: frozenset[str]  # normalised: x86 names above; Arm: "neon", "dotprod", "fp16", "i8mm"
    cores: int  # logical CPUs this process may use
    forced: bool = False  # True when BITNET_CPU_FEATURES set the flags

    def has(self, *names: str) -> bool:
        return all(n in self.flags for n in names)

    @property
    def isa(self) -> str:
        """A short summary such as "avx2+fma+f16c" or "neon+dotprod"."""
        order = ("avx512_vnni", "avx512f", "avx2", "fma", "f16c", "neon", "dotprod", "fp16")
        shown = [f for f in order if f in self.flags]
        return "+".join(shown) if shown else "generic"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str, arch: str) -> tuple[str, frozenset[str]]:
    """Model name and normalised flags from /proc/cpuinfo text."""
    model = ""
    raw: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            raw.update(value.split())
    if arch in ("aarch64", "arm64", "armv7l", "armv8l"):
        flags = set()
        if raw & {"neon", "asimd"} or arch in ("aarch64", "arm64"):
            flags.add("neon")  # NEON is mandatory on AArch64
        if "asimddp" in raw:
            flags.add("dotprod")
        if raw & {"fphp", "asimdhp"}:
            flags.add("fp16")
        if "i8mm" in raw:
            flags.add("i8mm")
        return model, frozenset(flags)
    return model, frozenset(f for f in raw if f in X86_FLAGS)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def probe() -> CpuFeatures:
    arch = platform.machine().lower()
    forced = os.environ.get("BITNET_CPU_FEATURES")
    model, flags = parse_cpuinfo(_read("/proc/cpuinfo"), arch)
    if not model:
        model = platform.processor() or arch
    if arch == "arm64" and not flags:  # macOS on Apple silicon: NEON and dotprod always present
        flags = frozenset({"neon", "dotprod", "fp16"})
    if forced is not None:
        names = [f.strip().lower() for f in re.split(r"[,+ ]", forced) if f.strip()]
        flags = frozenset(n for n in names if n != "none")
    return CpuFeatures(arch=arch, model=model, flags=flags, cores=_cores(), forced=forced is not None)
