#!/usr/bin/env python3
"""Compile bitnet_vulkan/shaders/*.comp to SPIR-V with glslc and record what they were built from.

Usage: python plugins/vulkan/scripts/build_shaders.py [--check]

Writes <name>.spv beside the sources and manifest.json mapping each .spv to its source, defines
and the sha256 of the source text plus every shared .glsl include. --check rebuilds nothing and
exits 1 if a .spv is missing or stale (what tests/test_vulkan_shaders.py asserts). Building needs
`glslc` and `spirv-tools` (Debian: apt-get install glslc spirv-tools); the plugin ships the .spv.

The *_idot variants reach VK_KHR_shader_integer_dot_product, which no GLSL compiler here accepts:
they are built unoptimized, the body of `dot4_packed(uint, uint)` is replaced by OpSDot on the
disassembly, then spirv-as, spirv-opt -O and spirv-val finish them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHADER_DIR = Path(__file__).resolve().parents[1] / "bitnet_vulkan" / "shaders"
MANIFEST = SHADER_DIR / "manifest.json"
TARGET_ENV = "vulkan1.1"

# Extra builds of one source with preprocessor defines (bitnet_vulkan.runtime picks them by the
# same suffixes): *_f64 with USE_FP64 (double sums and angles where the device has
# shaderFloat64), *_idot with USE_INT_DOT (OpSDot), *_f64_idot with both.
FP64_SOURCES = ("rmsnorm", "rope", "rmsnorm_quantize_i8", "rmsnorm_quantize_q8_k",
                "norm_qkv_i2s", "norm_qkv_tq", "norm_gate_up_i2s", "norm_gate_up_tq",
                "rope_attention")
INT_DOT_SOURCES = ("linear_i2s", "linear_tq", "linear_q6k", "norm_qkv_i2s", "norm_qkv_tq",
                   "norm_gate_up_i2s", "norm_gate_up_tq", "linear_add_i2s", "linear_add_tq")


def _variants() -> dict[str, tuple[str, tuple[str, ...]]]:
    variants = {}
    for stem in FP64_SOURCES:
        variants[f"{stem}_f64"] = (f"{stem}.comp", ("USE_FP64",))
    for stem in INT_DOT_SOURCES:
        variants[f"{stem}_idot"] = (f"{stem}.comp", ("USE_INT_DOT",))
        if stem in FP64_SOURCES:
            variants[f"{stem}_f64_idot"] = (f"{stem}.comp", ("USE_FP64", "USE_INT_DOT"))
    return variants


VARIANTS = _variants()
INT_DOT = "USE_INT_DOT"  # marks the variants whose dot4_packed becomes OpSDot
PATCH_RECIPE = "OpSDotKHR PackedVectorFormat4x8BitKHR v1"  # part of the staleness hash


def shader_builds() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every .spv to build: one per .comp, plus VARIANTS."""
    builds = {path.stem: (path.name, ()) for path in sorted(SHADER_DIR.glob("*.comp"))}
    builds.update(VARIANTS)
    return builds


def source_hash(source: str, defines: tuple[str, ...]) -> str:
    """sha256 of the source, the shared includes and the defines (what the .spv depends on)."""
    digest = hashlib.sha256()
    for path in [SHADER_DIR / source, *sorted(SHADER_DIR.glob("*.glsl"))]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(" ".join(defines).encode())
    digest.update(TARGET_ENV.encode())
    if INT_DOT in defines:
        digest.update(PATCH_RECIPE.encode())
    return digest.hexdigest()


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found: apt-get install {package}")
    return path


def glslc_command(source: str, defines: tuple[str, ...], output: Path,
                  optimize: bool = True) -> list[str]:
    flags = [f"-D{d}" for d in defines]
    return [_tool("glslc", "glslc"), "-O" if optimize else "-O0", f"--target-env={TARGET_ENV}",
            "-I", str(SHADER_DIR), *flags, "-o", str(output), str(SHADER_DIR / source)]


def patch_int_dot(assembly: str) -> str:
    """Replace the body of dot4_packed(uint, uint) by one OpSDotKHR on packed 4 x int8."""
    start = assembly.index("%dot4_packed_u1_u1_ = OpFunction ")
    end = assembly.index("OpFunctionEnd", start)
    params = re.findall(r"(%\w+) = OpFunctionParameter %_ptr_Function_uint", assembly[start:end])
    if len(params) != 2:
        raise SystemExit("dot4_packed(uint, uint) not found as expected in the disassembly")
    label = assembly.index("OpLabel", start)
    body_start = assembly.index("\n", label) + 1
    body = (f"%idot_a = OpLoad %uint {params[0]}\n%idot_b = OpLoad %uint {params[1]}\n"
            "%idot_r = OpSDotKHR %int %idot_a %idot_b PackedVectorFormat4x8BitKHR\n"
            "OpReturnValue %idot_r\n")
    capabilities = ("OpCapability Shader\nOpCapability DotProductKHR\n"
                    "OpCapability DotProductInput4x8BitPackedKHR\n")
    patched = assembly[:body_start] + body + assembly[end:]
    # debug names of the removed body's ids would dangle; names are not needed to assemble
    lines = [line for line in patched.replace("OpCapability Shader\n", capabilities, 1)
             .splitlines(keepends=True) if not line.lstrip().startswith("OpName ")]
    # the extension follows every capability (a Float64 one too: SPIR-V's layout order)
    last = max(i for i, line in enumerate(lines) if line.lstrip().startswith("OpCapability "))
    lines.insert(last + 1, 'OpExtension "SPV_KHR_integer_dot_product"\n')
    return "".join(lines)


def compile_shader(source: str, defines: tuple[str, ...], output: Path) -> None:
    """glslc, plus the OpSDot patch for the int-dot variants."""
    if INT_DOT not in defines:
        subprocess.run(glslc_command(source, defines, output), check=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.spv"
        text = Path(tmp) / "patched.spvasm"
        assembled = Path(tmp) / "patched.spv"
        subprocess.run(glslc_command(source, defines, raw, optimize=False), check=True)
        dis = subprocess.run([_tool("spirv-dis", "spirv-tools"), str(raw)], check=True,
                             capture_output=True, text=True)
        text.write_text(patch_int_dot(dis.stdout))
        subprocess.run([_tool("spirv-as", "spirv-tools"), "--target-env", TARGET_ENV,
                        str(text), "-o", str(assembled)], check=True)
        subprocess.run([_tool("spirv-opt", "spirv-tools"), "-O", str(assembled), "-o",
                        str(output)], check=True)
        subprocess.run([_tool("spirv-val", "spirv-tools"), "--target-env", TARGET_ENV,
                        str(output)], check=True)


def stale_shaders() -> list[str]:
    """Names whose .spv is missing or whose recorded source hash differs from the sources."""
    recorded = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    stale = []
    for name, (source, defines) in shader_builds().items():
        entry = recorded.get(name)
        spv = SHADER_DIR / f"{name}.spv"
        if entry is None or not spv.exists():
            stale.append(name)
            continue
        source_changed = entry["source_sha256"] != source_hash(source, defines)
        spv_changed = entry["spv_sha256"] != hashlib.sha256(spv.read_bytes()).hexdigest()
        if source_changed or spv_changed:
            stale.append(name)
    return stale


def build() -> None:
    manifest = {}
    for name, (source, defines) in shader_builds().items():
        output = SHADER_DIR / f"{name}.spv"
        compile_shader(source, defines, output)
        manifest[name] = {
            "source": source,
            "defines": list(defines),
            "source_sha256": source_hash(source, defines),
            "spv_sha256": hashlib.sha256(output.read_bytes()).hexdigest(),
        }
        print(f"built {output.name}")
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale shaders")
    args = parser.parse_args()
    if args.check:
        stale = stale_shaders()
        if stale:
            print("stale SPIR-V (run scripts/build_shaders.py): " + ", ".join(stale))
            return 1
        print("all SPIR-V is current")
        return 0
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
