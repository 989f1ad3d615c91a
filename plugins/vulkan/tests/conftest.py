"""Shared fixtures: one Vulkan backend per session (lavapipe compiles a pipeline in ~0.3 s)."""

from __future__ import annotations

import pytest

from bitnet.hal import CreateOptions, Unavailable
from bitnet.testing.conformance import pytest_collect_file  # noqa: F401  (adds the suite)


@pytest.fixture(scope="session")
def vulkan_backend():
    from bitnet_vulkan.descriptor import descriptor

    devices = descriptor.probe()
    if isinstance(devices, Unavailable):
        pytest.skip(f"no Vulkan device: {devices}")
    backend = descriptor.create(devices[0], CreateOptions())
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def reference_backend():
    from bitnet.backends.reference.descriptor import descriptor

    return descriptor.create(descriptor.probe()[0], CreateOptions())


@pytest.fixture(scope="session")
def conformance_backend(vulkan_backend):
    """The conformance suite (bitnet.testing.conformance) runs on this plugin's backend."""
    return vulkan_backend
