"""Build the CPU emulator library: every bitnet-cuda kernel compiled as host C++ (g++ -std=c++20)
against cuda_emu.h, with one C launcher per entry point:

    void emu_<kernel>(const unsigned grid[3], const unsigned block[3], void** args)

where args[i] points to the i-th argument (a device pointer, int, float or double, in the .cu
parameter order of bitnet_cuda.runtime.entry_points(): the KERNELS table's). Used by fake_cuda.py's "emulator" mode.
The library also holds ``mma_probe.cpp``'s ``emu_mma_probe``: one warp through kernels/mma.cuh
with fragments given lane by lane (the fragment-layout test).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bitnet_cuda import ptx
from bitnet_cuda.runtime import entry_points

HERE = Path(__file__).parent
C_TYPES = {"i": "int", "f": "float", "d": "double"}
FLAGS = ("-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-pthread", "-w")
PROBE = "mma_probe"  # tests/emulator/mma_probe.cpp


def module_entries(module: str) -> list[str]:
    text = ptx.ptx_path(module, ptx.MODULE_ARCHS[module][0]).read_text()
    return re.findall(r"\.entry\s+(\w+)\(", text)


def launcher(kernel: str) -> str:
    args = []
    for i, code in enumerate(entry_points()[kernel]):
        if code == "P":
            args.append(f"ArgPtr{{*static_cast<void**>(a[{i}])}}")
        else:
            args.append(f"*static_cast<{C_TYPES[code]}*>(a[{i}])")
    call = f"{kernel}({', '.join(args)});"
    return (f'extern "C" void emu_{kernel}(const unsigned* g, const unsigned* b, void** a) {{\n'
            f"    emu::launch({{g[0], g[1], g[2]}}, {{b[0], b[1], b[2]}}, [&]() {{ {call} }});\n"
            "}\n")


def translation_unit(module: str) -> str:
    parts = ['#include "cuda_emu.h"', f'#include "{ptx.KERNEL_DIR / (module + ".cu")}"',
             "struct ArgPtr {", "    void* p;",
             "    template <class T> operator T*() const { return static_cast<T*>(p); }", "};"]
    parts += [launcher(k) for k in module_entries(module)]
    return "\n".join(parts) + "\n"


def build(out_dir: Path) -> Path:
    """Compile every module; returns the shared library's path. Needs g++ 12+ (C++20)."""
    compiler = shutil.which("g++")
    if compiler is None:
        raise RuntimeError("g++ not found")
    out_dir.mkdir(parents=True, exist_ok=True)

    def compile_module(module: str) -> Path:
        if module == PROBE:
            source = HERE / f"{PROBE}.cpp"
        else:
            source = out_dir / f"{module}.emu.cpp"
            source.write_text(translation_unit(module))
        obj = out_dir / f"{module}.emu.o"
        cmd = [compiler, *FLAGS, f"-I{HERE}", f"-I{ptx.KERNEL_DIR}", "-c", str(source), "-o",
               str(obj)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"emulator build of {module} failed:\n{done.stderr[-4000:]}")
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objects = list(pool.map(compile_module, (*ptx.KERNEL_MODULES, PROBE)))
    library = out_dir / "libbitnet_cuda_emu.so"
    cmd = [compiler, "-shared", "-pthread", *map(str, objects), "-o", str(library)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return library
