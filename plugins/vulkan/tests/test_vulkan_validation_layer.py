"""The Vulkan op tests (this plugin's own and the conformance suite's op checks,
``conftest.py::ops``) and the fused decode-layer shaders (the validation cases
``decode_layer[...]``) once more under the Khronos validation layer: any message fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

LAYER_JSON = Path("/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json")


def _under_layer(tmp_path: Path, args: list[str]) -> str:
    """pytest args in a subprocess with the validation layer on; its output, checked clean."""
    env = dict(os.environ, VK_INSTANCE_LAYERS="VK_LAYER_KHRONOS_validation")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                          *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "Validation Error" not in output, output[-4000:]
    assert "VUID-" not in output, output[-4000:]
    return output


def _passed(output: str) -> int:
    passed = re.search(r"(\d+) passed", output)
    return int(passed.group(1)) if passed else 0


@pytest.mark.slow
def test_op_tests_raise_no_validation_error(tmp_path):
    if not LAYER_JSON.exists() and "VK_LAYER_PATH" not in os.environ:
        pytest.skip("validation layer not installed (apt-get install vulkan-validationlayers)")
    here = Path(__file__).resolve().parent
    output = _under_layer(tmp_path, [str(here / "test_vulkan_ops.py"),
                                     f"{here / 'conftest.py'}::ops", "-k",
                                     "not validation_layer"])
    # every test ran (this plugin's and the conformance op checks), none skipped
    assert _passed(output) >= 32 and "skipped" not in output, output[-4000:]
    # decode_layer's fused shaders (9 storage buffers, the prologue's shared memory)
    output = _under_layer(tmp_path, [str(here / "conftest.py"), "-k", "decode_layer"])
    assert _passed(output) >= 5 and "skipped" not in output, output[-4000:]
