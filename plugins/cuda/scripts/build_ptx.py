#!/usr/bin/env python3
"""Build the PTX that bitnet-cuda ships: every kernels/*.cu for each of its ptx.MODULE_ARCHS.

    python plugins/cuda/scripts/build_ptx.py              # rewrite bitnet_cuda/kernels/ptx/
    python plugins/cuda/scripts/build_ptx.py --out DIR    # build elsewhere (tests compare)
    python plugins/cuda/scripts/build_ptx.py --check      # exit 1 if the shipped PTX is stale

Needs nvcc (CUDA 13.0; NVCC=/path/to/nvcc overrides). Users never run this: the PTX is package
data, JIT-compiled by the NVIDIA driver at first use.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PLUGIN_ROOT))

from bitnet_cuda import ptx  # noqa: E402  (after the path tweak, so it works uninstalled)

NVCC_FLAGS = ("-ptx", "-O3", "-std=c++17")


def nvcc_path() -> str:
    return os.environ.get("NVCC", "nvcc")


def nvcc_version(nvcc: str) -> str:
    """"13.0.88" from `nvcc --version`."""
    text = subprocess.run([nvcc, "--version"], check=True, capture_output=True, text=True).stdout
    found = re.search(r"V(\d+\.\d+\.\d+)", text)
    return found.group(1) if found else text.strip().splitlines()[-1]


def compile_one(nvcc: str, module: str, arch: int, out_dir: Path) -> Path:
    source = ptx.KERNEL_DIR / f"{module}.cu"
    target = out_dir / ptx.ptx_name(module, arch)
    cmd = [nvcc, *NVCC_FLAGS, f"-arch=compute_{arch}", f"-I{ptx.KERNEL_DIR}", str(source),
           "-o", str(target)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed for {module} compute_{arch}:\n{done.stderr}")
    return target


def build(out_dir: Path, jobs: int = 2) -> dict:
    """Compile every module for every arch into out_dir and write manifest.json there."""
    nvcc = nvcc_path()
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = ptx.targets()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda t: compile_one(nvcc, t[0], t[1], out_dir), tasks))
    manifest = {
        "nvcc": nvcc_version(nvcc),
        "flags": list(NVCC_FLAGS),
        "archs": {module: list(ptx.MODULE_ARCHS[module]) for module in ptx.KERNEL_MODULES},
        "sources_sha256": ptx.sources_digest(),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    (out_dir / "manifest.json").write_text(text, encoding="utf-8")
    return manifest


def stale_files(built: Path) -> list[str]:
    """Names whose freshly built bytes differ from the shipped ones."""
    names = [ptx.ptx_name(m, a) for m, a in ptx.targets()]
    names.append("manifest.json")
    return [n for n in names
            if not (ptx.PTX_DIR / n).is_file()
            or not filecmp.cmp(built / n, ptx.PTX_DIR / n, shallow=False)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--check", action="store_true", help="fail if the shipped PTX is stale")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), args.jobs)
            stale = stale_files(Path(tmp))
        if stale:
            print("stale PTX (run scripts/build_ptx.py):", ", ".join(stale))
            return 1
        print("shipped PTX is current")
        return 0
    out = args.out or ptx.PTX_DIR
    manifest = build(out, args.jobs)
    print(f"built {len(ptx.targets())} PTX files ({len(ptx.KERNEL_MODULES)} modules) with nvcc "
          f"{manifest['nvcc']} into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
