"""Which kernel table runs: chosen once at create() from the CPU feature probe.

Like ggml's scored CPU variants, the best table whose every required feature is present wins.
``BITNET_CPU_FEATURES`` (read by bitnet.hal.cpu_features) can force a lesser path for tests; a
forced path the real CPU cannot execute is refused, so no instruction the CPU lacks ever runs.
"""

from __future__ import annotations

from bitnet.hal.cpu_features import CpuFeatures, parse_cpuinfo

# best first: (table name, architectures, features it executes)
VARIANTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("avx512", ("x86_64", "amd64"),
     ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")),
    ("avx2", ("x86_64", "amd64"), ("avx2", "fma", "f16c")),
    ("neon", ("aarch64", "arm64"), ("neon", "dotprod")),
    ("generic", (), ()),
)


def variant_for(features: CpuFeatures) -> str:
    """The best kernel table for ``features`` (``generic`` when nothing better fits)."""
    for name, arches, needs in VARIANTS:
        if arches and features.arch not in arches:
            continue
        if features.has(*needs):
            return name
    return "generic"


def required_features(variant: str) -> tuple[str, ...]:
    for name, _, needs in VARIANTS:
        if name == variant:
            return needs
    raise ValueError(f"unknown kernel variant {variant!r}")


def check_executable(variant: str, features: CpuFeatures) -> None:
    """Refuse a forced variant whose instructions the real CPU lacks (it would die of SIGILL)."""
    if not features.forced:
        return
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return  # nothing to check against (non-Linux): the user forced it knowingly
    _, real = parse_cpuinfo(text, features.arch)
    missing = [f for f in required_features(variant) if f not in real]
    if missing:
        raise RuntimeError(
            f"BITNET_CPU_FEATURES selects the {variant} kernels, but this CPU lacks "
            f"{', '.join(missing)}; unset BITNET_CPU_FEATURES or name fewer features")
