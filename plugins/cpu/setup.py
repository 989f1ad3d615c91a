"""Build of bitnet_cpu._kernels: one extension holding every ISA path.

Portable C files are ordinary extension sources. Each ISA file is compiled on its own with its
own -m flags (so AVX-512 code can live in the same wheel as the generic path without the
compiler ever using AVX-512 elsewhere); which path runs is chosen at create() from the CPU probe.
"""

from __future__ import annotations

import platform
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = Path("bitnet_cpu") / "kernels"
# -ffp-contract=off: no silent FMA contraction, so the f32 epilogues stay bit-exact per the
# contract; FMA is used only where a kernel asks for it with an intrinsic.
COMMON = ["-O3", "-std=gnu11", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
PORTABLE = ["half.c", "act_quantize.c", "repack.c", "linear.c", "ops.c", "layer.c", "dispatch.c",
            "linear_ternary_generic.c", "linear_float_generic.c"]

AVX2 = ["-mavx2", "-mfma", "-mf16c"]
AVX512 = AVX2 + ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]
NEON_DOTPROD = ["-march=armv8.2-a+dotprod"]


def isa_sources() -> dict[str, list[str]]:
    """ISA file -> its compile flags, for the machine we build on."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return {"linear_ternary_avx2.c": AVX2, "linear_float_avx2.c": AVX2,
                "linear_ternary_avx512.c": AVX512, "linear_float_avx512.c": AVX512}
    if machine in ("aarch64", "arm64"):
        return {"linear_ternary_neon.c": NEON_DOTPROD}
    return {}


class IsaBuildExt(build_ext):
    """build_ext that first compiles each ISA file with its own flags and links the objects."""

    def build_extension(self, ext: Extension) -> None:
        objects = []
        for name, flags in isa_sources().items():
            objects += self.compiler.compile(
                [str(KERNELS / name)], output_dir=self.build_temp,
                include_dirs=[str(KERNELS)], extra_postargs=COMMON + flags)
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


extension = Extension(
    "bitnet_cpu._kernels",
    sources=["bitnet_cpu/_kernels.pyx"] + [str(KERNELS / f) for f in PORTABLE],
    include_dirs=[str(KERNELS)],
    # every kernel file: an edit to an ISA file or the header rebuilds the extension
    depends=[str(p) for p in sorted(KERNELS.glob("*.[ch]"))],
    extra_compile_args=COMMON,
    extra_link_args=["-fopenmp"],
)

setup(
    ext_modules=cythonize([extension], language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": IsaBuildExt},
)
