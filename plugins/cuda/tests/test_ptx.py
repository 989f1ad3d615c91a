"""The shipped PTX: present, current with the .cu sources, assembling with ptxas for every target,
and declaring exactly the parameters the host passes. CI has nvcc/ptxas but no GPU, so this is
what it can check; running the kernels needs a GPU (the conformance suite, where one is)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet_cuda import ptx
from bitnet_cuda.runtime import entry_points

PTX_PARAM = {"u64": "P", "u32": "i", "s32": "i", "f32": "f", "f64": "d"}
MAX_SPILL_BYTES = 64  # a few bytes of spill in the widest GEMM tiles are tolerated, not more
BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_ptx.py"


def _entries(text: str) -> dict[str, str]:
    """`.entry name(.param .u64 a, ...)` -> {name: "P..."} in parameter order."""
    out = {}
    for match in re.finditer(r"\.entry\s+(\w+)\(([^)]*)\)", text):
        types = re.findall(r"\.param\s+\.(\w+)", match.group(2))
        out[match.group(1)] = "".join(PTX_PARAM[t] for t in types)
    return out


def test_manifest_matches_the_sources():
    manifest = ptx.read_manifest()
    assert manifest["sources_sha256"] == ptx.sources_digest(), (
        "kernels/*.cu changed since the PTX was built: run plugins/cuda/scripts/build_ptx.py")
    assert manifest["archs"] == {m: list(ptx.MODULE_ARCHS[m]) for m in ptx.KERNEL_MODULES}
    assert {p.stem for p in ptx.KERNEL_DIR.glob("*.cu")} == set(ptx.KERNEL_MODULES)


def test_every_module_is_shipped_for_each_of_its_levels():
    for module, arch in ptx.targets():
        text = ptx.ptx_path(module, arch).read_text()
        assert f".target sm_{arch}" in text
        assert ptx.read_ptx(module, arch).endswith(b"\0")
    shipped = {p.name for p in ptx.PTX_DIR.glob("*.ptx")}
    assert shipped == {ptx.ptx_name(m, a) for m, a in ptx.targets()}, "stray or missing PTX"


def test_only_the_tensor_core_module_needs_more_than_compute_75():
    """mma.sync (int8 tensor cores) is sm_80+: its module ships for compute_80 alone, and no
    other module uses it (they all serve sm_75 from one compute_75 file)."""
    for module, arch in ptx.targets():
        text = ptx.ptx_path(module, arch).read_text()
        if module == "linear_mma":
            assert arch == 80 and "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32" in text
        else:
            assert arch == ptx.BASE_ARCH and "mma.sync" not in text


def test_host_signatures_match_the_ptx_parameters():
    declared: dict[str, str] = {}
    for module, arch in ptx.targets():
        declared.update(_entries(ptx.ptx_path(module, arch).read_text()))
    host = entry_points()
    assert set(declared) == set(host), "kernels without host signatures or back"
    for name, signature in host.items():
        assert declared[name] == signature, f"{name}: PTX {declared[name]} vs host {signature}"


def test_arch_choice():
    for capability in ((7, 5), (8, 6), (9, 0), (12, 0)):  # the driver JITs forward
        assert ptx.arch_for(capability, "linear_ternary") == 75
    with pytest.raises(ValueError, match="below sm_75"):
        ptx.arch_for((7, 0), "rmsnorm")
    assert not ptx.has_module((7, 5), "linear_mma")
    with pytest.raises(ValueError, match="below sm_80, what linear_mma's instructions need"):
        ptx.arch_for((7, 5), "linear_mma")
    for capability in ((8, 0), (8, 9), (9, 0), (12, 0)):
        assert ptx.has_module(capability, "linear_mma")
        assert ptx.arch_for(capability, "linear_mma") == 80


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas (CUDA toolkit) not on PATH")
@pytest.mark.parametrize("arch", sorted({*ptx.TARGET_ARCHS, 80, 86, 89, 90}))
def test_ptxas_assembles_every_module(arch, capsys):
    """The shipped PTX assembles for every GPU generation it serves (ptxas compiles a lower
    target's PTX forward, as the driver's JIT does)."""
    report = []
    capability = (arch // 10, arch % 10)
    for module in ptx.KERNEL_MODULES:
        if not ptx.has_module(capability, module):
            continue  # linear_mma below sm_80: never loaded there (the runtime offers no tile)
        path = ptx.ptx_path(module, ptx.arch_for(capability, module))
        done = subprocess.run(["ptxas", f"-arch=sm_{arch}", "-v", str(path), "-o", "/dev/null"],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"ptxas sm_{arch} {module}:\n{done.stderr}"
        for name, body in re.findall(r"entry function '(\w+)'.*?\n(.*?Used \d+ registers[^\n]*)",
                                     done.stderr, flags=re.S):
            regs = int(re.search(r"Used (\d+) registers", body).group(1))
            spill = int(re.search(r"(\d+) bytes spill stores", body).group(1))
            report.append(f"sm_{arch} {name}: {regs} registers, {spill} bytes spilled")
            assert regs <= 255
            assert spill <= MAX_SPILL_BYTES, f"{name} spills {spill} bytes on sm_{arch}"
    with capsys.disabled():
        print("\n" + "\n".join(report))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not on PATH")
def test_shipped_ptx_is_what_the_sources_build_to(tmp_path):
    """Every .cu compiles with nvcc -ptx for every target, to exactly the shipped bytes."""
    done = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(BUILD_SCRIPT.parent))
    try:
        import build_ptx
    finally:
        sys.path.remove(str(BUILD_SCRIPT.parent))
    assert build_ptx.stale_files(tmp_path) == [], "stale PTX: run scripts/build_ptx.py"


def test_attention_split_is_the_tables():
    """The kernels' split-K run (attention.cuh's ATT_SPLIT) is the one GpuBackend sizes its
    grids and scratch by (bitnet.hal.device_runtime.ATTENTION_SPLIT)."""
    from bitnet.hal.device_runtime import ATTENTION_SPLIT

    source = (ptx.KERNEL_DIR / "attention.cuh").read_text()
    assert re.findall(r"#define ATT_SPLIT (\d+)", source) == [str(ATTENTION_SPLIT)]
