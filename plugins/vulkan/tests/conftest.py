"""Shared fixtures: one Vulkan backend per session (lavapipe compiles a pipeline in ~0.3 s).

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
def vulkan_backend():
    from bitnet_vulkan.descriptor import descriptor

    yield from created_backend(descriptor)  # skipped with the probe's reason where unavailable


@pytest.fixture(scope="session")
def conformance_backend(vulkan_backend):
    """The conformance suite (bitnet.testing.conformance) runs on this plugin's backend."""
    return vulkan_backend


@pytest.fixture(scope="session")
def conformance_fp64_exact(vulkan_backend) -> bool:
    """rmsnorm / rope run in float64 where the device has shaderFloat64: then bit-exact."""
    return vulkan_backend.runtime.use_fp64
