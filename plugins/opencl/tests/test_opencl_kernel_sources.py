"""Every kernel file compiles for a generic GPU target (SPIR) in both integer-dot modes.

CI's PoCL lacks cl_khr_integer_dot_product, so the fast path never builds on the device there;
clang (apt-get install clang-15) compiles it offline with the extension declared, and the test
checks that the packed dot really is the extension's builtin."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources

import pytest
from bitnet_opencl.runtime import BUILD_DEFINES, program_source

CLANG = shutil.which("clang-15") or shutil.which("clang")
FILES = sorted(p.name for p in (resources.files("bitnet_opencl") / "kernels").iterdir()
               if p.name.endswith(".cl") and p.name != "common.cl")
EXTENSIONS = ("+cl_khr_integer_dot_product,+__opencl_c_integer_dot_product_input_4x8bit,"
              "+cl_khr_fp64,+__opencl_c_fp64")
FORMATS = ("f32", "f16", "bf16", "q8_0")  # Q6_K runs in q6_k.cl


def _compile(tmp_path, file: str, defines: list[str]) -> str:
    source = tmp_path / f"{file}.full.cl"
    source.write_text(program_source(file))
    run = subprocess.run(
        [CLANG, "-x", "cl", "-cl-std=CL3.0", "-target", "spir64", "-Xclang",
         "-finclude-default-header", "-Xclang", f"-cl-ext={EXTENSIONS}",
         *[f"-D{d}" for d in (*BUILD_DEFINES, *defines)], "-S", "-emit-llvm", "-o", "-", str(source)],
        capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "warning" not in run.stderr, run.stderr
    return run.stdout


@pytest.mark.skipif(CLANG is None, reason="clang not installed (apt-get install clang-15)")
@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("int_dot", [False, True])
def test_kernel_file_compiles_for_spir(tmp_path, file, int_dot):
    defines = ["USE_INT_DOT", "USE_FP64"] if int_dot else []
    if file == "linear_float.cl":
        for fmt in FORMATS:
            _compile(tmp_path, file, [*defines, f"DECODE=decode_{fmt}"])
        return
    ir = _compile(tmp_path, file, defines)
    if file in ("linear_ternary.cl", "q6_k.cl", "decode_layer.cl"):
        # the extension's dot(char4, char4) builtin, mangled, is what the fast path calls
        assert ("@_Z3dotDv4_cS_(" in ir) == int_dot
