"""bitnet-metal tests (Linux CI: the plugin is unavailable and must say why). The conformance
suite is wired to the real backend and skips with the probe's reason off a Mac (and on a Mac
unless BITNET_METAL_DEV=1)."""

import pytest

from bitnet.testing.conformance import (
    created_backend,
    pytest_collect_file,  # noqa: F401  (adds the suite)
)


@pytest.fixture(scope="session")
def conformance_backend():
    from bitnet_metal.descriptor import descriptor

    yield from created_backend(descriptor)  # skipped with the probe's reason where unavailable
