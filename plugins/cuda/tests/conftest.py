"""bitnet-cuda tests. None needs a GPU (CI has none); on a machine with one the conformance suite
runs on it (it passed on an H100, 2026-11-23, before the port to GpuBackend:
plugins/cuda/README.md). The helpers kernel_model.py (numpy models of the kernels) and
fake_cuda.py (a fake PyCUDA) sit beside them.

The conformance suite (bitnet.testing.conformance) runs on the REAL cuda backend: here, without
a driver, it is skipped with the probe's reason; on a machine with an NVIDIA GPU it runs.
BITNET_CUDA_FAKE_DRIVER=1 runs it on the fake driver instead (host code and numpy kernel
models, graph capture modelled): ``BITNET_CUDA_FAKE_DRIVER=1 pytest tests -m conformance``.
"""

import os
import sys
from pathlib import Path

import pytest

from bitnet.testing.conformance import (
    created_backend,
    pytest_collect_file,  # noqa: F401  (adds the suite)
    reference_backend,  # noqa: F401  (a shared fixture)
)

conformance_extras = ("ops", "model")

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def conformance_backend():
    if os.environ.get("BITNET_CUDA_FAKE_DRIVER") == "1":
        import fake_cuda

        with pytest.MonkeyPatch.context() as patch:
            fake_cuda.install(patch)
            from bitnet_cuda.descriptor import descriptor

            yield from created_backend(descriptor)
        return
    from bitnet_cuda.descriptor import descriptor

    yield from created_backend(descriptor)  # skipped with the probe's reason where unavailable


@pytest.fixture(scope="session")
def conformance_fp64_exact() -> bool:
    """rmsnorm sums squares in double and rope rotates in double by f64 tables: bit-exact."""
    return True


@pytest.fixture
def backend(monkeypatch):
    """A cuda backend over the fake PyCUDA driver (fake_cuda.py), closed after the test."""
    import fake_cuda
    from bitnet.hal import CreateOptions

    fake_cuda.install(monkeypatch)
    from bitnet_cuda.descriptor import descriptor

    (device,) = descriptor.probe()
    cuda = descriptor.create(device, CreateOptions())
    yield cuda
    cuda.close()
