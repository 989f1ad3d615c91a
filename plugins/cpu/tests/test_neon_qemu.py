"""The NEON (dotprod) kernels, executed: cross-compiled for aarch64 with Debian's
gcc-aarch64-linux-gnu and run under qemu-aarch64 against the generic C kernels."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
KERNELS = HERE.parent / "bitnet_cpu" / "kernels"
CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SOURCES = ["half.c", "linear_float_generic.c", "linear_ternary_generic.c",
           "linear_ternary_neon.c"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(CC) is None or shutil.which(QEMU) is None,
                    reason=f"needs {CC} and {QEMU} (apt-get install gcc-aarch64-linux-gnu "
                           "libc6-dev-arm64-cross qemu-user)")
def test_neon_kernels_match_generic_under_qemu(tmp_path):
    exe = tmp_path / "neon_check"
    cmd = [CC, "-O2", "-std=gnu11", "-ffp-contract=off", "-march=armv8.2-a+dotprod", "-static",
           f"-I{KERNELS}", str(HERE / "neon" / "neon_check.c"),
           *[str(KERNELS / s) for s in SOURCES], "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    # qemu's "max" CPU model includes the dot-product extension
    run = subprocess.run([QEMU, "-cpu", "max", str(exe)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ALL OK" in run.stdout
    assert run.stdout.count("ok ternary_tile") >= 60
