"""The whole conformance suite (every op against the reference, the registry's validation
cases, whole fixture models, replayed decode steps == eager steps) through GpuBackend and the
real CudaRuntime on the fake driver, in a pytest of its own: the suite's session fixture then
creates its backend on the fake PyCUDA (conftest.py, BITNET_CUDA_FAKE_DRIVER=1). Kernels are
numpy models here; the .cu sources themselves run in test_kernels_emulated.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_conformance_suite_passes_on_the_fake_driver(tmp_path):
    env = {**os.environ, "BITNET_CUDA_FAKE_DRIVER": "1", "BITNET_CACHE_DIR": str(tmp_path)}
    conftest = Path(__file__).with_name("conftest.py")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(conftest)], cwd=conftest.parent.parent, env=env,
                          capture_output=True, text=True, timeout=900)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 60, summary  # ran, not skipped
