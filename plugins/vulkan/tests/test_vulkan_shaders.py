"""The shipped SPIR-V is current: built from today's sources, and every shader the runtime
uses is there. scripts/build_shaders.py rebuilds them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from importlib import resources
from pathlib import Path

import pytest
from bitnet_vulkan.runtime import SHADERS

PLUGIN = Path(__file__).resolve().parents[1]


def _build_script():
    spec = importlib.util.spec_from_file_location("build_shaders",
                                                  PLUGIN / "scripts" / "build_shaders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_spirv_is_stale():
    stale = _build_script().stale_shaders()
    assert stale == [], f"rebuild with plugins/vulkan/scripts/build_shaders.py: {stale}"


def test_every_runtime_shader_ships_as_package_data():
    shaders = resources.files("bitnet_vulkan") / "shaders"
    manifest = json.loads((shaders / "manifest.json").read_text())
    for name in SHADERS:
        spv = (shaders / f"{name}.spv").read_bytes()
        assert spv[:4] == b"\x03\x02\x23\x07", f"{name}.spv is not SPIR-V"
        assert manifest[name]["spv_sha256"] == hashlib.sha256(spv).hexdigest()
    assert set(manifest) == set(SHADERS)


def test_int_dot_variants_carry_opsdot():
    shaders = resources.files("bitnet_vulkan") / "shaders"
    for name in ("linear_i2s", "linear_tq", "linear_q6k"):
        # OpSDot is opcode 4450 (0x1162); an instruction word is (word count << 16) | opcode,
        # and OpSDot with a packed-format operand has 6 words
        opsdot = (6 << 16 | 4450).to_bytes(4, "little")
        assert opsdot in (shaders / f"{name}_idot.spv").read_bytes()
        assert opsdot not in (shaders / f"{name}.spv").read_bytes()


@pytest.mark.slow
def test_recompiling_gives_the_shipped_bytes(tmp_path):
    missing = [t for t in ("glslc", "spirv-dis", "spirv-as", "spirv-opt", "spirv-val")
               if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{missing} not installed (apt-get install glslc spirv-tools)")
    script = _build_script()
    for name, (source, defines) in script.shader_builds().items():
        output = tmp_path / f"{name}.spv"
        script.compile_shader(source, defines, output)
        shipped = (script.SHADER_DIR / f"{name}.spv").read_bytes()
        assert output.read_bytes() == shipped, f"{name}.spv differs from a fresh glslc build"


def test_shaders_take_the_kernel_table_order():
    """Each KERNELS entry's shader binds its buffers and takes its scalars as push constants in
    the table's order: one argument order for every API (bitnet.hal.device_runtime)."""
    from bitnet.hal.device_runtime import KERNELS
    from bitnet_vulkan.runtime import FP64_SHADERS, INT_DOT_SHADERS, SHADER_NAMES

    for name, sig in KERNELS.items():
        shader = SHADER_NAMES.get(name, name)
        fp64, idot = shader in FP64_SHADERS, shader in INT_DOT_SHADERS
        variants = [shader] + ([shader + "_f64"] if fp64 else []) \
            + ([shader + "_idot"] if idot else []) + ([shader + "_f64_idot"] if fp64 and idot
                                                       else [])
        for variant in variants:
            assert SHADERS[variant].bindings == len(sig.buffers), variant
            assert SHADERS[variant].push_format == "<" + sig.scalars, variant


def test_attention_split_is_the_tables():
    """The shaders' split-K run (common.glsl's ATT_SPLIT) is the one GpuBackend sizes its
    grids and scratch by (bitnet.hal.device_runtime.ATTENTION_SPLIT)."""
    import re

    from bitnet.hal.device_runtime import ATTENTION_SPLIT

    source = (resources.files("bitnet_vulkan") / "shaders" / "common.glsl").read_text()
    assert re.findall(r"#define ATT_SPLIT (\d+)u", source) == [str(ATTENTION_SPLIT)]
