"""Shared fixtures: one OpenCL backend per session (PoCL builds each program once, ~1 s).

The conformance suite (bitnet.testing.conformance) runs on it, with its op checks against the
reference and its whole-model checks against the shared fixtures (``conformance_extras``).
"""

from __future__ import annotations

import pytest

from bitnet.testing.conformance import (
    created_backend,
    pytest_collect_file,  # noqa: F401  (adds the suite)
    reference_backend,  # noqa: F401  (a shared fixture)
)

conformance_extras = ("ops", "model")


@pytest.fixture(scope="session")
def opencl_backend():
    from bitnet_opencl.descriptor import descriptor

    yield from created_backend(descriptor)  # skipped with the probe's reason where unavailable


@pytest.fixture(scope="session")
def conformance_backend(opencl_backend):
    """The conformance suite (bitnet.testing.conformance) runs on this plugin's backend."""
    return opencl_backend


@pytest.fixture(scope="session")
def conformance_fp64_exact(opencl_backend) -> bool:
    """rmsnorm / rope run in float64 where the device has cl_khr_fp64: then bit-exact."""
    return opencl_backend.runtime.limits.fp64
