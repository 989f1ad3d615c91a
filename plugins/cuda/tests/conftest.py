"""bitnet-cuda tests. None needs a GPU (CI has none); on a machine with one the conformance suite
runs on it (it passed on an H100, 2026-11-23: plugins/cuda/README.md). The helpers kernel_model.py (numpy models of the kernels) and fake_cuda.py (a fake PyCUDA) sit
beside them.

The conformance suite (bitnet.testing.conformance) runs on the REAL cuda backend: here, without
a driver, it is skipped with the probe's reason; on a machine with an NVIDIA GPU it runs.
"""

import sys
from pathlib import Path

import pytest

from bitnet.testing.conformance import (
    created_backend,
    pytest_collect_file,  # noqa: F401  (adds the suite)
)

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def conformance_backend():
    from bitnet_cuda.descriptor import descriptor

    yield from created_backend(descriptor)  # skipped with the probe's reason where unavailable
