"""bitnet-metal on a machine without Metal (Linux CI): registration, honest unavailability,
clear refusals, and the shipped MSL sources. Nothing here runs a Metal kernel: no Mac was
available to this work."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import types
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from bitnet.hal import CreateOptions, DeviceInfo, DeviceKind, KernelBackend, Unavailable
from bitnet_metal import descriptor as descriptor_module
from bitnet_metal.descriptor import NEEDS_MACOS_REASON, UNFINISHED_REASON, descriptor
from bitnet_metal.kernels_source import KERNEL_DIR, kernel_names, library_source

PLUGIN = Path(__file__).resolve().parents[1]
EXPECTED_KERNELS = {
    "linear_ternary.metal": {"quantize_per_token_i8", "quantize_q8_k", "linear_i2s", "linear_tq"},
    "rmsnorm.metal": {"rmsnorm"},
    "rope.metal": {"rope"},
    "attention.metal": {"kv_store", "attention", "attention_combine"},
    "gating.metal": {"relu2_mul", "silu_mul"},
    "add.metal": {"add"},
    "embed.metal": {"embed_f16"},
}


def test_entry_point_is_registered():
    found = [e for e in entry_points(group="bitnet.backends") if e.name == "metal"]
    assert [e.value for e in found] == ["bitnet_metal.descriptor:descriptor"]
    assert found[0].load() is descriptor


def test_imports_without_pyobjc():
    code = ("import sys, bitnet_metal.descriptor, bitnet_metal.kernels_source; "
            "print(sorted(m for m in sys.modules if m in ('Metal', 'objc', 'Foundation')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(sys.platform == "darwin", reason="this checks the non-macOS answer")
def test_probe_off_macos_says_why():
    result = descriptor.probe()
    assert isinstance(result, Unavailable)
    assert result.reason == NEEDS_MACOS_REASON
    assert result.reason == ("Metal needs macOS (sys.platform == 'darwin') and "
                             "pyobjc-framework-Metal")
    assert result.remedy


def test_probe_on_macos_without_pyobjc(monkeypatch):
    monkeypatch.setattr(descriptor_module.sys, "platform", "darwin")
    monkeypatch.setitem(sys.modules, "Metal", None)  # import Metal -> ImportError
    result = descriptor.probe()
    assert isinstance(result, Unavailable) and result.reason == NEEDS_MACOS_REASON
    assert "pip install pyobjc-framework-Metal" in result.remedy


def _fake_metal(monkeypatch) -> None:
    dev = types.SimpleNamespace(name=lambda: "Apple M3", hasUnifiedMemory=lambda: True,
                                recommendedMaxWorkingSetSize=lambda: 16 * 2**30,
                                registryID=lambda: 0x100000abc)
    metal = types.ModuleType("Metal")
    metal.MTLCopyAllDevices = lambda: [dev]
    monkeypatch.setattr(descriptor_module.sys, "platform", "darwin")
    monkeypatch.setitem(sys.modules, "Metal", metal)


def test_probe_on_a_mac_still_refuses_the_unfinished_backend(monkeypatch):
    _fake_metal(monkeypatch)
    monkeypatch.delenv("BITNET_METAL_DEV", raising=False)
    result = descriptor.probe()
    assert isinstance(result, Unavailable)
    assert result.reason.startswith(UNFINISHED_REASON) and "1 Metal device" in result.reason
    assert "BITNET_METAL_DEV=1" in result.remedy


def test_dev_switch_lists_devices(monkeypatch):
    _fake_metal(monkeypatch)
    monkeypatch.setenv("BITNET_METAL_DEV", "1")
    (dev,) = descriptor.probe()
    assert dev.spec == "metal:0" and dev.kind is DeviceKind.IGPU
    assert dev.stable_id == "registry:0x100000abc"


def test_create_refuses_clearly():
    dev = DeviceInfo(backend="metal", index=0, name="x", kind=DeviceKind.IGPU)
    if sys.platform == "darwin":
        pytest.skip("checks the refusal off macOS")
    with pytest.raises(RuntimeError, match=r"cannot open metal:0: Metal needs macOS"):
        descriptor.create(dev, CreateOptions())


@pytest.mark.parametrize("filename", sorted(EXPECTED_KERNELS))
def test_metal_sources_have_the_expected_kernels(filename):
    text = (KERNEL_DIR / filename).read_text(encoding="utf-8")
    assert "#include <metal_stdlib>" in text
    assert set(kernel_names(text)) == EXPECTED_KERNELS[filename]
    assert text.count("{") == text.count("}")  # balanced braces: a cheap parse check
    assert text.count("(") == text.count(")")
    assert "WRITTEN, NOT RUN" in text  # every file says it is untested


def test_library_source_holds_every_kernel_once():
    names = kernel_names(library_source())
    assert len(names) == len(set(names))
    assert set(names) == set().union(*EXPECTED_KERNELS.values())


def test_runtime_skeleton_names_every_verb():
    """runtime.py (which imports nothing from pyobjc at module level) defines every
    DeviceRuntime verb; its kernel() refuses, naming itself, the kernels not yet written in the
    KERNELS table's order."""
    from bitnet.hal.device_runtime import DeviceRuntime

    tree = ast.parse((PLUGIN / "bitnet_metal" / "runtime.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MetalRuntime")
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    verbs = {name for name, value in vars(DeviceRuntime).items()
             if callable(value) and not name.startswith("_")}
    assert verbs <= set(methods), verbs - set(methods)
    raises = [n for n in ast.walk(methods["kernel"]) if isinstance(n, ast.Raise)]
    assert "NotImplementedError" in ast.unparse(raises[0])
    assert "bitnet-metal.kernel" in ast.unparse(raises[0])


def test_the_fused_decode_kernels_are_named_and_not_offered():
    """decode_layer's fused kernels are listed for a finisher, and the runtime offers none
    (fused_max_width 0: GpuBackend.prepare_layer then runs every block op by op)."""
    from bitnet.hal.device_runtime import FUSED_KERNELS

    tree = ast.parse((PLUGIN / "bitnet_metal" / "runtime.py").read_text())
    names = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
             if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
             and n.targets[0].id in ("FUSED_TO_WRITE", "IN_TABLE_ORDER")}
    assert set(names["FUSED_TO_WRITE"]) == set(FUSED_KERNELS)
    assert not set(FUSED_KERNELS) & set(names["IN_TABLE_ORDER"])
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MetalRuntime")
    width = next(n for n in cls.body if isinstance(n, ast.AnnAssign | ast.Assign)
                 and "fused_max_width" in ast.unparse(n))
    assert ast.unparse(width).endswith("= 0")


def test_pyobjc_dependency_is_macos_only():
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    pyobjc = [d for d in project["dependencies"] if d.startswith("pyobjc")]
    assert pyobjc and all("sys_platform == 'darwin'" in d for d in pyobjc)


def test_attention_split_is_the_tables():
    """attention.metal's split-K run is the one GpuBackend sizes its grids and scratch by."""
    import re

    from bitnet.hal.device_runtime import ATTENTION_SPLIT

    source = (KERNEL_DIR / "attention.metal").read_text()
    assert re.findall(r"#define ATT_SPLIT (\d+)", source) == [str(ATTENTION_SPLIT)]
