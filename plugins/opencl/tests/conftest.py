"""Shared fixtures: one OpenCL backend per session (PoCL builds each program once, ~1 s)."""

from __future__ import annotations

import pytest

from bitnet.hal import CreateOptions, Unavailable
from bitnet.testing.conformance import pytest_collect_file  # noqa: F401  (adds the suite)


@pytest.fixture(scope="session")
def opencl_backend():
    from bitnet_opencl.descriptor import descriptor

    devices = descriptor.probe()
    if isinstance(devices, Unavailable):
        pytest.skip(f"no OpenCL device: {devices}")
    backend = descriptor.create(devices[0], CreateOptions())
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def reference_backend():
    from bitnet.backends.reference.descriptor import descriptor

    return descriptor.create(descriptor.probe()[0], CreateOptions())


@pytest.fixture(scope="session")
def conformance_backend(opencl_backend):
    """The conformance suite (bitnet.testing.conformance) runs on this plugin's backend."""
    return opencl_backend
