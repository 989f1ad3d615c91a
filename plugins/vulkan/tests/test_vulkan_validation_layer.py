"""The Vulkan op tests (this plugin's own and the conformance suite's op checks,
``conftest.py::ops``) once more under the Khronos validation layer: any message fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

LAYER_JSON = Path("/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json")


@pytest.mark.slow
def test_op_tests_raise_no_validation_error(tmp_path):
    if not LAYER_JSON.exists() and "VK_LAYER_PATH" not in os.environ:
        pytest.skip("validation layer not installed (apt-get install vulkan-validationlayers)")
    here = Path(__file__).resolve().parent
    env = dict(os.environ, VK_INSTANCE_LAYERS="VK_LAYER_KHRONOS_validation")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         str(here / "test_vulkan_ops.py"), f"{here / 'conftest.py'}::ops",
         "-k", "not validation_layer"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    # every test ran (this plugin's and the conformance op checks), none skipped
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) >= 32 and "skipped" not in output, output[-4000:]
    assert "Validation Error" not in output, output[-4000:]
    assert "VUID-" not in output, output[-4000:]
